#!/usr/bin/env bash
# What one GPU call of the study runs (the device tool gives 10 minutes a call): tokenize once,
# then run the given experiment commands side by side under one time limit, so that the runs
# checkpoint and stop cleanly before the call ends; rerunning the call resumes them.
# Usage: GIT_COMMIT=<sha> LIMIT=540 bash experiments/device_call.sh 'CMD1' 'CMD2' ...   (logs in $OUT)
set -uo pipefail
# The device image may set TIKTOKEN_CACHE_DIR elsewhere: always use the carried copy.
export PYTHONUNBUFFERED=1 TIKTOKEN_CACHE_DIR=$PWD/.data/tiktoken
out=${OUT:-/tmp/out}; mkdir -p "$out"
# The machine's .git stays at the session's first commit: the logs need the sender's HEAD.
[ -n "${GIT_COMMIT:-}" ] || echo "device_call.sh: warning: GIT_COMMIT is not set; run logs will name a stale commit (pass GIT_COMMIT=\$(git rev-parse HEAD))" >&2
# Runs go to a git-ignored folder, which a warm device machine keeps between calls (the
# tracked runs/ is replaced by the sender's copy on every call), seeded from runs/ so that
# completed cells are never run twice. Give the commands RUNS=$RUNS.
export RUNS=${RUNS:-.gpu_runs}; mkdir -p "$RUNS"; if [ -d runs ]; then cp -r --update=none runs/. "$RUNS/"; fi
python3 main.py --prepare-data --data-dir .data/books --eval-data wikitext=.data/wikitext-103/wiki.valid.raw.xz
index=0; groups=()
for command in "$@"; do
    index=$((index + 1))
    timeout -s TERM "${LIMIT:-540}" bash -c "$command" >"$out/cmd$index.log" 2>&1 &
    groups+=($!)
done
wait
# timeout signals its whole process group but returns as soon as the shell it started dies,
# while grid.py and the runs are still saving checkpoints and manifests: wait (up to 90 s: a
# width-1536 checkpoint is 3.3 GB, and one such run did not write its stop checkpoint within 45 s
# and resumed from its periodic one) for
# each group to empty, or the archive below catches manifests that still say "running".
for group in "${groups[@]}"; do
    for _ in $(seq 90); do kill -0 -- "-$group" 2>/dev/null || break; sleep 1; done
done
# The grids are --quiet: say where each one stands, so that the next call can be chosen (and
# started) as soon as this one returns; the machine goes cold 30 s after a call.
python3 - "$RUNS" <<'PY'
import json, pathlib, sys, time
import grid
for manifest in sorted(pathlib.Path(sys.argv[1]).glob("*/manifest.json")):
    if time.time() - manifest.stat().st_mtime < 3600:
        cells = json.loads(manifest.read_text())["cells"]
        print(f"{manifest.parent.name}: {grid.status_summary(cell['status'] for cell in cells)}")
PY
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >"$out/gpu.txt" 2>&1
tar czf "$out/runs.tgz" --exclude='*.ckpt*' --exclude='.*.tmp*' "$RUNS"
