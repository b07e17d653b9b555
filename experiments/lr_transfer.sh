#!/usr/bin/env bash
# The lr-transfer experiment (shortened to fit GPU calls of 10 minutes): learning-rate transfer
# across width. µP and SP, both with the uniform lr recipe (one lr, one schedule; at the base
# width 384 the two compute the same thing), 6M tokens per run with a 1M-token warmup, on books.
# GPU_MEMORY_FRACTION=f gives each run that share of the GPU (grid.py gives SHARED_GPU_MEMORY/JOBS), for
# when another grid shares the GPU. WANDB=PROJECT mirrors every run's log to Weights & Biases.
# Usage: [PARAMS="sp mup"] [WIDTHS="128 384 768"] [LRS="..."] [JOBS=6] [GPU_MEMORY_FRACTION=f] [WANDB=PROJECT] bash experiments/lr_transfer.sh OUT_DIR [DATA_DIR] [WIKITEXT_VALID]
set -euo pipefail
out=${1:?OUT_DIR}; data=${2:-../shared/data/books}; wiki=${3:-../shared/data/wikitext-103/wiki.valid.raw}
python3 grid.py --out "$out" --param ${PARAMS:-sp mup} --widths ${WIDTHS:-128 384 768} \
    --lr ${LRS:-1.25e-3 2.5e-3 5e-3 1e-2 2e-2 4e-2} --warmup-tokens 1e6 --seeds 0 --jobs "${JOBS:-6}" --quiet \
    ${WANDB:+--wandb "$WANDB"} \
    -- --lr-recipe uniform --total-tokens 6e6 --max-steps 100000 --eval-every-tokens 3e6 \
    --eval-tokens 65536 --data-dir "$data" --eval-data "wikitext=$wiki" \
    ${GPU_MEMORY_FRACTION:+--gpu-memory-fraction "$GPU_MEMORY_FRACTION"}
