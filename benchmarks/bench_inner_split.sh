#!/usr/bin/env bash
# The inner selection split (early stopping, the search's objective) where the folds purge
# seed videos: by participant, the kit's rule (this tree), against by seed video, the rule
# in inner_split_by_seed_video.patch (measured, not adopted: benchmarks/RESULTS.md,
# "The inner split by seed video"). The recommended command (its chosen recipe, and the
# kit's train defaults) on demo-size datasets with seed videos disjoint; each side runs
# bench_recommended.sh in its own tree, the patched one a git worktree of this commit
# beside this one. Resumable, as bench_recommended.sh is.
#   bash benchmarks/bench_inner_split.sh    -> benchmarks/results/inner_split.md
set -euo pipefail
cd "$(dirname "$0")/.."
THERE=${THERE:-../taemi-inner-by-seed-video}
export DATASETS=${DATASETS:-"disjoint-s11:disjoint:11:0 disjoint-s13:disjoint:13:0"}
export RECIPES=${RECIPES:-"chosen defaults"}
HERE=$PWD
OUT=$HERE/benchmarks/results/inner_split
mkdir -p "$OUT/participant" "$OUT/seed-video"
if [[ ! -d $THERE ]]; then
  git worktree add --detach "$THERE" HEAD
  git -C "$THERE" apply "$HERE/benchmarks/inner_split_by_seed_video.patch"
fi
[[ -e $THERE/.venv ]] || ln -s "$HERE/.venv" "$THERE/.venv"
OUT="$OUT/participant" TABLE=/dev/null bash benchmarks/bench_recommended.sh 0.1
# the editable install points at this tree's src: the worktree's own code goes first
(cd "$THERE" && PYTHONPATH="$PWD/src" OUT="$OUT/seed-video" TABLE=/dev/null \
   bash benchmarks/bench_recommended.sh 0.1)
.venv/bin/python benchmarks/bench_compare.py participant:.:chosen "seed video:$THERE:chosen" \
  participant:.:defaults "seed video:$THERE:defaults" > benchmarks/results/inner_split.md
cat benchmarks/results/inner_split.md
