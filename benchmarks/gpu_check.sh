#!/usr/bin/env bash
# The GPU path, measured on a lent device machine (see benchmarks/RESULTS.md):
#   training throughput and achieved FLOP/s (bf16 and fp32), and one fold trained through
#   `taemi train` on CUDA with bf16 autocast, twice, to check it runs and is repeatable.
# Expects: pydantic wheels in .whl/ (the device image lacks pydantic), output to $OUT.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/pydantic*.whl \
  .whl/annotated_types*.whl .whl/typing_inspection*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 TAEMI_QUIET=1
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
time python3 -m taemi.cli synth data/gpu --scale 0.5 --workers 16 -q | tee -a "$OUT/gpu.txt"
set -- configs/full.yaml --set data.root=data/gpu --set synth.scale=0.5 --set cache.workers=16 \
  --set folds.path=folds/gpu/folds.csv
python3 benchmarks/bench_train.py "$@" --models taemi taemi_base fusion --batch 256 --steps 40 \
  --bf16 --out "$OUT/train_gpu_bf16.json"
python3 benchmarks/bench_train.py "$@" --models taemi taemi_base --batch 256 --steps 40 \
  --out "$OUT/train_gpu_fp32.json"
for run in a b; do
  /usr/bin/time -v python3 -m taemi.cli train "$@" -q --set train.bf16=true \
    --set train.batch_size=256 --set train.epochs=6 --set paths.models=models/gpu-$run \
    --set 'experiments.full-taemi.seeds=[0]' --set 'experiments.full-taemi.folds=[0]' \
    --set 'experiments.full-taemi.backbones=[vit-w2v]' 2> "$OUT/time_$run.txt" | tee -a "$OUT/gpu.txt"
  cp models/gpu-$run/full-taemi/vit-w2v/seed0/fold0/metrics.csv "$OUT/metrics_$run.csv"
done
python3 - <<'PY' | tee -a "$OUT/gpu.txt"
import pandas as pd
a = pd.read_csv("models/gpu-a/full-taemi/oof.csv"); b = pd.read_csv("models/gpu-b/full-taemi/oof.csv")
cols = a.columns[2:]
print("max |a-b| over OOF predictions:", float((a[cols] - b[cols]).abs().max().max()))
PY
