#!/usr/bin/env bash
# Check out a code-only copy of HEAD for a GPU machine, which takes at most 64 MiB of working tree:
# the committed run logs and figures (runs/, plots/*/) are over that on their own. The branch
# `lean` is HEAD less those folders, one commit on top; the run logs a GPU call writes still name
# the real commit through GIT_COMMIT, which this prints. Ignored folders (data, wheels) stay put.
#
#   bash experiments/lean_checkout.sh [KEEP ...]  # -> on branch lean; prints GIT_COMMIT=<HEAD's sha>
#       KEEP: committed paths (git pathspecs) to keep all the same, e.g. 'runs/icl_transfer/*_lrhigh/*'
#       (the transfer script then skips those cells)
#   ... the GPU calls, with GIT_COMMIT=<that sha> ...
#   git checkout main                            # back (the logs and figures return)
set -euo pipefail
[ -z "$(git status --porcelain --untracked-files=no)" ] || { echo "commit or stash your changes first" >&2; exit 1; }
real=$(git rev-parse HEAD)
keep=$(mktemp); git ls-files -z -- "$@" >"$keep"  # what KEEP matches (none given: nothing; none matched: nothing)
[ $# -gt 0 ] || : >"$keep"
git checkout -q -B lean "$real"
git rm -r -q --ignore-unmatch runs plots/*/  # index and working tree; `git checkout main` restores them
[ -s "$keep" ] && xargs -0 git checkout -q "$real" -- <"$keep"
rm -f "$keep"
git commit -q -m "lean: $real without runs/ and the figures, for a GPU machine"
echo "on branch lean: $(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1) bytes tracked; pass GIT_COMMIT=$real"
