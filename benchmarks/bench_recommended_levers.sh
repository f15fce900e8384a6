#!/usr/bin/env bash
# Issue 21's levers on the recommended command's finished runs (bench_recommended.sh
# first, at scale 0.1): the retrieval meta-features in the stack on and off
# (bench_retrieval.sh), then refit on all labelled rows (bench_refit.py).
#   bash benchmarks/bench_recommended_levers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results/recommended
bash benchmarks/bench_retrieval.sh
for ds in shared-s11-x0.1 disjoint-s11-x0.1 shared-s12-text1-x0.1; do
  $PY benchmarks/bench_refit.py "models/rb-$ds/chosen" > "$OUT/$ds-refit.log" 2>&1 \
    || { echo "refit $ds failed: $OUT/$ds-refit.log"; exit 1; }
done
