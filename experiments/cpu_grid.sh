#!/usr/bin/env bash
# A small real warmup grid on the CPU, end to end from one command: SP and µP at width 64
# with µP's base width 32 (so µP's per-layer scales differ from SP's; at the base width the
# two are the same model and their curves coincide), three warmups, one seed, a one-block
# model on the books corpus, then every plot. grid.py prints a line as each cell starts and
# finishes (final loss, time elapsed, estimated time left).
#
# Usage (from the repository root):
#     export TIKTOKEN_CACHE_DIR=../shared/data/tiktoken   # tiktoken's gpt2 files, offline
#     bash experiments/cpu_grid.sh [OUT_DIR [DATA_DIR]]
# OUT_DIR: default out/cpu_grid (git-ignored); run logs OUT_DIR/*.json, each run's output
# OUT_DIR/logs/, the grid's manifest OUT_DIR/manifest.json, figures and summary.md in
# OUT_DIR/figures/. DATA_DIR: a folder with train and valid text (default ../shared/data/books).
# WANDB=PROJECT also mirrors every run's log to that Weights & Biases project (grid.py --wandb).
# Running it again skips the cells already finished and redraws the figures.
#
# About a minute and a half on 2 CPU cores, the first time included: the first 20M characters of
# the training text are tokenized once into the git-ignored data_cache/.
set -euo pipefail
out=${1:-out/cpu_grid}; data=${2:-../shared/data/books}
train_chars=20000000  # the training text's first 20M characters (~5M tokens) are plenty for 12K-token runs

# Two runs at a time on two cores, one thread each: one process per core does more work than
# two processes each spreading over both cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# The knobs, each chosen to keep the grid within minutes on 2 cores:
# width 64 against base width 32: µP's width ratio 2, the smallest that sets it apart from SP;
#   the cost is the 50K-vocabulary readout, proportional to the width.
# depth 1, sequences of 64, 1,024-token batches, 12K tokens a run: 12 optimizer steps; an eval
#   of 2,048 tokens every 3K.
# warmups 0, 3K and 9K tokens: none, a quarter and three quarters of the run.
# lr 1e-2 with one lr and schedule for every group (--lr-recipe uniform) in both
#   parametrizations, so that the only difference between SP and µP is µP's width scaling.

# The data are tokenized once, before two runs start together and would each do it.
echo "Tokenizing $data if not yet cached in data_cache/ (seconds the first time)"
python3 main.py --prepare-data --device cpu --data-dir "$data" --train-chars "$train_chars"
python3 grid.py --out "$out" --param sp mup --widths 64 --warmup-tokens 0 3K 9K --seeds 0 \
    --lr 1e-2 --jobs 2 --quiet ${WANDB:+--wandb "$WANDB"} \
    -- --lr-recipe uniform --base-width 32 --depth 1 --max-seq-len 64 \
    --batch-tokens 1024 --total-tokens 12K --eval-tokens 2048 --eval-every-tokens 3K \
    --device cpu --data-dir "$data" --train-chars "$train_chars"
python3 -m plots "$out" --out "$out/figures"
