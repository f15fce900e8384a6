#!/usr/bin/env bash
# refit_stack_inputs.py over bench_recommended.sh's finished runs (same DATASETS,
# RECIPES and SCALE): each stack candidate's nested CV and its held-out test with the
# refit members' test inputs as they are, moment-matched to their OOF, or the fold models'.
#   bash benchmarks/refit_stack_inputs.sh [SCALE] -> benchmarks/results/refit-stack-inputs.md
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/rb_runs.sh
PY=${PY:-.venv/bin/python}
SCALE=${1:-0.1}
TABLE=${TABLE:-benchmarks/results/refit-stack-inputs.md}
{
  echo "| run | method | cv | test raw | test moment | test folds | |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  for spec in $RB_DATASETS; do
    for recipe in ${RECIPES:-chosen plain}; do
      rb_args "$spec" "$SCALE" "$recipe"
      sets=()
      for a in "${ARGS[@]:1}"; do [[ $a == -q || $a == --set ]] || sets+=("$a"); done
      $PY benchmarks/refit_stack_inputs.py "${ARGS[0]}" "${sets[@]}" | sed "s/^/| $DS $recipe /"
    done
  done
} > "$TABLE"
cat "$TABLE"
