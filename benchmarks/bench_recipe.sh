#!/usr/bin/env bash
# A recipe chosen on the data against fixed recipes (configs/recipe.yaml), in both seed
# regimes; then the table (CV, held-out test, the chosen recipe, wall time).
# Usage: bash benchmarks/bench_recipe.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TAEMI=${TAEMI:-.venv/bin/taemi}
PY=${PY:-.venv/bin/python}
for regime in shared disjoint; do
  set -- configs/recipe.yaml --set data.root=data/recipe-$regime \
    --set synth.seed_videos=$regime --set folds.path=folds/recipe-$regime/folds.csv \
    --set paths.models=models/recipe-$regime
  /usr/bin/time -f "$regime: %e s wall, %M KB peak" $TAEMI run "$@" -q
done
$PY - <<'PY'
import json, pathlib, yaml
for regime in ("shared", "disjoint"):
    for name in ("r-default", "r-fixed", "r-chosen"):
        cv = json.loads(pathlib.Path(f"models/recipe-{regime}/{name}/cv.json").read_text())
        print(f"{regime:9} {name:10} cv {cv['overall']['mean']:.4f}  test single "
              f"{cv['heldout_test_single']:.4f}  test mean {cv['heldout_test']['mean']:.4f}")
    for best in pathlib.Path("runs/tune").glob("recipe-r-chosen-*/best.yaml"):
        print(best, yaml.safe_load(best.read_text())["experiments"]["r-chosen"].get("train"))
PY
