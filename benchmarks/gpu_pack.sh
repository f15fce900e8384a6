#!/usr/bin/env bash
# One GPU, many fold jobs (benchmarks/RESULTS.md, "Scaling out"): the full 30-job grid of
# configs/full.yaml on one GPU, one job at a time (local executor) against jobs packed four
# to a GPU (Ray, ray.gpus_per_job=0.25), and packed with a compiled training step; wall time
# and peak GPU memory (nvidia-smi, sampled every second) for each.
# Expects what benchmarks/gpu_check.sh sets up (data/gpu, the pydantic wheels) plus ray in
# the environment; output to $OUT. Not yet run: no GPU was lent when it was written.
set -euo pipefail
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 TAEMI_QUIET=1
OUT=${OUT:-/tmp/out}
CORES=$(nproc)
set -- configs/full.yaml --set data.root=data/gpu --set synth.scale=0.5 \
  --set cache.workers="$CORES" --set folds.path=folds/gpu/folds.csv \
  --set train.bf16=true --set train.batch_size=256

measure() {  # measure NAME ARGS...: wall seconds and peak GPU MiB of one `taemi train`
  local name=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 1000 > "$OUT/mem_$name.txt" &
  local sampler=$!
  local start; start=$(date +%s.%N)
  python3 -m taemi.cli train "$@" -q --set paths.models="models/pack-$name"
  local end; end=$(date +%s.%N)
  kill "$sampler"
  echo "$name wall_s=$(echo "$end - $start" | bc) peak_gpu_mib=$(sort -n "$OUT/mem_$name.txt" | tail -1)" \
    | tee -a "$OUT/pack.txt"
}

measure one-by-one "$@"
measure packed-4 "$@" --executor ray --set ray.gpus_per_job=0.25 --set ray.cpus_per_job=$((CORES / 4))
measure packed-4-compiled "$@" --executor ray --set ray.gpus_per_job=0.25 \
  --set ray.cpus_per_job=$((CORES / 4)) --set train.compile=true
