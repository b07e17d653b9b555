"""Shared test setup: the repository root and tests/ on sys.path, so tests import main, grid,
runlog, plots and mup_patch as the scripts do, and the helpers beside them (trainer_support)."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for folder in (REPO / "tests", REPO):  # the root ends up first
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
