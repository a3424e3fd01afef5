"""Instrumentation benchmarks: what tracing, counting and checkpointing cost.

Run: ``.venv/bin/python benchmarks/bench_instrument.py [--quick]``.

All ratios are taken in one process from interleaved timings (baseline, variant,
baseline, variant, ...) and reported as ratios of medians: these machines are shared and
noisy, and only same-process ratios mean anything. BLAS is pinned to one thread, so the
process's CPU time measures the work done; it is printed first, since wall time on a
machine whose two cores are shared with other jobs swings by 2x from round to round.

1. No listener: the engine's ``apply``/``backward`` path is untouched by this package (it
   only tests ``if listeners:``). A second copy of the package without ``instrument/``
   (where the trace lives) and the old ``trace.py`` path is imported side by side, and a
   chain of small ops is timed on both, interleaved, after every instrument was used once.
   Target 1.00 (within 2%).
2. A trace recording everything around the digits training step (batch 128, 64-128-10
   MLP, softmax cross-entropy, SGD). Target <= 1.5x the untraced step.
3. Checkpointing a 64-layer MLP (width 512, batch 256, float32) with 8 segments against no
   checkpointing: peak saved-for-backward bytes (target <= 0.3x) and step time (target
   <= 1.4x). PyTorch's torch.utils.checkpoint measured 0.28x and 1.33x on this machine.

This is a benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import backprop_lab as bl  # noqa: E402
from backprop_lab import nn, optim  # noqa: E402
from backprop_lab.tensor import MODE  # noqa: E402

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


def alternate(fns: dict[str, Callable[[], object]], rounds: int, inner: int = 1):
    """Median seconds per call of each function, alternating them call group by group.

    Returns ``{name: (wall, cpu)}``: wall-clock time (perf_counter) and this process's CPU
    time (process_time). With BLAS pinned to one thread the CPU time is the work done; it
    is far less disturbed than wall time when other jobs share the machine's cores.
    """
    for fn in fns.values():
        for _ in range(max(1, inner)):
            fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    pc, pt = time.perf_counter, time.process_time
    for _ in range(rounds):
        for name, fn in fns.items():
            t0, c0 = pc(), pt()
            for _ in range(inner):
                fn()
            cpu[name].append((pt() - c0) / inner)
            wall[name].append((pc() - t0) / inner)
    med = statistics.median
    return {k: (med(wall[k]), med(cpu[k])) for k in fns}


def ratio(t: dict, a: str, b: str) -> tuple[float, float]:
    return t[a][0] / t[b][0], t[a][1] / t[b][1]


def line(name: str, value: tuple[float, float], target: str) -> None:
    wall, cpu = value
    print(f"  {name:<54} cpu {cpu:6.3f}  wall {wall:6.3f}  (target {target})")


# -- 1. no listener -----------------------------------------------------------------------
def chain_step(lib, x) -> None:
    h = x
    for _ in range(25):
        h = lib.tanh(h * 1.01 + 0.1)
    h.sum().backward()
    x.grad = None


def load_without_instrumentation():
    """A second copy of this package, minus trace.py and instrument/ (and their imports in
    __init__.py), importable side by side as ``bl_uninstrumented``."""
    src = Path(bl.__file__).resolve().parent
    tmp = Path(tempfile.mkdtemp(prefix="bl_bench_"))
    dst = tmp / "bl_uninstrumented"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("trace.py", "instrument",
                                                            "__pycache__"))  # fmt: skip
    init = dst / "__init__.py"
    lines = init.read_text().splitlines(keepends=True)
    init.write_text("".join(ln for ln in lines
                            if not ln.startswith(("from .trace", "from .instrument",
                                                  "from . import trace"))))  # fmt: skip
    sys.path.insert(0, str(tmp))
    atexit.register(shutil.rmtree, tmp, True)
    return importlib.import_module("bl_uninstrumented")


def bench_no_listener(rounds: int) -> None:
    plain = load_without_instrumentation()
    assert not hasattr(plain, "trace")
    x1 = bl.tensor(np.linspace(-1, 1, 8), requires_grad=True)
    x2 = plain.tensor(np.linspace(-1, 1, 8), requires_grad=True)
    with bl.trace(), bl.count(), bl.measure_memory(), bl.detect_anomaly():
        chain_step(bl, x1)  # use every instrument once, then leave
    assert MODE.listeners == ()
    t = alternate({"without": lambda: chain_step(plain, x2),
                   "with": lambda: chain_step(bl, x1)}, rounds, 10)  # fmt: skip
    with bl.count():
        c = alternate({"count": lambda: chain_step(bl, x1)}, rounds // 4 or 1, 10)["count"]
    print("1. no listener: 25 x (mul, add, tanh) + sum + backward on 8 floats")
    print(f"  engine copy without instrumentation {t['without'][1] * 1e6:.1f} us cpu, "
          f"with it imported and used {t['with'][1] * 1e6:.1f} us cpu")  # fmt: skip
    line("with instrumentation imported / without (no listener)", ratio(t, "with", "without"),
         "1.00 +- 0.02")  # fmt: skip
    print(f"  (for reference, with bl.count() active: {c[1] / t['with'][1]:.2f}x cpu)")


# -- 2. traced training step ---------------------------------------------------------------
def bench_trace(rounds: int) -> None:
    rng = np.random.default_rng(0)
    x = bl.tensor(rng.normal(size=(128, 64)))
    y = rng.integers(0, 10, 128)
    model = nn.MLP([64, 128, 10], activation="relu")
    opt = optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        opt.zero_grad()
        loss = bl.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    def traced() -> None:
        with bl.trace():
            step()

    def counted() -> None:
        with bl.count():
            step()

    def metered() -> None:
        with bl.measure_memory():
            step()

    t = alternate({"plain": step, "trace": traced, "count": counted, "memory": metered},
                  rounds)  # fmt: skip
    print("2. digits training step (batch 128, MLP 64-128-10, cross-entropy, SGD)")
    print(f"  untraced step {t['plain'][1] * 1e6:.0f} us cpu, traced {t['trace'][1] * 1e6:.0f} us")
    line("bl.trace() recording everything / untraced", ratio(t, "trace", "plain"), "<= 1.5")
    line("bl.count() / uncounted", ratio(t, "count", "plain"), "-")
    line("bl.measure_memory() / unmetered", ratio(t, "memory", "plain"), "-")


# -- 3. checkpointing ----------------------------------------------------------------------
def bench_checkpoint(rounds: int, depth: int, width: int, batch: int, segments: int) -> None:
    rng = np.random.default_rng(0)
    layers = []
    for _ in range(depth):
        layers.append(nn.Linear(width, width, init="he_normal", seed=rng, dtype="float32"))
        layers.append(nn.ReLU())
    params = [p for layer in layers for p in layer.parameters()]
    x = bl.tensor(rng.normal(size=(batch, width)), dtype="float32")
    y = rng.integers(0, width, batch)

    def plain() -> None:
        bl.zero_grad(params)
        h = x
        for layer in layers:
            h = layer(h)
        bl.cross_entropy(h, y).backward()

    def ckpt() -> None:
        bl.zero_grad(params)
        bl.cross_entropy(bl.checkpoint_sequential(layers, segments, x), y).backward()

    peaks = {}
    grads = {}
    for name, fn in (("plain", plain), ("ckpt", ckpt)):
        with bl.measure_memory() as m:
            fn()
        peaks[name] = m.peak
        grads[name] = [np.array(p.grad) for p in params]
    same = all(np.array_equal(a, b) for a, b in zip(grads["plain"], grads["ckpt"]))
    t = alternate({"plain": plain, "ckpt": ckpt}, rounds)
    print(f"3. checkpointing: {depth}-layer MLP, width {width}, batch {batch}, float32, "
          f"{segments} segments")  # fmt: skip
    print(
        f"  peak saved for backward: {peaks['plain'] / 2**20:.1f} MiB plain, "
        f"{peaks['ckpt'] / 2**20:.1f} MiB checkpointed; gradients identical: {same}"
    )
    print(f"  step {t['plain'][1] * 1e3:.0f} ms cpu plain, {t['ckpt'][1] * 1e3:.0f} ms cpu "
          "checkpointed")  # fmt: skip
    mem = peaks["ckpt"] / peaks["plain"]
    print(f"  {'peak saved memory, checkpointed / plain':<54} {mem:6.3f}  (target <= 0.3)")
    line("step time, checkpointed / plain", ratio(t, "ckpt", "plain"), "<= 1.4")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, smaller network")
    args = ap.parse_args(argv)
    ctx = threadpool_limits(1) if threadpool_limits is not None else None
    try:
        if args.quick:
            bench_no_listener(60)
            bench_trace(300)
            bench_checkpoint(3, 16, 256, 128, 4)
        else:
            bench_no_listener(300)
            bench_trace(2000)
            bench_checkpoint(7, 64, 512, 256, 8)
    finally:
        if ctx is not None:
            ctx.unregister() if hasattr(ctx, "unregister") else None


if __name__ == "__main__":
    main()
