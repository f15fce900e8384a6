#!/usr/bin/env bash
# Refit on every labelled row, as the kit does it (`experiments.<name>.refit`), on and off,
# over bench_recommended.sh's finished runs (scale 0.1, the three datasets), for the chosen
# recipe and the kit's defaults, each stacked as configs/recommended.yaml stacks (LightGBM
# with retrieval, its LightGBM stack; `stack.method: cv` is read off their leaderboards).
# The fold jobs are current: only the refit jobs train.
#   bash benchmarks/bench_refit.sh          -> benchmarks/results/refit.md
# Ends with each run as its config's `refit: auto` leaves it.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/rb_runs.sh
TAEMI=${TAEMI:-.venv/bin/taemi}
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results/refit
mkdir -p "$OUT"
: > "$OUT/times.tsv"
: > "$OUT/rows.jsonl"
for spec in $RB_DATASETS; do
  for recipe in chosen defaults; do
    rb_args "$spec" 0.1 "$recipe"
    args=("${ARGS[@]}" --set stack.method=lightgbm)
    ds=$DS
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
