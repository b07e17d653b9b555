#!/usr/bin/env bash
# One call on a device machine for the in-context regression studies, rerunnable: every lane
# skips what is complete and resumes what was interrupted, so the same command in a second call on
# the still-warm machine continues the work. PLAN picks the lanes:
#
# PLAN=paper (default, 4 GPUs): the first landscape runs and their sparse sweeps
#   GPU 0: the developmental-landscape run, timaeus' recipe (L2H4, onecycle 50 % warmup, 500k
#          steps), seeds 0-2, then its LLC sweep
#   GPU 1: the same, seeds 3-4, then (150 s of) its LLC sweep, the benchmark, the GPU tests and the transfer grid
#          (experiments/icl_transfer.py)
#   GPU 2: the same recipe with a 10k-step (2 %) warmup, seeds 0-2, then its LLC sweep
#   GPU 3: the same recipe without warmup, seeds 0-2, then its LLC sweep
#
# PLAN=dense (2 GPUs): the one-cycle runs again (their checkpoints stay on the machine) for a
# dense sweep, and µP beside them. The sweeps use the ensemble backend (3x vmap's speed).
#   GPU 0: garg_onecycle_a and _b trained side by side, then both swept side by side
#   GPU 1: µP at width 64 from base width 32 (same recipe, seeds 0-2), devinterp beside our
#          estimator on one trained one-cycle checkpoint (needs .whl carried:
#          experiments/devinterp_wheels.sh), the µP sweep, then the transfer grid's lrhigh cells
#          and the depth and steps axes' cells not yet committed
#
# PLAN=h100 (1 GPU): what the dense pass left open, in one lane
#   the one-cycle runs and the two warmup runs trained again (four processes side by side); the
#   one-cycle sweep alone on the GPU (its time: the sum of its groups' seconds in llc.json, across
#   calls); then the one-cycle runs' steps 4k-200k again at epsilon 3e-4 into llc_eps3e-4.json, where
#   at 1e-3 every SP chain diverged at some checkpoints; then the warmup runs' dense sweeps
#
# PLAN=x4 (4 GPUs): what PLAN=h100 does, spread so that it ends inside one machine's 30 minutes, and
# the transfer grid's open axes beside it
#   GPU 0: garg_onecycle_a trained, then the one-cycle sweep (a and b) alone on this GPU: the timed sweep
#   GPU 1: garg_onecycle_b trained, then the epsilon 3e-4 stretch (as PLAN=h100), then the steps axis
#   GPU 2: the two warmup runs trained side by side, their dense sweeps side by side, then the joint axis
#   GPU 3: the transfer grid's warmup x parametrization axis, then its depth axis
#
# PLAN=rest (4 GPUs; on H100s for the timing): what PLAN=x4 left open, one run a GPU (two runs sharing
# a GPU take twice as long each)
#   GPU 0: garg_onecycle_a trained, then the one-cycle sweep (a and b) alone on this GPU: the timed sweep
#   GPU 1: garg_onecycle_b trained, then garg_warmup10k trained and densely swept
#   GPU 2: garg_warmup0 trained and densely swept, then garg_b1024: the one-cycle recipe with 4x the
#          batch (does more data per step bring the last-position MSE within 10 % of ridge?)
#   GPU 3: the transfer grid's joint axis and the lr grid's continuations (lrhigh, lrlow) not yet run;
#          from a lean checkout that keeps the committed continuations:
#          bash experiments/lean_checkout.sh 'runs/icl_transfer/*_lrhigh/*' 'runs/icl_transfer/*_lrlow/*'
#
# Usage: GIT_COMMIT=<sha> LIMIT=560 bash experiments/icl_device_call.sh    (logs and results in $OUT)
# TRAIN_FLAGS (default --compile --tf32) and LLC_FLAGS replace or extend the runs' flags: a dry run
# on the CPU sets tiny models and samplers there.
set -uo pipefail
export PYTHONUNBUFFERED=1
runs=${RUNS:-.gpu_runs}; out=${OUT:-/tmp/out}; mkdir -p "$runs" "$out"
deadline=$(( $(date +%s) + ${LIMIT:-560} ))
left() { echo $(( deadline - $(date +%s) )); }
[ -n "${GIT_COMMIT:-}" ] || echo "warning: GIT_COMMIT is not set; run logs will name the machine's stale commit" >&2

