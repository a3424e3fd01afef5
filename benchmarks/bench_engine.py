"""Engine benchmarks: backprop_lab against hand-written NumPy, measured in one process.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_engine.py [--quick]``).

Every workload is timed as interleaved rounds (baseline, engine, baseline, engine, ...)
and reported as the ratio of medians, because these machines are noisy and only a ratio
taken in the same process means anything. The baseline ("the floor") is the same maths
written by hand in NumPy, forward and backward. Rows: the engine in eager mode, the same
step under ``bl.compile`` (recorded once, then replayed), and PyTorch when installed. Two
more ratios: what this engine's run-time checks cost on the chain (the engine against a
copy of itself with the checks' conditions set to False), and what the instrumentation
hooks cost with no listener (against a copy without ``instrument/``). The summary at the
end lists every target with the floor beside it. Times are this thread's CPU time
(``time.thread_time``), which other processes on a shared machine disturb far less than
wall time; with BLAS pinned to one thread all of the work runs on this thread. Targets
(from the engine issue) are printed beside each ratio. BLAS is pinned to one thread
(threadpoolctl) for both sides; if PyTorch is installed the same workloads run in PyTorch
with its threads pinned too.

This is a benchmark, not a test: nothing here asserts a wall time.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import backprop_lab as bl  # noqa: E402

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, inner: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in interleaved rounds."""
    for fn in fns.values():  # warm up
        for _ in range(max(1, inner // 4)):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.thread_time()
            for _ in range(inner):
                fn()
            samples[name].append((time.thread_time() - t0) / inner)
    return {k: statistics.median(v) for k, v in samples.items()}


# --------------------------------------------------------------------------------------
# Workload 1 and 2: an MLP training step (softmax cross-entropy, SGD)
# --------------------------------------------------------------------------------------
def make_mlp_problem(sizes, batch, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], batch)
    ws = [
        (rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(dtype)
        for a, b in zip(sizes[:-1], sizes[1:])
    ]
    bs = [np.zeros(b, dtype=dtype) for b in sizes[1:]]
    return x, y, ws, bs


def numpy_mlp_step(x, y, ws, bs, lr):
    """The floor: forward, hand-written backward, in-place SGD; ReLU hidden layers."""
    n = x.shape[0]
    acts = [x]
    pre = []
    h = x
    for i, (w, b) in enumerate(zip(ws, bs)):
        z = h @ w + b
        if i < len(ws) - 1:
            pre.append(z)
            h = np.maximum(z, 0)
            acts.append(h)
        else:
            logits = z
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    p = e / s
    loss = -(shifted[np.arange(n), y] - np.log(s[:, 0])).mean()
    dz = p
    dz[np.arange(n), y] -= 1
    dz /= n
    for i in range(len(ws) - 1, -1, -1):
        dw = acts[i].T @ dz
        db = dz.sum(axis=0)
        if i > 0:
            dz = dz @ ws[i].T
            dz *= pre[i - 1] > 0  # in place on a fresh array: the fastest ReLU mask here
        ws[i] -= lr * dw
        bs[i] -= lr * db
    return loss


def engine_mlp(ws, bs):
    return [bl.tensor(w, requires_grad=True) for w in ws], [
        bl.tensor(b, requires_grad=True) for b in bs
    ]


def engine_mlp_step(x, y, ws, bs, lr):
    h = x
    last = len(ws) - 1
    for i, (w, b) in enumerate(zip(ws, bs)):
        h = h @ w + b
        if i < last:
            h = bl.relu(h)
    loss = bl.cross_entropy(h, y)
    loss.backward()
    for p in ws:
        p.data -= lr * p.grad
        p.grad = None
    for p in bs:
        p.data -= lr * p.grad
        p.grad = None
    return loss


def torch_mlp(ws, bs):
    import torch

    return [torch.tensor(w, requires_grad=True) for w in ws], [
        torch.tensor(b, requires_grad=True) for b in bs
    ]


def torch_mlp_step(x, y, ws, bs, lr):
    import torch

    h = x
    last = len(ws) - 1
    for i, (w, b) in enumerate(zip(ws, bs)):
        h = h @ w + b
        if i < last:
            h = torch.relu(h)
    loss = torch.nn.functional.cross_entropy(h, y)
    loss.backward()
    with torch.no_grad():
        for p in ws + bs:
            p -= lr * p.grad
            p.grad = None
    return loss


def bench_mlp(name, sizes, batch, dtype, target, rounds, inner, torch_ok):
    x, y, ws, bs = make_mlp_problem(sizes, batch, dtype)
    np_ws, np_bs = [w.copy() for w in ws], [b.copy() for b in bs]
    e_ws, e_bs = engine_mlp(ws, bs)
    ex, ey = bl.tensor(x), bl.tensor(y)
    lr = 1e-3
    # Same maths: one step from the same start gives the same loss and weights.
    l0 = numpy_mlp_step(x, y, [w.copy() for w in ws], [b.copy() for b in bs], lr)
    l1 = engine_mlp_step(ex, ey, *engine_mlp([w.copy() for w in ws], [b.copy() for b in bs]), lr)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    assert abs(float(l0) - l1.item()) <= tol * max(1.0, abs(float(l0))), (l0, l1.item())
    fns = {
        "numpy (floor)": lambda: numpy_mlp_step(x, y, np_ws, np_bs, lr),
        "backprop_lab": lambda: engine_mlp_step(ex, ey, e_ws, e_bs, lr),
    }
    if torch_ok:
        import torch

        t_ws, t_bs = torch_mlp(ws, bs)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        fns["pytorch"] = lambda: torch_mlp_step(tx, ty, t_ws, t_bs, lr)
    t = interleaved(fns, rounds, inner)
    report(name, t, "numpy (floor)", {"backprop_lab": target},
           short=f"{name.split(' (')[0]}, {np.dtype(dtype).name}")  # fmt: skip
    return t


SUMMARY: list[tuple[str, float, float, float]] = []  # (what, floor us, measured us, target)


def report(name, times, base, targets=None, short=None):
    """Print one workload; ``targets`` maps a row name to its target ratio."""
    targets = targets or {}
    short = short or name.split(" (")[0]
    print(f"\n{name}")
    for k, v in times.items():
        ratio = v / times[base]
        mark = ""
        if k in targets:
            mark = f"   target <= {targets[k]:.2f}x: {'met' if ratio <= targets[k] else 'MISSED'}"
            SUMMARY.append((f"{short}: {k}", times[base] * 1e6, v * 1e6, targets[k]))
        print(f"  {k:22} {v * 1e6:10.1f} us   {ratio:5.2f}x{mark}")


# --------------------------------------------------------------------------------------
# Workload 3: per-op overhead on a chain of small elementwise ops
# --------------------------------------------------------------------------------------
CHAIN = 100


def engine_chain(x, c):
    h = x
    for _ in range(CHAIN // 4):
        h = h * c  # mul with a tensor that needs no grad
        h = bl.tanh(h)
        h = h + c
        h = bl.sin(h)
    loss = h.sum()
    loss.backward()
    g = x.grad
    x.grad = None
    return g


def numpy_chain(x, c):
    """Forward and hand-written backward of the same chain (what the ops cost by themselves)."""
    saved = []
    h = x
    for _ in range(CHAIN // 4):
        h = h * c
        h = np.tanh(h)
        saved.append(h)
        h = h + c
        saved.append(h)
        h = np.sin(h)
    g = np.ones_like(h)
    for i in range(CHAIN // 4 - 1, -1, -1):
        g = g * np.cos(saved[2 * i + 1])
        t = saved[2 * i]
        g = g * (1 - t * t)
        g = g * c
    return g


def torch_chain(x, c):
    import torch

    h = x
    for _ in range(CHAIN // 4):
        h = h * c
        h = torch.tanh(h)
        h = h + c
        h = torch.sin(h)
    h.sum().backward()
    g = x.grad
    x.grad = None
    return g


def bench_chain(rounds, inner, torch_ok):
    rng = np.random.default_rng(0)
    xd, cd = rng.standard_normal((8, 8)), rng.standard_normal((8, 8)) * 0.5
    x, c = bl.tensor(xd, requires_grad=True), bl.tensor(cd)
    compiled = bl.compile(engine_chain, fallback=False)
    np.testing.assert_allclose(bl.to_numpy(engine_chain(x, c)), numpy_chain(xd, cd), rtol=1e-10)
    eager = engine_chain(x, c)
    for _ in range(2):  # recorded, then replayed: bit-identical to eager mode
        assert np.array_equal(compiled(x, c), eager)
    fns = {
        "numpy (floor)": lambda: numpy_chain(xd, cd),
        "backprop_lab": lambda: engine_chain(x, c),
        "backprop_lab compiled": lambda: compiled(x, c),
    }
    if torch_ok:
        import torch

        tx = torch.tensor(xd, requires_grad=True)
        tc = torch.tensor(cd)
        fns["pytorch"] = lambda: torch_chain(tx, tc)
    t = interleaved(fns, rounds, inner)
    n_ops = CHAIN + 1  # + the final sum
    report(f"chain of {CHAIN} elementwise ops on (8, 8), forward + backward "
           f"(floor {t['numpy (floor)'] / n_ops * 1e6:.2f} us per op)", t, "numpy (floor)",
           {"backprop_lab": 2.0, "backprop_lab compiled": 1.2},
           short="chain of 100 ops")  # fmt: skip
    return t


def load_variant(name: str, transform) -> object:
    """A copy of backprop_lab, changed by ``transform(path)``, importable as ``name``."""
    import atexit
    import importlib
    import shutil
    import tempfile

    src = Path(bl.__file__).resolve().parent
    tmp = Path(tempfile.mkdtemp(prefix="bl_bench_"))
    shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns("__pycache__"))
    transform(tmp / name)
    sys.path.insert(0, str(tmp))
    atexit.register(shutil.rmtree, tmp, True)
    return importlib.import_module(name)


def _checks_off(pkg: Path) -> None:
    """Every ``if <condition>:  # check: ...`` in the engine core becomes ``if False:``."""
    import re

    for f in ("tensor.py",):
        path = pkg / f
        lines = path.read_text().splitlines(keepends=True)
        out = [re.sub(r"if .*:(\s+# check:)", r"if False:\1", ln) if "# check:" in ln else ln
               for ln in lines]  # fmt: skip
        assert out != lines, "no check found to switch off"
        path.write_text("".join(out))


def bench_checks(rounds, inner):
    """The chain with this engine's run-time checks against a copy without them."""
    plain = load_variant("bl_checks_off", _checks_off)
    rng = np.random.default_rng(0)
    xd, cd = rng.standard_normal((8, 8)), rng.standard_normal((8, 8)) * 0.5
    x1, c1 = bl.tensor(xd, requires_grad=True), bl.tensor(cd)
    x2, c2 = plain.tensor(xd, requires_grad=True), plain.tensor(cd)

    def chain(lib, x, c):
        h = x
        for _ in range(CHAIN // 4):
            h = lib.sin(lib.tanh(h * c) + c)
        h.sum().backward()
        x.grad = None

    t = interleaved({"without the checks": lambda: chain(plain, x2, c2),
                     "with the checks": lambda: chain(bl, x1, c1)}, rounds, inner)  # fmt: skip
    report("cost of the run-time checks on the chain (in-place detection)", t,
           "without the checks", {"with the checks": 1.05},
           short="chain, run-time checks")  # fmt: skip


def bench_no_listener(rounds, inner):
    """The instrumentation hooks with no listener, against a copy without instrument/."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_instrument import chain_step, load_without_instrumentation

    plain = load_without_instrumentation()
    x1 = bl.tensor(np.linspace(-1, 1, 8), requires_grad=True)
    x2 = plain.tensor(np.linspace(-1, 1, 8), requires_grad=True)
    with bl.trace(), bl.count(), bl.measure_memory(), bl.detect_anomaly():
        chain_step(bl, x1)  # use every instrument once, then leave
    fns = {"without instrument/": lambda: chain_step(plain, x2),
           "with it, no listener": lambda: chain_step(bl, x1)}  # fmt: skip
    t = interleaved(fns, rounds, inner)
    report("instrumentation hooks with no listener (25 x mul, add, tanh + backward)", t,
           "without instrument/", {"with it, no listener": 1.02},
           short="hooks, no listener")  # fmt: skip


# --------------------------------------------------------------------------------------
# Workload 4: an RNN unrolled 50 steps, forward and BPTT
# --------------------------------------------------------------------------------------
def make_rnn(T=50, H=64, B=32, D=8, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((T, B, D))
    y = rng.standard_normal((B, 1))
    wx = rng.standard_normal((D, H)) / np.sqrt(D)
    wh = rng.standard_normal((H, H)) / np.sqrt(H)
    b = np.zeros(H)
    wy = rng.standard_normal((H, 1)) / np.sqrt(H)
    return xs, y, [wx, wh, b, wy]


def numpy_rnn(xs, y, params):
    wx, wh, b, wy = params
    T, B, _ = xs.shape
    h = np.zeros((B, wh.shape[0]))
    hs = [h]
    for t in range(T):
        h = np.tanh(xs[t] @ wx + h @ wh + b)
        hs.append(h)
    pred = h @ wy
    diff = pred - y
    loss = (diff * diff).sum() / diff.size
    dpred = diff * (2.0 / diff.size)
    dwy = h.T @ dpred
    dh = dpred @ wy.T
    dwx, dwh, db = np.zeros_like(wx), np.zeros_like(wh), np.zeros_like(b)
    for t in range(T - 1, -1, -1):
        hnew = hs[t + 1]
        dz = dh * (1 - hnew * hnew)
        dwx += xs[t].T @ dz
        dwh += hs[t].T @ dz
        db += dz.sum(axis=0)
        dh = dz @ wh.T
    return loss, (dwx, dwh, db, dwy)


def engine_rnn(xs, y, params):
    wx, wh, b, wy = params
    T = xs.shape[0]
    h = bl.tensor(np.zeros((xs.shape[1], wh.shape[0])))
    for t in range(T):
        h = bl.tanh(xs[t] @ wx + h @ wh + b)
    loss = bl.mse(h @ wy, y)
    loss.backward()
    grads = tuple(p.grad for p in params)
    for p in params:
        p.grad = None
    return loss, grads


def torch_rnn(xs, y, params):
    import torch

    wx, wh, b, wy = params
    h = torch.zeros((xs.shape[1], wh.shape[0]), dtype=xs.dtype)
    for t in range(xs.shape[0]):
        h = torch.tanh(xs[t] @ wx + h @ wh + b)
    loss = torch.nn.functional.mse_loss(h @ wy, y)
    loss.backward()
    grads = tuple(p.grad for p in params)
    for p in params:
        p.grad = None
    return loss, grads


def bench_rnn(rounds, inner, torch_ok):
    xs, y, params = make_rnn()
    e_params = [bl.tensor(p, requires_grad=True) for p in params]
    e_y = bl.tensor(y)
    _, g_np = numpy_rnn(xs, y, params)
    # Index time steps of a Tensor once, outside the timed region, like the NumPy side.
    steps = [bl.tensor(xs[t]) for t in range(xs.shape[0])]

    class Steps:
        shape = xs.shape

        def __getitem__(self, t):
            return steps[t]

    _, g_e = engine_rnn(Steps(), e_y, e_params)
    for a, b in zip(g_np, g_e):
        np.testing.assert_allclose(a, bl.to_numpy(b), rtol=1e-9, atol=1e-12)
    compiled = bl.compile(engine_rnn, fallback=False)
    the_steps = Steps()
    for _ in range(2):  # recorded, then replayed: bit-identical to eager mode
        _, g_c = compiled(the_steps, e_y, e_params)
        assert all(np.array_equal(a, b) for a, b in zip(g_e, g_c))
    fns = {
        "numpy (floor)": lambda: numpy_rnn(xs, y, params),
        "backprop_lab": lambda: engine_rnn(Steps(), e_y, e_params),
        "backprop_lab compiled": lambda: compiled(the_steps, e_y, e_params),
    }
    if torch_ok:
        import torch

        t_params = [torch.tensor(p, requires_grad=True) for p in params]
        txs, ty = torch.from_numpy(xs), torch.from_numpy(y)
        fns["pytorch"] = lambda: torch_rnn(txs, ty, t_params)
    t = interleaved(fns, rounds, inner)
    report("RNN unrolled 50 steps (hidden 64, batch 32), forward + BPTT", t, "numpy (floor)",
           {"backprop_lab": 1.3, "backprop_lab compiled": 1.2})  # fmt: skip
    return t


# --------------------------------------------------------------------------------------
# Workload 5: peak memory of the large step
# --------------------------------------------------------------------------------------
def peak_bytes(fn) -> int:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def bench_memory():
    sizes, batch = [784, 512, 512, 10], 256
    x, y, ws, bs = make_mlp_problem(sizes, batch, np.float64)
    np_ws, np_bs = [w.copy() for w in ws], [b.copy() for b in bs]
    e_ws, e_bs = engine_mlp(ws, bs)
    ex, ey = bl.tensor(x), bl.tensor(y)
    numpy_mlp_step(x, y, np_ws, np_bs, 1e-3)  # warm both (lazy allocations)
    engine_mlp_step(ex, ey, e_ws, e_bs, 1e-3)
    floor = min(peak_bytes(lambda: numpy_mlp_step(x, y, np_ws, np_bs, 1e-3)) for _ in range(3))
    eng = min(peak_bytes(lambda: engine_mlp_step(ex, ey, e_ws, e_bs, 1e-3)) for _ in range(3))
    ratio = eng / floor
    print("\npeak memory of one large step (tracemalloc, above the live weights and data)")
    print(f"  numpy (floor)    {floor / 2**20:8.2f} MiB   1.00x")
    print(
        f"  backprop_lab     {eng / 2**20:8.2f} MiB   {ratio:.2f}x   target <= 1.20x: "
        f"{'met' if ratio <= 1.2 else 'MISSED'}"
    )
    SUMMARY.append(("peak memory, large step (MiB, not us)", floor / 2**20, eng / 2**20, 1.2))
    return ratio


def print_summary():
    print("\nsummary: every target, the floor beside it (times in us per step)")
    print(f"  {'what':66} {'floor':>9} {'measured':>9} {'ratio':>6} {'target':>6}")
    for what, floor, measured, target in SUMMARY:
        ratio = measured / floor
        print(f"  {what[:66]:66} {floor:9.1f} {measured:9.1f} {ratio:5.2f}x {target:5.2f}x "
              f"{'met' if ratio <= target else 'MISSED'}")  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/torch threads (default 1)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    args = parser.parse_args(argv)
    rounds = 5 if args.quick else 21
    scale = 0.2 if args.quick else 1.0

    torch_ok = False
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(args.threads)
            torch.set_num_interop_threads(args.threads)
            torch_ok = True
        except ImportError:
            print("(PyTorch not installed: its columns are skipped)")
        except RuntimeError:
            torch_ok = True
    limits = threadpool_limits(args.threads) if threadpool_limits else None
    print(f"backprop_lab {bl.__version__}, NumPy {np.__version__}, BLAS threads {args.threads}")
    print("Ratios are medians of interleaved rounds, in this process, against the first row.")
    gc.collect()
    bench_mlp(
        "digits-size step (batch 128, 64-128-10, float64)",
        [64, 128, 10], 128, np.float64, 1.15, rounds, max(1, int(200 * scale)), torch_ok,
    )  # fmt: skip
    bench_mlp(
        "digits-size step (batch 128, 64-128-10, float32)",
        [64, 128, 10], 128, np.float32, 1.15, rounds, max(1, int(200 * scale)), torch_ok,
    )  # fmt: skip
    bench_mlp(
        "large step (batch 256, 784-512-512-10, ReLU, float64)",
        [784, 512, 512, 10], 256, np.float64, 1.05, rounds, max(1, int(5 * scale)), torch_ok,
    )  # fmt: skip
    bench_chain(rounds, max(1, int(200 * scale)), torch_ok)
    bench_rnn(rounds, max(1, int(20 * scale)), torch_ok)
    bench_checks(rounds, max(1, int(200 * scale)))
    bench_no_listener(rounds * 4, max(1, int(50 * scale)))
    bench_memory()
    print_summary()
    if limits is not None:
        limits.unregister() if hasattr(limits, "unregister") else None


if __name__ == "__main__":
    main()
