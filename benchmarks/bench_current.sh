#!/usr/bin/env bash
# One notion of current, at full size (benchmarks/RESULTS.md, "One notion of current"):
# the recommended run when everything is current, the same after the project is copied
# elsewhere (new paths, new mtimes), `taemi plan`, and the one-time cost of the content
# digests of the full data's feature files.
#
#   bash benchmarks/bench_current.sh [WORK]      (default WORK: /tmp/taemi-current)
#
# The grid trains 1 epoch a job (`--set train.epochs=1`): a current run checks keys, it
# trains nothing, so what it costs does not depend on the epochs; the artifacts are the
# recommended run's (15 jobs, two robustness tables, the stack, the submission, the report).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
TAEMI="${TAEMI:-$REPO/.venv/bin/taemi}"
PY="${PY:-$REPO/.venv/bin/python}"
WORK="${1:-/tmp/taemi-current}"
COPY="$WORK-copy"
OUT="$REPO/benchmarks/results/current"
mkdir -p "$WORK/configs" "$OUT"
cp "$REPO/configs/recommended.yaml" "$WORK/configs/"
ARGS=(configs/recommended.yaml --set tune=null --set train.epochs=1 -q)  # no search: it times keys
timed() {  # label, then the command; wall seconds and peak memory appended to times.tsv
  local label="$1"; shift
  /usr/bin/time -f "$label	%e	%M" -a -o "$OUT/times.tsv" "$@"
}
: > "$OUT/times.tsv"

cd "$WORK"
timed "run (a fresh WORK: synth, pack, train 15 jobs at 1 epoch, robustness, stack)" \
  "$TAEMI" run "${ARGS[@]}" > "$OUT/first.txt"
timed "run, everything current" "$TAEMI" run "${ARGS[@]}" > "$OUT/current.txt"
timed "run, everything current (again)" "$TAEMI" run "${ARGS[@]}" > /dev/null
timed "plan, everything current" "$TAEMI" plan "${ARGS[@]}" > "$OUT/plan.txt"
timed "plan after train.lr=0.001" "$TAEMI" plan "${ARGS[@]}" --set train.lr=0.001 \
  > "$OUT/plan-lr.txt"

rm -rf "$COPY"
timed "cp -r of the project" cp -r "$WORK" "$COPY"
cd "$COPY"
timed "copied: first run (every file's digest read once)" "$TAEMI" run "${ARGS[@]}" \
  > "$OUT/copied-first.txt"
timed "copied: run, everything current" "$TAEMI" run "${ARGS[@]}" > /dev/null
timed "copied: plan" "$TAEMI" plan "${ARGS[@]}" > "$OUT/copied-plan.txt"

# the digests alone: every feature file the recommended backbones read, bytes read cold
# from the page cache's point of view only if the machine has not read them recently
"$PY" - "$COPY/data/full" > "$OUT/digests.txt" <<'EOF'
import sys, time
from pathlib import Path
from taemi.identity import file_digest
root = Path(sys.argv[1])
files = [p for f in ("text", "vit", "wav2vec2") for d in (root / f, root / "test_data" / f)
         if d.is_dir() for p in d.iterdir() if p.suffix == ".pkl"]
start = time.perf_counter()
size = sum(p.stat().st_size for p in files)
for p in files:
    file_digest(p)
seconds = time.perf_counter() - start
print(f"{len(files)} files, {size / 1e9:.2f} GB, {seconds:.1f} s, "
      f"{size / 1e9 / seconds:.2f} GB/s")
EOF
grep -h "jobs\|leaderboard\|stack" "$OUT/copied-first.txt" | head -3 || true
cat "$OUT/times.tsv" "$OUT/digests.txt"
