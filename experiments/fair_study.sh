#!/usr/bin/env bash
# The fair µP-against-SP study: one recipe for every arm, the batch fixed, paired seeds, 8x width.
# Every run: one epoch of books (52M tokens), books/valid and WikiText-103 valid every 2M tokens,
# --microbatches 1 (the batch fixed: the conclusions), --warmup-groups all (every group warms up
# under every recipe), hlb-gpt's recipe (group multipliers, betas, schedules) under SP and µP
# (--lr-recipe hlb; µP's width rules on top of it from --base-width 384, equal to SP at 384).
# Seeds are paired: a seed draws the same batches in every cell (tests/test_trainer.py).
# grid.py runs one run per GPU and resumes: rerun the same command after an interruption.
#
#   lr       at width 384, SP-hlb at lr x warmup, 2 seeds: does warmup buy a higher lr?
#   widths   µP-hlb at widths 192, 384, 768, 1536 x warmups 0..20M x 3 seeds, at LR (from `lr`)
#   fair     SP-hlb at 768 and 1536, 3 seeds, at WARMUP; SP with one uniform lr at 1536, its
#            width-384 optimum UNIFORM_LR carried over (naive; 1.25e-3, runs/lr_transfer) and
#            re-tuned over LRS_UNIFORM
#   seqlen   SP-hlb and µP-hlb at 384 with --seq-len-start 1024 (no sequence-length warmup), 3 seeds
#   umup     u-µP at 384 and 1536, 3 seeds, decay anchored to LR; `umup_alpha` sweeps its four
#            alpha multipliers one at a time at 384, 2 seeds
# Usage: [RUNS=runs] [LR=2.5e-3] [WARMUP=2.5e6] [UNIFORM_LR=1.25e-3] [UMUP_LR=1] [DRY=1] bash experiments/fair_study.sh EXPERIMENT [DATA_DIR] [WIKITEXT_VALID]
# (DRY=1 lists the cells and runs nothing; see docs/open_gpu_work.md for the order and the GPU time.)
set -euo pipefail
experiment=${1:?lr, widths, fair, seqlen, umup or umup_alpha}
data=${2:-../shared/data/books}; wiki=${3:-../shared/data/wikitext-103/wiki.valid.raw}
runs=${RUNS:-runs}; lr=${LR:-2.5e-3}; warmup=${WARMUP:-2.5e6}; uniform_lr=${UNIFORM_LR:-1.25e-3}
common=(--total-tokens 52e6 --max-steps 1000000 --eval-every-tokens 2e6 --microbatches 1
        --warmup-groups all --data-dir "$data" --eval-data "wikitext=$wiki")
hlb=(--lr-recipe hlb --base-width 384)
grid() { python3 grid.py --quiet ${DRY:+--dry-run} "$@" -- "${common[@]}"; }
case $experiment in
  lr)         grid --out "$runs/fair_lr_w384" --param sp --lr 6.25e-4 1.25e-3 2.5e-3 5e-3 \
                   --warmup-tokens 0 2.5e6 1e7 --seeds 0 1 "${hlb[@]}" ;;
  widths)     grid --out "$runs/fair_widths_mup" --param mup --lr "$lr" --widths 192 384 768 1536 \
                   --warmup-tokens 0 1e6 2.5e6 5e6 1e7 2e7 --seeds 0 1 2 "${hlb[@]}" ;;
  fair)       grid --out "$runs/fair_sp_hlb" --param sp --lr "$lr" --widths 768 1536 \
                   --warmup-tokens "$warmup" --seeds 0 1 2 "${hlb[@]}"
              grid --out "$runs/fair_sp_uniform" --param sp --lr "$uniform_lr" ${LRS_UNIFORM:-3.125e-4 6.25e-4 2.5e-3} \
                   --widths 1536 --warmup-tokens "$warmup" --seeds 0 1 2 --lr-recipe uniform ;;
  seqlen)     grid --out "$runs/fair_seqlen1024" --param sp mup --lr "$lr" --warmup-tokens "$warmup" \
                   --seeds 0 1 2 --seq-len-start 1024 "${hlb[@]}" ;;
  umup)       grid --out "$runs/fair_umup" --param umup --lr "${UMUP_LR:-1}" --widths 384 1536 \
                   --warmup-tokens "$warmup" --seeds 0 1 2 --umup-decay-lr "$lr" ;;
  umup_alpha) for alpha in attn act residual loss; do
                for value in 0.5 2; do
                  grid --out "$runs/fair_umup_alpha_${alpha}_$value" --param umup --lr "${UMUP_LR:-1}" \
                       --warmup-tokens "$warmup" --seeds 0 1 --umup-decay-lr "$lr" "--umup-$alpha-mult" "$value"
                done
              done ;;
  *) echo "unknown experiment '$experiment': use lr, widths, fair, seqlen, umup or umup_alpha" >&2; exit 2 ;;
esac
