#!/usr/bin/env bash
# The recommended command (configs/recommended.yaml: it chooses its recipe on the data,
# stacks with retrieval, refits where the folds purge, and submits what the nested CV
# picks) against the same members, stack and options with fixed recipes: the kit's train
# defaults and the recipe configs/recommended.yaml fixed before. Each dataset is generated
# in the organisers' layout at SCALE (default 0.1, 1,725 clips); none is the data any
# recipe or candidate was chosen on (the demo's generator seed is 0, the levers' full data
# seed 0).
#   bash benchmarks/bench_recommended.sh [SCALE]     -> benchmarks/results/recommended.md
# RECIPES (default "chosen defaults fixed plain") and DATASETS (rb_runs.sh) pick the runs;
# OUT (logs and times) and TABLE move what it writes (as bench_inner_split.sh does).
# Resumable: a finished run is current and is not trained again. times.tsv keeps each
# run's first (whole) time: delete it to time again from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/rb_runs.sh
TAEMI=${TAEMI:-.venv/bin/taemi}
PY=${PY:-.venv/bin/python}
SCALE=${1:-0.1}
OUT=${OUT:-benchmarks/results/recommended}
TABLE=${TABLE:-benchmarks/results/recommended.md}
mkdir -p "$OUT"
for spec in $RB_DATASETS; do
  for recipe in ${RECIPES:-chosen defaults fixed plain}; do
    rb_args "$spec" "$SCALE" "$recipe"
    # the kit never replaces a submission with other predictions: a benchmark's is rewritten
    rm -f "submissions/rb-$DS/$recipe/"*.csv
    /usr/bin/time -f "$DS	$recipe	%e	%M" -a -o "$OUT/times.tsv" $TAEMI run "${ARGS[@]}" \
      > "$OUT/$DS-$recipe.log" 2>&1 || { echo "$DS $recipe failed: $OUT/$DS-$recipe.log"; exit 1; }
  done
done
$PY benchmarks/bench_recommended.py "$OUT" > "$TABLE"
cat "$TABLE"
