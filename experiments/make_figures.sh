#!/usr/bin/env bash
# Regenerate every committed figure and table from the committed run logs (CPU, ~2 minutes).
# tests/test_committed_results.py runs the plotting command on a subset of the logs.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m plots runs/lr_transfer runs/lr_transfer_low runs/lr_transfer_768 runs/lr_transfer_768_high \
    --out plots/lr_transfer
python3 -m plots runs/warmup_w384_sp runs/warmup_w384_mup runs/warmup_w384_umup \
    runs/warmup_w768_sp runs/warmup_w768_mup --out plots/warmup_grids
# The width-384 grids beside the same grids with one microbatch a step (--microbatches 1),
# where every run takes the same steps, and the fixed-batch grids at width 768.
python3 -m plots runs/warmup_w384_sp runs/warmup_w384_mup runs/warmup_w384_mb1_sp \
    runs/warmup_w384_mb1_mup runs/warmup_w768_mb1_sp runs/warmup_w768_mb1_mup --out plots/batch_comparison
# Its dynamic-batch groups' curves are plots/warmup_grids' own, byte for byte: keep one copy.
find plots/batch_comparison -name 'curves_*.png' ! -name '*_mb1.png' -delete
python3 -m plots runs/umup_lr --out plots/umup_lr
# The fair study (experiments/fair_study.sh): µP-hlb against SP-hlb across width, warmup, lr.
python3 -m plots.fair_study runs --out plots/fair_study
python3 coord_check_gpt.py --out plots
python3 coord_check_gpt.py --param sp mup umup --lr 1.25e-3 --widths 96,128,192,384,512,768 \
    --base-width 384 --depth 8 --out plots/coord_check_study
