#!/usr/bin/env bash
# Issue 21's levers on the recommended command's finished runs (bench_recommended.sh
# first): the retrieval meta-features in the stack (the nested CV decides whether they
# enter), refit on all labelled rows (benchmarks/bench_refit.py), and three TAEMI seeds.
#   bash benchmarks/bench_recommended_levers.sh [SCALE]
set -euo pipefail
cd "$(dirname "$0")/.."
TAEMI=${TAEMI:-.venv/bin/taemi}
PY=${PY:-.venv/bin/python}
SCALE=${1:-0.1}
OUT=benchmarks/results/recommended
DATASETS=${DATASETS:-"shared-s11:shared:11:0 disjoint-s11:disjoint:11:0 shared-s12-text1:shared:12:1"}
for spec in $DATASETS; do
  IFS=: read -r ds regime seed meaning <<< "$spec"
  ds="$ds-x$SCALE"
  args=(configs/recommended.yaml -q --set synth.scale="$SCALE" --set synth.seed="$seed"
        --set synth.seed_videos="$regime" --set synth.text_meaning="$meaning"
        --set data.root="data/rb-$ds" --set folds.path="folds/rb-$ds/folds.csv")
  for p in models ensembles submissions reports runs; do
    args+=(--set "paths.$p=$p/rb-$ds/chosen")
  done
  /usr/bin/time -f "$ds	retrieval	%e	%M" -a -o "$OUT/levers-times.tsv" $TAEMI stack "${args[@]}" \
    --set 'stack.meta_features=[retrieval]' --set stack.name=recommended-stack-retrieval \
    > "$OUT/$ds-retrieval.log" 2>&1
  $PY - "$ds" <<'PY'
import json, sys
ds = sys.argv[1]
cv = json.load(open(f"ensembles/rb-{ds}/chosen/recommended-stack-retrieval/cv.json"))
board = cv["leaderboard"]
print(ds, json.dumps(cv["retrieval"]), {k: round(board[k]["heldout_test"]["mean"], 4) for k in
      ("lightgbm stack, no retrieval", "lightgbm stack, retrieval", "lightgbm stack")})
PY
  $PY benchmarks/bench_refit.py "models/rb-$ds/chosen" > "$OUT/$ds-refit.log" 2>&1 \
    || { echo "refit $ds failed: $OUT/$ds-refit.log"; exit 1; }
done
