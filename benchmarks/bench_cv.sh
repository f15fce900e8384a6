#!/usr/bin/env bash
# CV against the held-out test for TAEMI: each fold grouping x selection rule, in both seed
# regimes (full-size generated data, subject-independent splits). Writes one experiment
# folder per run under models/cv-<regime>-<group_by>-<selection>/ (cv.json holds the OOF
# score, the single-model and the fold-mean held-out test); summarise them with
#   python benchmarks/bench_cv.py --taemi
# Usage: bash benchmarks/bench_cv.sh [shared|disjoint] ...   (both when none is given)
# TEXT_DROPOUT=0.1 bash benchmarks/bench_cv.sh ...: the auto:inner run on folds 0-1 with
# that text-dropout rate instead (models/cv-<regime>-auto-inner-text<rate>/), to weigh
# TAEMI's default (0.5) in each seed regime
set -euo pipefail
cd "$(dirname "$0")/.."
TAEMI=${TAEMI:-.venv/bin/taemi}
regimes=${*:-shared disjoint}
declare -A ROOT=([shared]=data/full [disjoint]=data/full-disjoint)
declare -A SEED=([shared]=shared [disjoint]=disjoint)
declare -A RUNS=(
  [shared]="auto:inner auto:fixed auto:outer seed:outer"
  [disjoint]="auto:inner auto:outer participant:inner"
)
if [ -n "${TEXT_DROPOUT:-}" ]; then
  RUNS=([shared]="auto:inner" [disjoint]="auto:inner")
fi
for regime in $regimes; do
  [ -f "${ROOT[$regime]}/synth.json" ] || \
    $TAEMI synth "${ROOT[$regime]}" --seed-videos "${SEED[$regime]}" -q
  for run in ${RUNS[$regime]}; do
    group=${run%%:*}; selection=${run##*:}
    name=cv-$regime-$group-$selection
    extra=()
    if [ -n "${TEXT_DROPOUT:-}" ]; then
      name=$name-text$TEXT_DROPOUT
      extra=(--set "experiments.cv-taemi.folds=[0,1]"
             --set "experiments.cv-taemi.model.modality_dropout={text: $TEXT_DROPOUT}")
    fi
    echo "== $name $(date +%T)"
    /usr/bin/time -f "$name: %e s wall, %M KB peak" $TAEMI train configs/cv.yaml -q \
      --set data.root="${ROOT[$regime]}" --set folds.group_by="$group" \
      --set folds.path="folds/cv-$regime-$group/folds.csv" \
      --set train.selection="$selection" --set paths.models="models/$name" "${extra[@]}"
  done
done