# complete FOLDER: true when the folder holds run logs and every one has finished
complete() { python3 -c "import sys, runlog; logs = runlog.load_run_logs([sys.argv[1]]).values(); \
sys.exit(0 if logs and all(l['status'] in (runlog.COMPLETED, runlog.DIVERGED) for l in logs) else 1)" "$1" 2>/dev/null; }

# train FOLDER FLAGS...: train (or resume) until done or the deadline (SIGINT: checkpoint, exit 130)
train() {
    local folder=$1; shift
    complete "$folder" && return 0
    [ "$(left)" -gt 0 ] || return 0  # a lane that has run out of time starts nothing
    local resume=(); ls -d "$folder"/*.ckpt >/dev/null 2>&1 && resume=(--resume)
    timeout -s INT "$(left)" python3 -m icl "$@" ${TRAIN_FLAGS:---compile --tf32} --quiet --out "$folder" "${resume[@]}"
    echo "train $folder: exit $?"
}

# llc FOLDER...: the LLC and essential-dynamics sweep (seed's sampler) on up to 40 checkpoints a member,
# once every folder's training is complete (at most LIMIT_LLC seconds when set, else until 20 s before
# the deadline); several folders share one process, one after another
llc() { local limit=$(( $(left) - 20 )); [ -n "${LIMIT_LLC:-}" ] && [ "$LIMIT_LLC" -lt "$limit" ] && limit=$LIMIT_LLC
        local f; for f in "$@"; do complete "$f" || return 0; done
        python3 -m icl.landscape sweep "$@" --max-checkpoints "${LLC_CHECKPOINTS:-40}" --limit "$limit" ${LLC_FLAGS:-}; }

# A lane is stopped (SIGINT to its whole process group, SIGKILL 20 s later) 15 s past the deadline,
# so that the archive below is always written inside the call (a first call once ran over).
lane() { local gpu=$1; shift
         CUDA_VISIBLE_DEVICES=$gpu timeout -s INT -k 20 "$(( $(left) + 15 ))" bash -c "$*" >"$out/gpu$gpu.log" 2>&1 & }
# committed_transfer_cells: copy the committed transfer cells where the transfer script looks, so that
# it skips them (a lean checkout holds those it kept: experiments/lean_checkout.sh)
committed_transfer_cells() { mkdir -p $runs/icl_transfer
    for d in runs/icl_transfer/*/; do d=${d%/}; [ -e $runs/icl_transfer/${d##*/} ] || cp -r $d $runs/icl_transfer/; done; }

# transfer [AXES]: the transfer grid's cells of these axes (comma-separated; none: all), 3 at a time on the lane's GPU
transfer() { python3 experiments/icl_transfer.py --out $runs/icl_transfer ${1:+--only "$1"} --jobs 3 --limit $(( $(left) - 30 )); }

# await FOLDER: wait until the folder's training is complete (another lane trains it)
await() { until complete "$1" || [ "$(left)" -lt 60 ]; do sleep 10; done; }

export -f complete train llc left committed_transfer_cells transfer await; export deadline runs out TRAIN_FLAGS LLC_FLAGS LLC_CHECKPOINTS

nvidia-smi --query-gpu=index,name --format=csv,noheader
case "${PLAN:-paper}" in
paper)
lane 0 'train $runs/garg_onecycle_a --seeds 0 1 2; llc $runs/garg_onecycle_a'
lane 1 'train $runs/garg_onecycle_b --seeds 3 4; LIMIT_LLC=150 llc $runs/garg_onecycle_b;
        [ -f $runs/bench_done ] || { python3 -m icl.bench --devices cuda --sizes 1 8 32 --compile --tf32 \
            --json $runs/bench_icl.json > $runs/bench_icl.md && touch $runs/bench_done; };
        [ -f $runs/gpu_tests_done ] || { timeout "$(( $(left) - 60 ))" python3 -m pytest -q -m gpu tests \
            > $runs/gpu_tests.txt 2>&1 && touch $runs/gpu_tests_done; };
        transfer'
lane 2 'train $runs/garg_warmup10k --seeds 0 1 2 --warmup-steps 10000; LLC_CHECKPOINTS=30 llc $runs/garg_warmup10k'
lane 3 'train $runs/garg_warmup0 --seeds 0 1 2 --warmup-steps 0; LLC_CHECKPOINTS=30 llc $runs/garg_warmup0' ;;
dense)
export LLC_FLAGS="--backend ensemble ${LLC_FLAGS:-}"
lane 0 'train $runs/garg_onecycle_a --seeds 0 1 2 & train $runs/garg_onecycle_b --seeds 3 4; wait;
        llc $runs/garg_onecycle_a & llc $runs/garg_onecycle_b; wait'
lane 1 'train $runs/garg_mup_b32 --seeds 0 1 2 --param mup --base-width 32;
        until complete $runs/garg_onecycle_a || [ "$(left)" -lt 200 ]; do sleep 10; done;
        if [ ! -f $runs/devinterp_done ] && complete $runs/garg_onecycle_a; then
            python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl;
            python3 -m pip show pyarrow fsspec xarray huggingface_hub | grep -E "^(Name|Version)";
            PYTHONPATH=/tmp/site timeout "$(( $(left) - 30 ))" python3 experiments/llc_backend_bench.py \
                --folder $runs/garg_onecycle_a --step 500000 --group 1 --burnin 500 --draws 500 \
                --modes vmap ensemble-graph-compile devinterp --json $runs/llc_devinterp_bench.json \
                && touch $runs/devinterp_done
        fi
        llc $runs/garg_mup_b32;
        committed_transfer_cells;
        transfer lrhigh,depth,steps' ;;
h100)
export LLC_FLAGS="--backend ensemble ${LLC_FLAGS:-}"
lane 0 'train $runs/garg_onecycle_a --seeds 0 1 2 & train $runs/garg_onecycle_b --seeds 3 4 &
        train $runs/garg_warmup10k --seeds 0 1 2 --warmup-steps 10000 & train $runs/garg_warmup0 --seeds 0 1 2 --warmup-steps 0;
        wait;
        llc $runs/garg_onecycle_a $runs/garg_onecycle_b;
        LLC_FLAGS="$LLC_FLAGS --epsilon 3e-4 --llc-file llc_eps3e-4.json --steps 4000 200000" LLC_CHECKPOINTS=12 \
            llc $runs/garg_onecycle_a $runs/garg_onecycle_b;
        llc $runs/garg_warmup10k $runs/garg_warmup0' ;;
