#!/usr/bin/env bash
# A longer epoch cap where the folds purge seed videos: the recommended file with the
# kit's train defaults (the runs "defaults" of bench_recommended.sh) but 40 epochs for 20,
# on the demo-size disjoint datasets. Run bench_recommended.sh with RECIPES=defaults on
# them first: the comparison is against those runs.
#   bash benchmarks/bench_epochs40.sh    -> results/epochs40.md (logs, times: results/epochs40/)
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/rb_runs.sh
OUT=benchmarks/results/epochs40
mkdir -p "$OUT"
for spec in ${DATASETS:-disjoint-s11:disjoint:11:0 disjoint-s13:disjoint:13:0}; do
  rb_args "$spec" 0.1 ep40
  ARGS+=(--set tune=null --set train.epochs=40)
  /usr/bin/time -f "$DS	ep40	%e	%M" -a -o "$OUT/times.tsv" .venv/bin/taemi run "${ARGS[@]}" \
    > "$OUT/$DS.log" 2>&1
done
.venv/bin/python benchmarks/bench_compare.py "20 epochs:.:defaults" "40 epochs:.:ep40" \
  > benchmarks/results/epochs40.md
cat benchmarks/results/epochs40.md
