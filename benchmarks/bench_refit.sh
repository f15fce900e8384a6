#!/usr/bin/env bash
# Refit on every labelled row, as the kit does it (`experiments.<name>.refit`), on and off,
# over bench_recommended.sh's finished runs (scale 0.1, the three datasets), for the chosen
# recipe and the kit's defaults, each stacked as configs/recommended.yaml stacks (LightGBM
# with retrieval). The fold jobs are current: only the refit jobs train.
#   bash benchmarks/bench_refit.sh          -> benchmarks/results/refit.md
# Ends with each run as its config's `refit: auto` leaves it.
set -euo pipefail
cd "$(dirname "$0")/.."
TAEMI=${TAEMI:-.venv/bin/taemi}
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results/refit
mkdir -p "$OUT"
: > "$OUT/times.tsv"
for spec in shared-s11:shared:11:0 disjoint-s11:disjoint:11:0 shared-s12-text1:shared:12:1; do
  IFS=: read -r ds regime seed meaning <<< "$spec"; ds="$ds-x0.1"
  for recipe in chosen defaults; do
    args=(configs/recommended.yaml -q --set synth.scale=0.1 --set synth.seed="$seed"
          --set synth.seed_videos="$regime" --set synth.text_meaning="$meaning"
          --set data.root="data/rb-$ds" --set folds.path="folds/rb-$ds/folds.csv")
    [ "$recipe" = defaults ] && args+=(--set tune=null)
    for p in models ensembles submissions reports runs; do
      args+=(--set "paths.$p=$p/rb-$ds/$recipe")
    done
    for mode in true false auto; do
      set_refit=()
      for m in rec-taemi rec-audio rec-fusion; do
        set_refit+=(--set "experiments.$m.refit=$mode")
      done
      /usr/bin/time -f "$ds	$recipe	$mode	%e	%M" -a -o "$OUT/times.tsv" \
        $TAEMI train "${args[@]}" "${set_refit[@]}" > "$OUT/$ds-$recipe-$mode.log" 2>&1
      [ "$mode" = auto ] && continue  # auto is one of the two: its decision is in cv.json
      $TAEMI stack "${args[@]}" "${set_refit[@]}" --set stack.name="refit-$mode" \
        >> "$OUT/$ds-$recipe-$mode.log" 2>&1
      $PY benchmarks/bench_refit.py row "models/rb-$ds/$recipe" "ensembles/rb-$ds/$recipe" \
        "$ds" "$recipe" "$mode" >> "$OUT/rows.jsonl"
    done
  done
done
$PY benchmarks/bench_refit.py table "$OUT/rows.jsonl" > benchmarks/results/refit.md
cat benchmarks/results/refit.md
