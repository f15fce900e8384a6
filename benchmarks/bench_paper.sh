#!/usr/bin/env bash
# taemi_paper against the kit's taemi, fusion and unimodal audio, with and without the
# gate x intensity head (configs/paper.yaml), then the robustness of both TAEMIs and the
# table (benchmarks/bench_paper.py -> benchmarks/results/paper.md, paper.json).
# Seed 0 of every experiment runs first, then seed 1 of both TAEMIs, seed 2 of the kit's
# (what a third seed buys: benchmarks/bench_levers.py) and seed 1 of the gate heads, so a
# run cut short still compares every model. Done jobs are skipped: a second run fills in what
# is missing. One torch thread per run (OMP_NUM_THREADS=1): two runs side by side (this and
# bench_levers.sh) use 2 cores best.
# Usage: bash benchmarks/bench_paper.sh [experiment ...]
set -euo pipefail
cd "$(dirname "$0")/.."
TAEMI=${TAEMI:-.venv/bin/taemi}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
train() {  # experiment, seeds
  echo "== $1 seeds $2 $(date +%T)"
  /usr/bin/time -f "$1 seeds $2: %e s wall, %M KB peak" \
    $TAEMI train configs/paper.yaml -q -e "$1" --set "experiments.$1.seeds=$2"
}
if [ $# -gt 0 ]; then
  for name in "$@"; do train "$name" "[0, 1]"; done
else
  for name in paper-taemi paper-audio paper-fusion paper-taemi-paper paper-taemi-gate \
      paper-taemi-paper-gate; do
    train "$name" "[0]"
  done
  for name in paper-taemi paper-taemi-paper; do
    train "$name" "[0, 1]"
  done
  train paper-taemi "[0, 1, 2]"
  for name in paper-taemi-gate paper-taemi-paper-gate; do
    train "$name" "[0, 1]"
  done
fi
for name in paper-taemi-paper paper-taemi; do
  [ -f "models/$name/cv.json" ] && $TAEMI robustness "$name" -q
done
.venv/bin/python benchmarks/bench_paper.py
