#!/usr/bin/env bash
# The retrieval stack on and off over bench_recommended.sh's finished runs (all 9), each
# with the LightGBM stack (the nested CV decides whether retrieval enters it).
#   bash benchmarks/bench_retrieval.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/rb_runs.sh
TAEMI=${TAEMI:-.venv/bin/taemi}
PY=${PY:-.venv/bin/python}
for recipe in chosen defaults fixed; do for spec in $RB_DATASETS; do
  rb_args "$spec" 0.1 "$recipe"
  /usr/bin/time -f "$DS retrieval stack %e s %M KB" $TAEMI stack "${ARGS[@]}" \
    --set 'stack.meta_features=[retrieval]' --set stack.method=lightgbm \
    --set stack.name=recommended-stack-retrieval > /dev/null
  $PY - "$DS" "$recipe" <<'PY'
import json, sys
ds = sys.argv[1]
cv = json.load(open(f"ensembles/rb-{ds}/{sys.argv[2]}/recommended-stack-retrieval/cv.json"))
b = cv["leaderboard"]
print(ds, sys.argv[2], {k: round(v, 4) if isinstance(v, float) else v for k, v in cv["retrieval"].items()},
      {k: (round(b[k]["cv"]["mean"], 4), round(b[k]["heldout_test"]["mean"], 4)) for k in
       ("lightgbm stack, no retrieval", "lightgbm stack, retrieval", "lightgbm stack")})
PY
done; done
