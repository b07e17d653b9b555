#!/usr/bin/env bash
# Regenerate every committed figure and table from the committed run logs (CPU, ~30 s).
# tests/test_committed_results.py runs the same command on a subset of the logs.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m plots runs/lr_transfer runs/lr_transfer_low runs/lr_transfer_768 --out plots/lr_transfer
python3 -m mup_patch.coord_check --out plots
