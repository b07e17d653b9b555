#!/usr/bin/env bash
# The fair µP-against-SP study: one recipe for every arm, the batch fixed, paired seeds, 8x width.
# Every run: one epoch of books (52M tokens), books/valid and WikiText-103 valid every 2M tokens,
# --microbatches 1 (the batch fixed: the conclusions), --warmup-groups all (every group warms up
# under every recipe), hlb-gpt's recipe (group multipliers, betas, schedules) under SP and µP
# (--lr-recipe hlb; µP's width rules on top of it from --base-width 384, equal to SP at 384, so
# the width-384 cells are run once, as µP). µP runs at lr 2.5e-3 everywhere (hlb-gpt's lr law at
# 384 gives 2.53e-3); SP-hlb takes hlb-gpt's own law at its width (its way of scaling the lr).
# Seeds are paired: a seed draws the same batches in every cell (tests/test_trainer.py).
# Each experiment is a queue of grids, most important cells first, so a cut-short queue still
# answers its first question; grid.py runs one run per GPU (CUDA_VISIBLE_DEVICES picks them)
# and resumes: rerun the same command after an interruption.
#
#   wide        µP-hlb against SP-hlb at 1536, then 768, warmup 2.5M, seeds 0-2       (12 cells)
#   narrow      µP-hlb against SP-hlb at 192 (6 cells); then µP at warmups 0 and 10M at 192
#               and 768, seeds 0-2 (12 cells): does µP's best warmup move with width?  (18 cells)
#   base        width 384: lr {6.25e-4 .. 5e-3} x warmup {0, 10M} x seeds 0-1, then the lr 2.5e-3
#               column's warmup 2.5M and seed 2, then the rest of warmup 2.5M: does warmup buy a
#               higher lr? and the 384 point of every width comparison                 (27 cells)
#   wide_warmup µP at 1536, warmups 0 and 10M, seeds 0-2                                (6 cells)
#   uniform     SP with one uniform lr at 1536: its width-384 optimum UNIFORM_LR carried over
#               (naive; 1.25e-3, runs/lr_transfer) and re-tuned over LRS_UNIFORM       (12 cells)
#   seqlen      µP-hlb (= SP-hlb) at 384 with --seq-len-start 1024 (no sequence-length warmup),
#               seeds 0-2, beside `base`'s warmup-2.5M cells; then warmups 0 and 10M: does the lr
#               warmup gain as much without the sequence-length warmup?                (9 cells)
#   umup        u-µP at 384 and 1536, 3 seeds, decay anchored to 2.5e-3; `umup_alpha` sweeps its
#               four alpha multipliers one at a time at 384, 2 seeds, after
#               its baseline (umup's 384 cells)
# Usage: [RUNS=runs] [UNIFORM_LR=1.25e-3] [UMUP_LR=1] [DRY=1] bash experiments/fair_study.sh EXPERIMENT [DATA_DIR] [WIKITEXT_VALID]
# (DRY=1 lists the cells and runs nothing; docs/open_gpu_work.md gives the order and the GPU time.)
set -euo pipefail
experiment=${1:?wide, narrow, base, wide_warmup, uniform, seqlen, umup or umup_alpha}
data=${2:-../shared/data/books}; wiki=${3:-../shared/data/wikitext-103/wiki.valid.raw}
runs=${RUNS:-runs}; uniform_lr=${UNIFORM_LR:-1.25e-3}
lr=2.5e-3; warmup=2.5e6; lrs=(6.25e-4 1.25e-3 2.5e-3 5e-3)
common=(--total-tokens 52e6 --max-steps 1000000 --eval-every-tokens 2e6 --microbatches 1
        --warmup-groups all --data-dir "$data" --eval-data "wikitext=$wiki")
hlb=(--lr-recipe hlb --base-width 384)
# A grid with failed cells (exit 1) does not stop the queue; a signal (exit 128+n) or bad input does.
grid() { python3 grid.py --quiet ${DRY:+--dry-run} "$@" -- "${common[@]}" || [ $? -eq 1 ]; }
# SP-hlb and µP-hlb at one width, warmup 2.5M, seeds 0-2: µP at lr 2.5e-3, SP at hlb-gpt's law.
pair() {
  grid --out "$runs/fair_hlb_w$1" --param mup --lr "$lr" --widths "$1" --warmup-tokens "$warmup" --seeds 0 1 2 "${hlb[@]}"
  grid --out "$runs/fair_hlb_w$1" --param sp --widths "$1" --warmup-tokens "$warmup" --seeds 0 1 2 "${hlb[@]}"
}
case $experiment in
  wide)        pair 1536; pair 768 ;;
  narrow)      pair 192
               grid --out "$runs/fair_mup_warmup" --param mup --lr "$lr" --widths 192 768 \
                    --warmup-tokens 0 1e7 --seeds 0 1 2 "${hlb[@]}" ;;
  base)        grid --out "$runs/fair_w384" --param mup --lr "${lrs[@]}" --warmup-tokens 0 1e7 --seeds 0 1 "${hlb[@]}"
               grid --out "$runs/fair_w384" --param mup --lr "$lr" --warmup-tokens "$warmup" --seeds 0 1 "${hlb[@]}"
               grid --out "$runs/fair_w384" --param mup --lr "$lr" --warmup-tokens 0 "$warmup" 1e7 --seeds 2 "${hlb[@]}"
               grid --out "$runs/fair_w384" --param mup --lr "${lrs[@]}" --warmup-tokens "$warmup" --seeds 0 1 "${hlb[@]}" ;;
  wide_warmup) grid --out "$runs/fair_mup_warmup_w1536" --param mup --lr "$lr" --widths 1536 \
                    --warmup-tokens 0 1e7 --seeds 0 1 2 "${hlb[@]}" ;;
  uniform)     grid --out "$runs/fair_sp_uniform" --param sp --lr "$uniform_lr" ${LRS_UNIFORM:-3.125e-4 6.25e-4 2.5e-3} \
                    --widths 1536 --warmup-tokens "$warmup" --seeds 0 1 2 --lr-recipe uniform ;;
  seqlen)      grid --out "$runs/fair_seqlen1024" --param mup --lr "$lr" --warmup-tokens "$warmup" \
                    --seeds 0 1 2 --seq-len-start 1024 "${hlb[@]}"
               grid --out "$runs/fair_seqlen1024" --param mup --lr "$lr" --warmup-tokens 0 1e7 \
                    --seeds 0 1 2 --seq-len-start 1024 "${hlb[@]}" ;;
  umup)        grid --out "$runs/fair_umup" --param umup --lr "${UMUP_LR:-1}" --widths 384 1536 \
                    --warmup-tokens "$warmup" --seeds 0 1 2 --umup-decay-lr "$lr" ;;
  umup_alpha)  # the alpha = 1 baseline first: umup's width-384 cells (the same folder, so run once)
               grid --out "$runs/fair_umup" --param umup --lr "${UMUP_LR:-1}" --widths 384 \
                    --warmup-tokens "$warmup" --seeds 0 1 2 --umup-decay-lr "$lr"
               for alpha in attn act residual loss; do
                 for value in 0.5 2; do
                   grid --out "$runs/fair_umup_alpha_${alpha}_$value" --param umup --lr "${UMUP_LR:-1}" \
                        --warmup-tokens "$warmup" --seeds 0 1 --umup-decay-lr "$lr" "--umup-$alpha-mult" "$value"
                 done
               done ;;
  *) echo "unknown experiment '$experiment': use wide, narrow, base, wide_warmup, uniform, seqlen, umup or umup_alpha" >&2; exit 2 ;;
esac
