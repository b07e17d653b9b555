"""experiments/lean_checkout.sh: the code-only branch a GPU call carries (at most 64 MiB of tree)."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CARRY_LIMIT = 64 << 20


def git(cwd, *args) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_lean_checkout_leaves_the_code_and_names_the_real_commit(tmp_path):
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(ROOT), str(clone))
    git(clone, "config", "user.email", "t@t"), git(clone, "config", "user.name", "t")
    real = git(clone, "rev-parse", "HEAD").strip()
    out = subprocess.run(["bash", "experiments/lean_checkout.sh"], cwd=clone, check=True,
                         capture_output=True, text=True).stdout
    assert f"GIT_COMMIT={real}" in out
    assert git(clone, "rev-parse", "--abbrev-ref", "HEAD").strip() == "lean"
    assert git(clone, "rev-parse", "HEAD~1").strip() == real
    tracked = git(clone, "ls-files").split()
    assert not [f for f in tracked if f.startswith("runs/")]
    assert "main.py" in tracked and "icl/landscape.py" in tracked and "plots/figures.py" in tracked
    assert sum((clone / f).stat().st_size for f in tracked) < CARRY_LIMIT
    assert not (clone / "runs").exists()  # nothing left behind untracked, which would travel too
    git(clone, "checkout", "-q", real)
    assert (clone / "runs" / "README.md").exists()


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_lean_checkout_keeps_the_paths_it_is_given(tmp_path):
    """The transfer grid's continuations stay, so the transfer script skips them on the GPU machine."""
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(ROOT), str(clone))
    git(clone, "config", "user.email", "t@t"), git(clone, "config", "user.name", "t")
    subprocess.run(["bash", "experiments/lean_checkout.sh", "runs/icl_transfer/*_lrhigh/*"], cwd=clone, check=True,
                   capture_output=True)
    tracked = git(clone, "ls-files").split()
    kept = {f.split("/")[2] for f in tracked if f.startswith("runs/")}
    assert kept and all(cell.endswith("_lrhigh") for cell in kept)
    assert kept == {p.name for p in (ROOT / "runs" / "icl_transfer").glob("*_lrhigh")}
    assert sum((clone / f).stat().st_size for f in tracked) < CARRY_LIMIT
