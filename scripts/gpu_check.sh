#!/usr/bin/env bash
# The GPU check, as one script for a machine with an NVIDIA GPU (CUDA 12):
# installs CuPy into .venv if missing, runs the CuPy tests (which skip without a GPU),
# then the CPU-vs-GPU benchmark. Usage: bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -c "import backprop_lab" 2>/dev/null || .venv/bin/pip install -q -e . pytest hypothesis
.venv/bin/python -c "import cupy" 2>/dev/null || .venv/bin/pip install -q -e '.[gpu]'
.venv/bin/backprop-lab doctor
.venv/bin/python -m pytest tests/test_gpu.py -q -rs
.venv/bin/python benchmarks/bench_gpu.py
