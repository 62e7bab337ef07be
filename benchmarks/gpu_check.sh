#!/usr/bin/env bash
# The GPU check of issue #8, as one script (a few minutes on a machine with CuPy and a GPU):
#   1. the test suite's GPU cases (pytest -m gpu: every CuPy-parametrised test and the parity tests)
#   2. the reference training step: tinyevo on CuPy vs tinyevo on NumPy vs PyTorch on the GPU
#   3. a short `tinyevo fit --backend cupy` on the bundled digits, in-process and with 8 workers,
#      and one generation with the backend chosen by TINYEVO_BACKEND and 2 workers
# Logs go to $OUT (default /tmp/tinyevo-gpu-check). Run from the repository root:
#   bash benchmarks/gpu_check.sh
# Every step runs even if one before it failed; the exit status is that of the first failure.
set -u -o pipefail
status=0
check() { local rc=$?; if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi; }
OUT=${OUT:-/tmp/tinyevo-gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-/tmp/cupy-kernel-cache}
PY=${PYTHON:-python3}
# A CuPy kernel cache carried from an earlier run saves compiling every kernel again.
if [ -f .gpu/cupy_cache.tgz ]; then mkdir -p "$CUPY_CACHE_DIR" && tar xzf .gpu/cupy_cache.tgz -C "$CUPY_CACHE_DIR"; fi

step() { echo; echo "=== $1 ($(date +%T))"; }

step "environment" | tee "$OUT/env.log"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import sys, numpy, scipy, cupy; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'scipy', scipy.__version__, 'cupy', cupy.__version__)"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee -a "$OUT/env.log"

step "pytest -m gpu" | tee "$OUT/pytest.log"
start=$(date +%s)
timeout "${PYTEST_TIMEOUT:-300}" $PY -m pytest -m gpu -q -rfE --tb=short \
    ${PYTEST_ARGS:-} 2>&1 | tee -a "$OUT/pytest.log"
check
echo "pytest: $(( $(date +%s) - start )) s" | tee -a "$OUT/pytest.log"

step "training step: CuPy vs NumPy vs PyTorch" | tee "$OUT/bench.log"
timeout "${BENCH_TIMEOUT:-150}" $PY benchmarks/bench_gpu.py "${BENCH_REPEATS:-30}" 2>&1 \
    | tee -a "$OUT/bench.log"
check

for workers in 1 ${FIT_WORKERS:-8}; do
    step "tinyevo fit --backend cupy --workers $workers" | tee -a "$OUT/fit.log"
    rm -rf /tmp/tinyevo-gpu-run
    start=$(date +%s)
    timeout "${FIT_TIMEOUT:-150}" $PY -c "from tinyevo.cli import main; raise SystemExit(main())" \
        fit --backend cupy --workers "$workers" --no-progress --dir /tmp/tinyevo-gpu-run \
        ${FIT_ARGS:---generations 3} 2>&1 | tee -a "$OUT/fit.log"
    check
    echo "fit: $(( $(date +%s) - start )) s wall" | tee -a "$OUT/fit.log"
done

# The backend chosen by the environment at import (worker processes must still reach the GPU).
step "TINYEVO_BACKEND=cupy tinyevo fit --workers 2 --generations 1" | tee -a "$OUT/fit.log"
rm -rf /tmp/tinyevo-gpu-run
TINYEVO_BACKEND=cupy timeout "${FIT_TIMEOUT:-150}" $PY -c \
    "from tinyevo.cli import main; raise SystemExit(main())" fit --workers 2 --no-progress \
    --no-plots --dir /tmp/tinyevo-gpu-run --generations 1 2>&1 | tee -a "$OUT/fit.log"
check

tar czf "$OUT/cupy_cache.tgz" -C "$CUPY_CACHE_DIR" . 2>/dev/null || true
exit $status
