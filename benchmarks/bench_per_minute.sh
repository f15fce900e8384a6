#!/usr/bin/env bash
# Seeds and backbones per minute (issue 21's lever): on bench_recommended.sh's finished
# runs with the kit's train defaults (scale 0.1; no tuning, so a --set is what trains),
# what each addition buys the recommended stack (LightGBM with retrieval) against the
# minutes its new jobs took on 2 cores (2 workers, one thread each):
#   seeds   TAEMI with seeds [0, 1, 2] (10 more fold jobs)
#   logmel  every member on a second backbone, log-mel audio (15 more fold jobs)
#   wider   TAEMI at d_model 128 against 64, in the stack in its place (5 more fold jobs)
#   prototypes  a fourth member, `taemi_prototypes` (TAEMI ending in a mixture over learnt
#           label vectors: 5 more fold jobs)
# Each variant is trained and stacked beside the base; the base is regathered last. Rows
# append to results/per_minute/ (the table reads each variant's latest); VARIANTS and
# DATASETS pick a subset (bench_recommended.sh's names: benchmarks/rb_runs.sh).
#   bash benchmarks/bench_per_minute.sh      -> benchmarks/results/per_minute.md
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/rb_runs.sh
TAEMI=${TAEMI:-.venv/bin/taemi}
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results/per_minute
VARIANTS=${VARIANTS:-"base seeds logmel wider prototypes"}
mkdir -p "$OUT"
for spec in ${DATASETS:-"shared-s11:shared:11:0 disjoint-s11:disjoint:11:0"}; do
  rb_args "$spec" 0.1 defaults
  args=("${ARGS[@]}")
  ds=$DS
  for variant in $VARIANTS; do
    extra=()
    case $variant in
      seeds) extra=(--set "experiments.rec-taemi.seeds=[0, 1, 2]") ;;
      logmel) extra=(--set "backbones.mel-pn={text: text, visual: vit, audio: logmel}") ;;
      wider) extra=(--set "experiments.rec-wide={model: {name: taemi, head: gate, d_model: 128},
                    train: {loss: {mse: 1.0, pearson: 0.5, gate: 0.3}}}"
                    --set "stack.experiments=[rec-wide, rec-audio, rec-fusion]") ;;
      prototypes) extra=(--set "experiments.rec-protos={model: {name: taemi_prototypes}}"
                         --set "stack.experiments=[rec-taemi, rec-audio, rec-fusion, rec-protos]") ;;
    esac
    /usr/bin/time -f "$ds	$variant	%e	%M" -a -o "$OUT/times.tsv" \
      $TAEMI train "${args[@]}" "${extra[@]}" > "$OUT/$ds-$variant.log" 2>&1
    $TAEMI stack "${args[@]}" "${extra[@]}" --set stack.name="pm-$variant" \
      >> "$OUT/$ds-$variant.log" 2>&1
    $PY benchmarks/bench_per_minute.py row "$ds" "$variant" "models/rb-$ds/defaults" \
      "ensembles/rb-$ds/defaults/pm-$variant" >> "$OUT/rows.jsonl"
  done
  $TAEMI train "${args[@]}" > /dev/null 2>&1  # the base, as bench_recommended left it
done
$PY benchmarks/bench_per_minute.py table "$OUT/rows.jsonl" "$OUT/times.tsv" \
  > benchmarks/results/per_minute.md
cat benchmarks/results/per_minute.md
