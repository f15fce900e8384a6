#!/usr/bin/env bash
# The retrieval stack on and off over bench_recommended.sh's finished runs (all 9).
#   bash benchmarks/bench_retrieval.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for recipe in chosen defaults fixed; do for spec in shared-s11:shared:11:0 disjoint-s11:disjoint:11:0 shared-s12-text1:shared:12:1; do
  IFS=: read -r ds regime seed meaning <<< "$spec"; ds="$ds-x0.1"
  args=(configs/recommended.yaml -q --set synth.scale=0.1 --set synth.seed="$seed"
        --set synth.seed_videos="$regime" --set synth.text_meaning="$meaning"
        --set data.root="data/rb-$ds" --set folds.path="folds/rb-$ds/folds.csv")
  extra=()
  [ "$recipe" != chosen ] && extra+=(--set tune=null)
  [ "$recipe" = fixed ] && extra+=(--set train.epochs=7 --set train.batch_size=256 --set train.lr=0.003 --set train.patience=3)
  args+=("${extra[@]}")
  for p in models ensembles submissions reports runs; do args+=(--set "paths.$p=$p/rb-$ds/$recipe"); done
  /usr/bin/time -f "$ds retrieval stack %e s %M KB" .venv/bin/taemi stack "${args[@]}" --set 'stack.meta_features=[retrieval]' --set stack.name=recommended-stack-retrieval > /dev/null
  .venv/bin/python - "$ds" "$recipe" <<'PY'
import json, sys
ds = sys.argv[1]
cv = json.load(open(f"ensembles/rb-{ds}/{sys.argv[2]}/recommended-stack-retrieval/cv.json"))
b = cv["leaderboard"]
print(ds, sys.argv[2], {k: round(v, 4) if isinstance(v, float) else v for k, v in cv["retrieval"].items()},
      {k: (round(b[k]["cv"]["mean"], 4), round(b[k]["heldout_test"]["mean"], 4)) for k in
       ("lightgbm stack, no retrieval", "lightgbm stack, retrieval", "lightgbm stack")})
PY
done; done
