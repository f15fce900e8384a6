#!/usr/bin/env bash
# taemi_paper against the kit's taemi, fusion and unimodal audio, with and without the
# gate x intensity head (configs/paper.yaml), then the robustness of both TAEMIs and the
# table (benchmarks/bench_paper.py -> benchmarks/results/paper.md, paper.json).
# Seed 0 of every experiment runs first, then the other seeds, so that a run cut short
# still compares every model. Done jobs are skipped: a second run fills in what is missing.
# Usage: bash benchmarks/bench_paper.sh [experiment ...]   (all of configs/paper.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
TAEMI=${TAEMI:-.venv/bin/taemi}
experiments=${*:-paper-taemi-paper paper-taemi-paper-gate paper-taemi paper-taemi-gate paper-fusion \
paper-audio paper-taemi-paper-proj paper-taemi-paper-proj-gate paper-audio-gate \
paper-taemi-paper-lr1e-3 paper-taemi-paper-proj-lr1e-3}
for seeds in "[0]" ""; do
  for name in $experiments; do
    echo "== $name seeds ${seeds:-all} $(date +%T)"
    extra=()
    [ -n "$seeds" ] && extra=(--set "experiments.$name.seeds=$seeds")
    /usr/bin/time -f "$name: %e s wall, %M KB peak" \
      $TAEMI train configs/paper.yaml -q -e "$name" "${extra[@]}"
  done
done
for name in paper-taemi-paper paper-taemi; do
  [ -f "models/$name/cv.json" ] && $TAEMI robustness "$name" -q
done
.venv/bin/python benchmarks/bench_paper.py
