#!/usr/bin/env bash
# Issue 21's levers on the recommended command's finished runs (bench_recommended.sh
# first, at scale 0.1): the retrieval meta-features in the stack on and off
# (bench_retrieval.sh), then refit on all labelled rows as the kit does it, on and off
# (bench_refit.sh).
#   bash benchmarks/bench_recommended_levers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash benchmarks/bench_retrieval.sh
bash benchmarks/bench_refit.sh
