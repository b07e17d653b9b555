"""README.md is a short front door: its size, the test command .ci/run runs, the CPU preset as
it really behaves, and links that resolve."""
import re
from pathlib import Path

import config
import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_BYTES = 12 * 1024  # a front door; results and methods live in docs/


def readme_text() -> str:
    return README.read_text()


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= MAX_README_BYTES, f"README.md is {size} bytes: move detail to docs/"


def test_readme_gives_the_test_command_ci_runs():
    """.ci/run runs exactly the README's test command."""
    command = "python3 -m pytest -q tests"
    assert f"\n{command}\n" in readme_text()
    assert (REPO / ".ci" / "run").read_text().rstrip().splitlines()[-1] == command


def test_readme_links_resolve():
    links = re.findall(r"\]\(([^)#]+)\)", readme_text())
    local = [link for link in links if not link.startswith("http")]
    assert local and all((REPO / link).exists() for link in local), [l for l in local if not (REPO / l).exists()]


def test_cpu_preset_is_described_as_it_runs():
    """cpu-small stops at the first step reaching 150,000 tokens and, since the sequence length
    doubles every 80 x 4,096 = 327,680 tokens, trains at length 32 throughout; it tokenizes the
    first 20M characters of the training text."""
    args = main.resolve(main.parse_args(["--preset", "cpu-small", "--device", "cpu"]))
    preset = config.PRESETS["cpu-small"]
    assert (args.total_tokens, args.batch_tokens) == (preset["total_tokens"], preset["batch_tokens"])
    double_at = int(args.seq_len_double_every * args.batch_tokens)
    last_step_start = (args.total_tokens - 1) // args.batch_tokens * args.batch_tokens
    assert last_step_start < args.total_tokens < double_at
    assert {main.seq_len_at(t, args) for t in range(0, last_step_start + 1, args.batch_tokens)} == {32}
    text = " ".join(readme_text().split())
    assert f"reaches {args.total_tokens:,} tokens" in text
    assert f"length {args.seq_len_start} throughout" in text
    assert f"{args.seq_len_double_every:g} × {args.batch_tokens:,} = {double_at:,} tokens" in text
    assert f"{args.max_seq_len}-token windows" in text
    assert args.train_chars == 20_000_000 and "first 20M characters" in text
