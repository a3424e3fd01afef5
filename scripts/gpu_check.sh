#!/usr/bin/env bash
# The GPU check, as one script for a machine with an NVIDIA GPU (CUDA 12):
#   1. installs CuPy into .venv if missing and prints what the backend sees;
#   2. runs the CuPy tests (they skip, saying why, without a GPU);
#   3. runs benchmarks/bench_gpu.py: Chapter 14's throughput sweep (GFLOP/s of the training
#      step against batch size, CPU one core and GPU, each with its matmul roof) and the
#      CPU-vs-GPU training step;
#   4. executes Chapter 14 with the GPU present, so its section 14.5 cell measures and
#      draws the GPU curve; the executed copy goes to $OUT (default /tmp), never over the
#      stored notebook, whose outputs come from the machine that built the book.
# Usage: bash scripts/gpu_check.sh   (QUICK=1 for a shorter sweep)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-/tmp}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -c "import backprop_lab" 2>/dev/null || .venv/bin/pip install -q -e . pytest hypothesis
.venv/bin/python -c "import cupy" 2>/dev/null || .venv/bin/pip install -q -e '.[gpu]'
.venv/bin/backprop-lab doctor
.venv/bin/python -m pytest tests/test_gpu.py -q -rs
.venv/bin/python benchmarks/bench_gpu.py ${QUICK:+--quick}
if .venv/bin/python -c "import nbconvert, matplotlib" 2>/dev/null; then
    .venv/bin/jupyter nbconvert --to notebook --execute notebooks/14-batches-and-gpus.ipynb \
        --output-dir "$OUT" --output 14-batches-and-gpus.gpu.ipynb
    .venv/bin/python - "$OUT/14-batches-and-gpus.gpu.ipynb" <<'PYEOF'
import sys, nbformat
nb = nbformat.read(sys.argv[1], 4)
for cell in nb.cells:
    if cell.get("id") == "code-gpu":
        for out in cell.outputs:
            if out.get("output_type") == "stream":
                print(out["text"], end="")
PYEOF
else
    echo "nbconvert/matplotlib not installed: skipping the Chapter 14 notebook run (make setup installs them)"
fi
