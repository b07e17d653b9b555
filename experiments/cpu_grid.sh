#!/usr/bin/env bash
# A small real warmup grid on CPU, end to end from one command: SP and µP, three warmups, a
# tiny model on the books corpus, then every plot. About 3 minutes on 2 cores.
# WANDB=PROJECT also mirrors every run's log to that Weights & Biases project (grid.py --wandb).
# Usage: [WANDB=PROJECT] bash experiments/cpu_grid.sh OUT_DIR [DATA_DIR]
set -euo pipefail
out=${1:?OUT_DIR}; data=${2:-../shared/data/books}
python3 grid.py --out "$out" --param sp mup --widths 32 --warmup-tokens 0 8K 24K --seeds 0 --lr 1e-2 --jobs 2 --quiet \
    ${WANDB:+--wandb "$WANDB"} \
    -- --lr-recipe uniform --base-width 32 --depth 1 --max-seq-len 64 \
    --batch-tokens 1024 --total-tokens 48K --eval-tokens 4096 --eval-every-tokens 12K \
    --device cpu --data-dir "$data"
python3 -m plots "$out" --out "$out/figures"
