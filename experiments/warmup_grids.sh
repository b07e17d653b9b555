#!/usr/bin/env bash
# The warmup grids over one epoch of books (52M tokens),
# 7 warmups from 0 to 58% of the run, books/valid and WikiText-103 valid logged every 2M tokens.
#   w384:  SP and µP at the default width 384 (46M parameters), seeds 0 and 1
#   w768:  SP and µP at width 768 (2x), seed 0
#   umup:  u-µP at width 384, seed 0
# SP uses hlb-gpt's recipe and lr law (the tool's SP); µP uses lr 1.25e-3, the optimum of the
# lr-transfer sweep at the base width (runs/lr_transfer); u-µP uses UMUP_LR (its GPU sweep:
# runs/umup_lr). Runs and grids resume: rerun the same command after an interruption.
# Two grids side by side on one GPU split its memory between their 2*JOBS runs (grid.py alone would
# give each of its runs SHARED_GPU_MEMORY/JOBS, twice too much); GPU_MEMORY_FRACTION overrides the share.
# MICROBATCHES=N fixes the microbatches per step (main.py --microbatches; hlb-gpt's dynamic rule
# otherwise) and writes to folders ending in _mbN, e.g. runs/warmup_w384_mb1_sp.
# WANDB=PROJECT mirrors every run's log to that Weights & Biases project (grid.py --wandb).
# Usage: [RUNS=runs] [JOBS=2] [UMUP_LR=1] [GPU_MEMORY_FRACTION=f] [MICROBATCHES=N] [WANDB=PROJECT] bash experiments/warmup_grids.sh w384|w768|umup [DATA_DIR] [WIKITEXT_VALID]
set -euo pipefail
experiment=${1:?w384, w768 or umup}; data=${2:-../shared/data/books}
wiki=${3:-../shared/data/wikitext-103/wiki.valid.raw}
runs=${RUNS:-runs}
suffix=${MICROBATCHES:+_mb$MICROBATCHES}
# This order makes a part-done grid span the range (the width-384 grids ran in increasing order).
warmups="0 5e6 3e7 1e7 1e6 2e7 2.5e6"
jobs=${JOBS:-2}
side_by_side=$([ "$experiment" = umup ] && echo 1 || echo 2)
share=${GPU_MEMORY_FRACTION:-$(python3 -c "import grid; print(round(grid.SHARED_GPU_MEMORY / ($side_by_side * $jobs), 4))")}
common=(--total-tokens 52e6 --max-steps 1000000 --eval-every-tokens 2e6
        --data-dir "$data" --eval-data "wikitext=$wiki" --gpu-memory-fraction "$share"
        ${MICROBATCHES:+--microbatches "$MICROBATCHES"})
# SP and µP need different --lr, so each is its own grid (and folder); the two run side by
# side, JOBS runs each, sharing the GPU(s).
grid() { python3 grid.py --jobs "$jobs" --quiet ${WANDB:+--wandb "$WANDB"} "$@" -- "${common[@]}"; }
case $experiment in
  w384) grid --out $runs/warmup_w384${suffix}_sp --param sp --warmup-tokens $warmups --seeds 0 1 & sp=$!
        grid --out $runs/warmup_w384${suffix}_mup --param mup --lr 1.25e-3 --warmup-tokens $warmups --seeds 0 1; wait $sp ;;
  w768) grid --out $runs/warmup_w768${suffix}_sp --param sp --warmup-tokens $warmups --widths 768 --seeds 0 & sp=$!
        grid --out $runs/warmup_w768${suffix}_mup --param mup --lr 1.25e-3 --warmup-tokens $warmups --widths 768 --seeds 0; wait $sp ;;
  umup) grid --out $runs/warmup_w384${suffix}_umup --param umup --lr "${UMUP_LR:-1}" --warmup-tokens $warmups --seeds 0 ;;
  *) echo "unknown experiment '$experiment': use w384, w768 or umup" >&2; exit 2 ;;
esac
