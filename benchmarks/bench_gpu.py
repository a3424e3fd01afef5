"""CPU (NumPy) against GPU (CuPy): Chapter 14's throughput sweep and a training step.

Run on a GPU machine: ``python benchmarks/bench_gpu.py`` (``scripts/gpu_check.sh`` runs it
after the GPU tests). On a machine without a GPU it prints the CPU half and says why the
GPU half is missing; it never invents a GPU number. Asserts nothing.

1. Chapter 14's sweep: GFLOP/s of the engine's training step (forward and backward of a
   256-512-512-10 MLP, float32, FLOPs from ``bl.count``) against batch size, with the
   matrix-product peak as the roof. CPU figures are CPU time on one core (BLAS limited to
   one thread), as in the chapter; GPU figures are wall-clock time with synchronisation.
2. Seconds per full training step (with an SGD update) on both backends, and the speed-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import backprop_lab as bl  # noqa: E402
from backprop_lab.backend import _cupy_gpu_status  # noqa: E402
from backprop_lab.explore import batching as bt  # noqa: E402

SWEEP_SIZES = (256, 512, 512, 10)
SWEEP_BATCHES = [1, 4, 16, 64, 256, 1024, 4096]


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


def sweep(batches, gpu: bool) -> None:
    cpu_peak = bt.matmul_peak(1024)
    cpu = bt.throughput_sweep(batches, SWEEP_SIZES)
    print(f"\nChapter 14 sweep, MLP {list(SWEEP_SIZES)}, float32, forward + backward")
    print(f"CPU matmul peak (one core, CPU time): {cpu_peak:8.1f} GFLOP/s")
    if gpu:
        gpu_peak = bt.matmul_peak(4096, backend="cupy")
        res = bt.throughput_sweep(batches, SWEEP_SIZES, backend="cupy")
        print(f"GPU matmul peak (4096^2, wall time):  {gpu_peak:8.1f} GFLOP/s")
    print(f"{'batch':>6s} {'FLOPs':>14s} {'CPU GFLOP/s':>12s} {'of peak':>8s}", end="")
    print(f" {'GPU GFLOP/s':>12s} {'of peak':>8s} {'GPU/CPU':>8s}" if gpu else "")
    for i, b in enumerate(batches):
        g = cpu["gflops"][i]
        print(f"{b:6d} {cpu['flops'][i]:14,d} {g:12.1f} {g / cpu_peak:8.0%}", end="")
        if gpu:
            h = res["gflops"][i]
            print(f" {h:12.1f} {h / gpu_peak:8.0%} {h / g:8.1f}")
        else:
            print()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes")
    args = parser.parse_args(argv)
    ok, why = _cupy_gpu_status()
    print(f"GPU: {why}")
    if not ok:
        print("no usable GPU here: the GPU columns are left out (nothing is invented)")
    batches = SWEEP_BATCHES[:4] if args.quick else SWEEP_BATCHES
    sweep(batches, ok)
    if not ok:
        return 0
    print("\nFull training step with SGD (median of 20, wall time, all CPU threads)")
    for sizes, batch in [([784, 512, 512, 10], 256), ([784, 4096, 4096, 10], 1024)]:
        cpu = step_time("numpy", sizes, batch)
        gpu = step_time("cupy", sizes, batch)
        print(f"{sizes} batch {batch}: CPU {cpu * 1e3:8.2f} ms  GPU {gpu * 1e3:8.2f} ms  "
              f"speed-up {cpu / gpu:6.1f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
