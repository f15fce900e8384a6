#!/usr/bin/env bash
# End to end at GPU speed (benchmarks/RESULTS.md, "End-to-end inputs"), prepared to run on a
# lent GPU machine within 10 minutes, output to $OUT:
#   1. end-to-end training clips/s and peak GPU memory, base-size wav2vec2 and BERT built
#      from configs with random weights (no download), 12 s crops, batch 32: bf16 and
#      gradient checkpointing each on and off (benchmarks/bench_endtoend.py);
#   2. the input pipeline's rate on that machine's cores: waveform cache + DataLoader
#      workers against decoding per batch (benchmarks/bench_endtoend_inputs.py);
#   3. the 30-job frozen-feature grid of configs/full.yaml (quarter-size data, 3 epochs a
#      job, to fit the 10 minutes): one job at a time, four packed on the GPU
#      (ray.gpus_per_job=0.25), and packed with train.compile (benchmarks/gpu_pack.sh's
#      measure), when ray is installed there.
# Expects the pydantic wheels in .whl/ as benchmarks/gpu_check.sh does. Not yet run: no GPU
# was lent when it was written.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -c "import pydantic" 2>/dev/null || python3 -m pip install -q --no-index --no-deps \
  --no-compile --target /tmp/site .whl/pydantic*.whl .whl/annotated_types*.whl \
  .whl/typing_inspection*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 TAEMI_QUIET=1 HF_HUB_OFFLINE=1
CORES=$(nproc)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

# 1. the encoders' training step (about 2 minutes)
for bf16 in "" --bf16; do
  for ckpt in "" --checkpointing; do
    name="e2e${bf16:+_bf16}${ckpt:+_ckpt}"
    timeout 120 python3 benchmarks/bench_endtoend.py --batch 32 --seconds 12 --steps 6 \
      $bf16 $ckpt --out "$OUT/$name.json" 2>> "$OUT/errors.txt" | tee -a "$OUT/gpu.txt"
  done
done

# 2. the input pipeline with the machine's cores (about 2 minutes)
timeout 180 python3 benchmarks/bench_endtoend_inputs.py --clips 1000 \
  --workers $((CORES > 8 ? 8 : CORES - 1)) --out "$OUT/inputs.json" 2>> "$OUT/errors.txt" \
  | tee -a "$OUT/gpu.txt"

# 3. the frozen-feature grid, one job at a time against packed (about 5 minutes)
timeout 60 python3 -m taemi.cli synth data/gpu --scale 0.25 --workers "$CORES" -q
set -- configs/full.yaml --set data.root=data/gpu --set synth.scale=0.25 \
  --set cache.workers="$CORES" --set folds.path=folds/gpu/folds.csv \
  --set train.bf16=true --set train.batch_size=256 --set train.epochs=3
timeout 60 python3 -m taemi.cli cache "$@" -q > /dev/null
measure() {  # measure NAME ARGS...: wall seconds and peak GPU MiB of one `taemi train`
  local name=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/mem_$name.txt" &
  local sampler=$! start end
  start=$(date +%s.%N)
  timeout 150 python3 -m taemi.cli train "$@" -q --set paths.models="models/gpu-$name" \
    > /dev/null 2>> "$OUT/errors.txt"
  local rc=$?
  end=$(date +%s.%N)
  kill "$sampler"
  echo "$name rc=$rc wall_s=$(echo "$end - $start" | bc) peak_gpu_mib=$(sort -n "$OUT/mem_$name.txt" | tail -1)" \
    | tee -a "$OUT/pack.txt"
}
measure one-by-one "$@"
if python3 -c "import ray" 2>/dev/null; then
  measure packed-4 "$@" --executor ray --set ray.gpus_per_job=0.25 \
    --set ray.cpus_per_job=$((CORES / 4))
  measure packed-4-compiled "$@" --executor ray --set ray.gpus_per_job=0.25 \
    --set ray.cpus_per_job=$((CORES / 4)) --set train.compile=true
else
  echo "ray is not installed here: the packed runs were not measured" | tee -a "$OUT/pack.txt"
fi
