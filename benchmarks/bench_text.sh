#!/usr/bin/env bash
# The text knob: configs/text.yaml at text_meaning 1.0 (data/full-text1, generated first),
# then 0.5 (data/full-text05, the same config with its paths overridden), and unimodal text
# at 0 on data/full (its TAEMI, audio and fusion are configs/paper.yaml's paper-taemi,
# paper-audio, paper-fusion), then the table (benchmarks/bench_text.py).
# Done jobs are skipped. Usage: bash benchmarks/bench_text.sh [level ...]   (1.0 0.5)
set -euo pipefail
cd "$(dirname "$0")/.."
TAEMI=${TAEMI:-.venv/bin/taemi}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for level in ${*:-1.0 0.5}; do
  tag=$([ "$level" = "1.0" ] && echo text1 || echo "text${level/./}")
  $TAEMI synth "data/full-$tag" --scale 1.0 --seed 0 --text-meaning "$level" --force
  for name in tx-text tx-taemi tx-audio tx-fusion; do
    echo "== $name at text_meaning $level $(date +%T)"
    /usr/bin/time -f "$name $level: %e s wall, %M KB peak" $TAEMI train configs/text.yaml -q \
      -e "$name" --set "data.root=data/full-$tag" --set "synth.text_meaning=$level" \
      --set "folds.path=folds/$tag/folds.csv" --set "paths.models=models/$tag"
  done
done
echo "== tx-text at text_meaning 0 $(date +%T)"
$TAEMI train configs/text.yaml -q -e tx-text --set data.root=data/full \
  --set folds.path=folds/cv-shared-auto/folds.csv --set paths.models=models/text0 \
  --set synth.text_meaning=0.0
.venv/bin/python benchmarks/bench_text.py
