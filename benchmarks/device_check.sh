#!/usr/bin/env bash
# The GPU check of issue #14, as one command on a lent GPU machine (torch 2.11, Python 3.12 there,
# our packages not): install the wheels `make wheels` built here into .whl/, run the CUDA tests and
# benchmarks/gpu.py, and leave every result under $OUT. Run from the repository root:
#   bash benchmarks/device_check.sh            (device tool: carry [".whl"], timeout 540 or less)
set -uo pipefail
OUT=${OUT:-device-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the wheels failed" | tee "$OUT/status"; exit 1; }
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print(torch.__version__, torch.version.cuda)"; } > "$OUT/device.txt" 2>&1
# The CUDA tests only (the rest is CI's): the core's and each plugin's, skipped nowhere here.
timeout 200 python3 -m pytest -q -p no:cacheprovider --import-mode=importlib -o addopts="" \
    tests/gpu plugins/*/tests/*_cuda.py 2>&1 | tee "$OUT/cuda-tests.log"
echo "cuda tests: exit ${PIPESTATUS[0]}" >> "$OUT/status"
timeout 280 python3 benchmarks/gpu.py --device cuda --json "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.log"
echo "gpu.py: exit ${PIPESTATUS[0]}" >> "$OUT/status"
cat "$OUT/status"
