#!/usr/bin/env bash
# refit_epochs.py over bench_recommended.sh's finished runs (same DATASETS, RECIPES and
# SCALE; runs whose members refit): each RULE's variant run, then one table of them all.
#   bash benchmarks/refit_epochs.sh [SCALE]   -> benchmarks/results/refit-epochs.md
# RULES (default "sqrt steps"): the refit epoch rules to try besides the run's own.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/rb_runs.sh
PY=${PY:-.venv/bin/python}
SCALE=${1:-0.1}
TABLE=${TABLE:-benchmarks/results/refit-epochs.md}
OUT=${OUT:-benchmarks/results/refit-epochs}
mkdir -p "$OUT"
rows=()
for spec in $RB_DATASETS; do
  for recipe in ${RECIPES:-chosen defaults}; do
    rb_args "$spec" "$SCALE" "$recipe"
    rows+=("$DS:$recipe:run")
    for rule in ${RULES:-sqrt steps}; do
      $PY benchmarks/refit_epochs.py "$DS" "$recipe" "$rule" -- "${ARGS[@]}" \
        > "$OUT/$DS-$recipe-$rule.log" 2>&1 || { echo "failed: $OUT/$DS-$recipe-$rule.log"; exit 1; }
      rows+=("$DS:$recipe:$rule")
    done
  done
done
$PY benchmarks/refit_epochs.py --table "${rows[@]}" > "$TABLE"
cat "$TABLE"
