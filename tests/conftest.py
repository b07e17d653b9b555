"""Shared test setup: the repository root and tests/ on sys.path, so tests import main, grid,
runlog, plots and mup_patch as the scripts do, and the helpers beside them (trainer_support);
the `one_thread` fixture for tests that time or compare CPU runs on the shared 2 cores, and
`drawn`, the figures plots/ saved during a test."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
for folder in (REPO / "tests", REPO):  # the root ends up first
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


@pytest.fixture
def one_thread():
    """torch on one thread for the test (the test machine's 2 cores are shared), restored after."""
    import torch  # here, not at the top: grid and plots tests run where torch is hidden
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def drawn(monkeypatch):
    """{file name: matplotlib Figure} of every figure plots.figures.save wrote during the test."""
    from plots import figures  # here, not at the top: most tests need no matplotlib
    figures_by_name, real_save = {}, figures.save

    def save(fig, path):
        figures_by_name[path.name] = fig
        return real_save(fig, path)

    monkeypatch.setattr(figures, "save", save)
    return figures_by_name