x4)
export LLC_FLAGS="--backend ensemble ${LLC_FLAGS:-}"
committed_transfer_cells
lane 0 'train $runs/garg_onecycle_a --seeds 0 1 2; await $runs/garg_onecycle_b;
        llc $runs/garg_onecycle_a $runs/garg_onecycle_b'
lane 1 'train $runs/garg_onecycle_b --seeds 3 4; await $runs/garg_onecycle_a;
        LLC_FLAGS="$LLC_FLAGS --epsilon 3e-4 --llc-file llc_eps3e-4.json --steps 4000 200000" LLC_CHECKPOINTS=12 \
            llc $runs/garg_onecycle_a $runs/garg_onecycle_b;
        transfer steps'
lane 2 'train $runs/garg_warmup10k --seeds 0 1 2 --warmup-steps 10000 & train $runs/garg_warmup0 --seeds 0 1 2 --warmup-steps 0;
        wait; llc $runs/garg_warmup10k & llc $runs/garg_warmup0; wait;
        transfer joint'
lane 3 'transfer warmup; transfer depth' ;;
rest)
export LLC_FLAGS="--backend ensemble ${LLC_FLAGS:-}"
lane 0 'train $runs/garg_onecycle_a --seeds 0 1 2; await $runs/garg_onecycle_b;
        llc $runs/garg_onecycle_a $runs/garg_onecycle_b'
lane 1 'train $runs/garg_onecycle_b --seeds 3 4;
        train $runs/garg_warmup10k --seeds 0 1 2 --warmup-steps 10000; llc $runs/garg_warmup10k'
lane 2 'train $runs/garg_warmup0 --seeds 0 1 2 --warmup-steps 0; llc $runs/garg_warmup0;
        train $runs/garg_b1024 --seeds 0 1 2 --batch 1024'
committed_transfer_cells
lane 3 'transfer joint,lrhigh,lrlow' ;;
*) echo "PLAN must be paper, dense, h100, x4 or rest, not ${PLAN}" >&2; exit 2 ;;
esac
wait
for f in "$runs"/*/llc.json; do echo "$f"; done
tar czf "$out/icl_runs.tgz" --exclude='*.ckpt' --exclude='.*.tmp*' -C "$runs" .
ls -la "$out"
