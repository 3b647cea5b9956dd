#!/usr/bin/env bash
# GPU suite (issue 19, item 4): the accelerator tests, then the timing table, in under 10 minutes.
#
#   benchmarks/gpu_suite.sh              # on a CUDA machine (fails early without one)
#   benchmarks/gpu_suite.sh --cpu-smoke  # tiny sizes on the CPU: proves the script and every row run
#
# Steps (each under its own time limit, so the whole stays within 10 min):
#   1. pytest -m gpu  — device == CPU results, FBP quality, SD2Iu fp32 / amp / amp+compile quality,
#                       ParallaxNet amp+compile, batch peak fit, Noise2Inverse (tests/test_gpu.py and the
#                       CUDA parallax-operator test); device from $XRDW_TEST_DEVICE (cpu in --cpu-smoke).
#   2. benchmarks/bench_gpu.py --device cuda — FBP stack rate (121x121x2000, 512x512x200), SD2Iu s/epoch
#      at 256² and 779² (fp32, amp, amp+compile), ParallaxNet s/epoch (121x121x250), Noise2Inverse
#      steps/s, batch peak fit pixels/s (float64, float32).
#   3. benchmarks/bench_peakfit.py --device cuda — the batch fit against scipy (agreement and speed-up).
# Output: everything on stdout and in $OUT_DIR (default gpu_suite_out/): pytest.txt, timings.txt,
# peakfit.txt; the exit status is non-zero when a step failed.
# Python: $PYTHON (default: python3); run from anywhere (the script cds to the repository root).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT_DIR:-gpu_suite_out}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "${1:-}" = "--cpu-smoke" ]; then
    export XRDW_TEST_DEVICE=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    DEVICE=cpu; SMOKE=(--smoke); PEAKFIT=(--size 32 --scipy-pixels 100)
    LIMITS=(300 300 120)
elif [ -n "${1:-}" ]; then
    echo "usage: $0 [--cpu-smoke]" >&2; exit 2
else
    export XRDW_TEST_DEVICE=cuda
    DEVICE=cuda; SMOKE=(); PEAKFIT=(--size 256 --scipy-pixels 500)
    LIMITS=(240 300 60)
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_suite: torch sees no CUDA device (use --cpu-smoke for a CPU check)" >&2; exit 3
    fi
fi

"$PY" - <<'EOF' | tee "$OUT_DIR/env.txt"
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"devices: {[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or 'none'}")
EOF

status=0
step() {  # step NAME LIMIT_S LOGFILE CMD...
    local name=$1 limit=$2 log=$3; shift 3
    local t0=$SECONDS
    echo "=== $name (limit ${limit} s)"
    timeout "$limit" "$@" 2>&1 | tee "$OUT_DIR/$log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || status=1
}

step "pytest -m gpu" "${LIMITS[0]}" pytest.txt "$PY" -m pytest -q -m gpu -p no:cacheprovider -o addopts=-rs \
    tests/test_gpu.py tests/test_parallax_op.py
step "timings" "${LIMITS[1]}" timings.txt "$PY" benchmarks/bench_gpu.py --device "$DEVICE" "${SMOKE[@]}"
step "batch peak fit vs scipy" "${LIMITS[2]}" peakfit.txt "$PY" benchmarks/bench_peakfit.py --device "$DEVICE" \
    "${PEAKFIT[@]}"
echo "gpu_suite: total $SECONDS s, $([ $status -eq 0 ] && echo 'all steps passed' || echo 'SOME STEPS FAILED')"
exit $status
