#!/usr/bin/env bash
# The score levers (configs/levers.yaml) against the kit's TAEMI at the same settings
# (configs/paper.yaml), then the table (benchmarks/bench_levers.py -> RESULTS.md figures).
# Done jobs are skipped: a second run fills in what is missing. One torch thread per run
# (OMP_NUM_THREADS=1): two runs side by side use the 2 cores best.
# Usage: bash benchmarks/bench_levers.sh [experiment ...]   (all lv-* of configs/levers.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
TAEMI=${TAEMI:-.venv/bin/taemi}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
experiments=${*:-lv-taemi-pn lv-audio-pn lv-fusion-pn lv-taemi-pn-gate lv-fusion-pn-gate lv-taemi-loss37 lv-taemi-avg3 \
lv-taemi-b128 lv-taemi-b512 lv-taemi-b512-loss37}
for name in $experiments; do
  echo "== $name $(date +%T)"
  /usr/bin/time -f "$name: %e s wall, %M KB peak" $TAEMI train configs/levers.yaml -q -e "$name"
done
