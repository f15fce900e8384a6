#!/usr/bin/env bash
# The recommended command (configs/recommended.yaml: it chooses its recipe on the data)
# against the same members and stack with fixed recipes: the kit's train defaults and
# the recipe configs/recommended.yaml fixed before. Each dataset is generated in the
# organisers' layout at SCALE (default 0.1, 1,725 clips); none is the data any recipe or
# candidate was chosen on (the demo's generator seed is 0, the levers' full data seed 0).
#   bash benchmarks/bench_recommended.sh [SCALE]     -> benchmarks/results/recommended.md
# Resumable: a finished run is current and is not trained again.
set -euo pipefail
cd "$(dirname "$0")/.."
TAEMI=${TAEMI:-.venv/bin/taemi}
PY=${PY:-.venv/bin/python}
SCALE=${1:-0.1}
OUT=benchmarks/results/recommended
mkdir -p "$OUT"
# name: seed videos, generator seed, text_meaning
DATASETS=${DATASETS:-"shared-s11:shared:11:0 disjoint-s11:disjoint:11:0 shared-s12-text1:shared:12:1"}
for spec in $DATASETS; do
  IFS=: read -r ds regime seed meaning <<< "$spec"
  ds="$ds-x$SCALE"
  for recipe in chosen defaults fixed; do
    args=(configs/recommended.yaml -q --set synth.scale="$SCALE" --set synth.seed="$seed"
          --set synth.seed_videos="$regime" --set synth.text_meaning="$meaning"
          --set data.root="data/rb-$ds" --set folds.path="folds/rb-$ds/folds.csv"
          --set "stack.meta_features=[]")  # without retrieval: bench_retrieval.sh adds it
    for p in models ensembles submissions reports runs; do
      args+=(--set "paths.$p=$p/rb-$ds/$recipe")
    done
    case $recipe in
      defaults) args+=(--set tune=null) ;;
      fixed) args+=(--set tune=null --set train.epochs=7 --set train.batch_size=256
                    --set train.lr=0.003 --set train.patience=3) ;;
    esac
    /usr/bin/time -f "$ds	$recipe	%e	%M" -a -o "$OUT/times.tsv" $TAEMI run "${args[@]}" \
      > "$OUT/$ds-$recipe.log" 2>&1 || { echo "$ds $recipe failed: $OUT/$ds-$recipe.log"; exit 1; }
  done
done
$PY benchmarks/bench_recommended.py "$OUT" > benchmarks/results/recommended.md
cat benchmarks/results/recommended.md
