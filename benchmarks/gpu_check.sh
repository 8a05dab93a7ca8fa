#!/usr/bin/env bash
# The GPU check, for a lent CUDA machine with a ~10 minute budget:
#   1. build the extension for sm_90 (editable install into the machine's python3),
#   2. run the test suite on CUDA (the `cuda`-marked tests included),
#   3. run the benchmarks at the birds and COCO sizes (ATTNGAN_BENCH_SIZES=full),
#   4. print a short table last; with $OUT set, write the logs and JSON there.
# Time: build ~2-3 min, tests <= 4 min, benchmarks <= 5.3 min (per-file limits below; about 3 expected).
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
timeout 240 "$PY" -m pytest -q -x -p no:cacheprovider tests -m "not slow" 2>&1 | tail -25 | tee "$OUT/tests.log"
tests_rc=${PIPESTATUS[0]}
echo "tests: rc=$tests_rc, $(( $(date +%s) - t0 )) s"

# one pytest run per benchmark file, each with its own time limit and JSON: a file that overruns
# loses only its own rows (about 4 minutes in all)
bench_rc=0
jsons=()
for spec in limits:20 attention:40 damsm:30 blocks:40 generate:70 training_step:120; do
  name=${spec%%:*}
  t0=$(date +%s)
  ATTNGAN_BENCH_SIZES=full timeout "${spec##*:}" "$PY" -m pytest -q -p no:cacheprovider "benchmarks/test_$name.py" \
    --benchmark-only --benchmark-json="$OUT/bench_$name.json" > "$OUT/bench_$name.log" 2>&1
  rc=$?
  echo "benchmarks/test_$name.py: rc=$rc, $(( $(date +%s) - t0 )) s"
  [ "$rc" -eq 0 ] || { bench_rc=$rc; tail -5 "$OUT/bench_$name.log"; }
  [ -s "$OUT/bench_$name.json" ] && jsons+=("$OUT/bench_$name.json")
done

echo
[ "${#jsons[@]}" -gt 0 ] && "$PY" benchmarks/report.py "${jsons[@]}" --out "$OUT/table.md"
[ "$tests_rc" -eq 0 ] && exit "$bench_rc"
exit "$tests_rc"
