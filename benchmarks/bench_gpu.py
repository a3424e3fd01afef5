"""CPU (NumPy) against GPU (CuPy) for the same training step, in one process.

Run on a GPU machine: ``python benchmarks/bench_gpu.py`` (scripts/gpu_check.sh runs it
after the GPU tests). Prints seconds per step and the speed-up; asserts nothing.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import backprop_lab as bl  # noqa: E402
from backprop_lab.backend import _cupy_gpu_status  # noqa: E402


def step_time(backend, sizes, batch, steps=20):
    with bl.use_backend(backend):
        model = bl.nn.MLP(sizes, seed=0, dtype="float32")
        opt = bl.optim.SGD(model.parameters(), lr=1e-3)
        rng = np.random.default_rng(0)
        x = bl.tensor(rng.standard_normal((batch, sizes[0])), dtype="float32")
        y = bl.tensor(rng.integers(0, sizes[-1], batch))
        sync = (lambda: None) if backend == "numpy" else _cupy_sync
        times = []
        for i in range(steps + 3):
            sync()
            t0 = time.perf_counter()
            loss = bl.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sync()
            if i >= 3:
                times.append(time.perf_counter() - t0)
        return statistics.median(times)


def _cupy_sync():
    import cupy

    cupy.cuda.Device().synchronize()


def main():
    ok, why = _cupy_gpu_status()
    print(f"GPU: {why}")
    if not ok:
        print("no usable GPU here: nothing to compare")
        return 0
    for sizes, batch in [([784, 512, 512, 10], 256), ([784, 4096, 4096, 10], 1024)]:
        cpu = step_time("numpy", sizes, batch)
        gpu = step_time("cupy", sizes, batch)
        print(f"{sizes} batch {batch}: CPU {cpu * 1e3:8.2f} ms  GPU {gpu * 1e3:8.2f} ms  "
              f"speed-up {cpu / gpu:6.1f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
