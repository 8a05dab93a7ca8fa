#!/usr/bin/env bash
# The GPU check, for a lent CUDA machine with a ~10 minute budget:
#   1. build the extension for sm_90 (editable install into the machine's python3),
#   2. run the test suite on CUDA (the `cuda`-marked tests included),
#   3. run the benchmarks at the birds and COCO sizes,
#   4. print a short table last; with $OUT set, write the logs and JSON there.
# Without a CUDA device it says so and exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device visible; nothing to check."
  exit 0
fi
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"

t0=$(date +%s)
"$PY" -m pip install -q -e . --no-build-isolation --no-deps 2>&1 | tail -5 | tee "$OUT/build.log"
"$PY" -c "import attngan_fast, json; print(json.dumps(attngan_fast.extension_info()))" | tee -a "$OUT/build.log"
echo "build: $(( $(date +%s) - t0 )) s"

t0=$(date +%s)
timeout 300 "$PY" -m pytest -q -x -p no:cacheprovider tests -m "not slow" 2>&1 | tail -25 | tee "$OUT/tests.log"
tests_rc=${PIPESTATUS[0]}
echo "tests: rc=$tests_rc, $(( $(date +%s) - t0 )) s"

t0=$(date +%s)
ATTNGAN_BENCH_SIZES=full timeout 240 "$PY" -m pytest -q -p no:cacheprovider benchmarks/ --benchmark-only \
  --benchmark-json="$OUT/bench.json" 2>&1 | tail -40 > "$OUT/bench.log"
echo "benchmarks: rc=${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s"

echo
"$PY" benchmarks/report.py "$OUT/bench.json" --out "$OUT/table.md" || cat "$OUT/bench.log"
exit "$tests_rc"
