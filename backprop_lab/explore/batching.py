"""Batches and hardware (Chapter 14): per-example gradients, sum against mean, throughput.

* :func:`digits_mlp`, :func:`per_example_grads_loop`, :func:`per_example_grads_hooks`:
  per-example gradients of a small MLP on the digits, by B separate backward passes and by
  one backward pass of the *summed* loss with hooks that catch each layer's output
  gradient (whose rows are then the per-example gradients at that layer).
* :func:`sgd_run`: training with a mean or a summed loss, SGD or Adam (for the sum against
  mean comparison and the explorer).
* :func:`step_flops`, :func:`step_intensity`, :func:`time_step`, :func:`throughput_sweep`,
  :func:`matmul_peak`, :func:`memory_bandwidth`: FLOPs, arithmetic intensity and measured
  GFLOP/s of a training step against batch size, and the machine's roof.
* :func:`sgd_view`, :func:`sgd_explorer`: the chapter's explorer.

Timings depend on the machine and its load; the chapter only draws them and asserts
generous inequalities.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import backprop_lab as bl

__all__ = [
    "digits_batch",
    "digits_mlp",
    "forward_logits",
    "per_example_grads_loop",
    "per_example_grads_hooks",
    "sgd_run",
    "step_flops",
    "step_intensity",
    "time_step",
    "throughput_sweep",
    "matmul_peak",
    "memory_bandwidth",
    "sgd_view",
    "sgd_explorer",
    "EXPLORER_CONTROLS",
]


# --------------------------------------------------------------------------- data, model
def digits_batch(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` digits images (standardised pixels, shape (n, 64)) and their labels."""
    d = bl.data.load_digits()
    idx = np.random.default_rng(seed).permutation(len(d.y))[:n]
    X = d.X[idx]
    X = (X - d.X.mean(axis=0)) / (d.X.std(axis=0) + 0.1)
    return X, d.y[idx]


def digits_mlp(hidden: int = 32, seed: int = 0) -> list[np.ndarray]:
    """Parameters ``[W1, b1, W2, b2]`` of a 64 -> hidden -> 10 ReLU network (He init)."""
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal((64, hidden)) * np.sqrt(2 / 64),
        np.zeros(hidden),
        rng.standard_normal((hidden, 10)) * np.sqrt(2 / hidden),
        np.zeros(10),
    ]


def forward_logits(X: Any, params: Sequence[Any]) -> Any:
    """Logits of the two-layer ReLU network on the engine (tensors or arrays)."""
    W1, b1, W2, b2 = params
    return bl.relu(X @ W1 + b1) @ W2 + b2


def per_example_grads_loop(X: np.ndarray, y: np.ndarray, params: Sequence[np.ndarray]):
    """One backward pass per example: a list (one entry per parameter) of (B, ...) arrays."""
    out: list[list[np.ndarray]] = [[] for _ in params]
    for i in range(len(y)):
        ts = [bl.tensor(p, requires_grad=True) for p in params]
        loss = bl.cross_entropy(forward_logits(bl.tensor(X[i : i + 1]), ts), y[i : i + 1])
        loss.backward()
        for k, t in enumerate(ts):
            out[k].append(np.array(t.grad))
    return [np.stack(g) for g in out]


def per_example_grads_hooks(X: np.ndarray, y: np.ndarray, params: Sequence[np.ndarray]):
    """All per-example gradients from ONE backward pass of the summed loss.

    Example i's loss depends on row i of each layer's output only, so the gradient of the
    *summed* loss with respect to a layer's output has, in row i, exactly example i's own
    gradient there. Hooks catch those matrices on the way back; each example's weight
    gradient is then the outer product of its input row and its output-gradient row.
    """
    B = len(y)
    ts = [bl.tensor(p, requires_grad=True) for p in params]
    W1, b1, W2, b2 = ts
    x = bl.tensor(X)
    z1 = x @ W1 + b1
    h = bl.relu(z1)
    z2 = h @ W2 + b2
    caught: dict[str, np.ndarray] = {}
    z1.register_hook(lambda g: caught.setdefault("z1", np.array(g)))
    z2.register_hook(lambda g: caught.setdefault("z2", np.array(g)))
    loss = bl.cross_entropy(z2, y) * B  # the sum of the per-example losses
    loss.backward()
    d1, d2, hv = caught["z1"], caught["z2"], h.numpy()
    return [np.einsum("bi,bj->bij", X, d1), d1, np.einsum("bi,bj->bij", hv, d2), d2]


# --------------------------------------------------------------------------- training
def sgd_run(
    X: np.ndarray, y: np.ndarray, *, batch: int, reduction: str = "mean", lr: float = 0.1,
    steps: int = 60, optimizer: str = "sgd", hidden: int = 32, seed: int = 0,
    evaluate: int = 256, diverged: float = 1e3,
) -> dict:  # fmt: skip
    """Train the digits MLP with minibatches; return losses, update norms and parameters.

    ``reduction`` is "mean" (loss = average over the batch) or "sum" (loss = total).
    ``losses[k]`` is the mean loss over the first ``evaluate`` rows of X after step k
    (step 0: before training). A run whose loss passes ``diverged`` (or stops being
    finite) is stopped there, and ``losses[-1]`` is then ``inf``.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    params = [bl.tensor(p, requires_grad=True) for p in digits_mlp(hidden, seed)]
    opt = bl.optim.Adam(params, lr=lr) if optimizer == "adam" else bl.optim.SGD(params, lr=lr)
    rng = np.random.default_rng(seed + 1)
    xeval, yeval = bl.tensor(X[:evaluate]), y[:evaluate]

    def full_loss() -> float:
        with bl.no_grad(), np.errstate(all="ignore"):
            v = float(bl.cross_entropy(forward_logits(xeval, params), yeval).data)
        return v if np.isfinite(v) and v < diverged else float("inf")

    losses, update_norms = [full_loss()], []
    for _ in range(steps):
        idx = rng.choice(len(y), size=batch, replace=False)
        loss = bl.cross_entropy(forward_logits(bl.tensor(X[idx]), params), y[idx])
        if reduction == "sum":
            loss = loss * batch
        opt.zero_grad()
        with np.errstate(all="ignore"):
            loss.backward()
            before = [np.array(p.data) for p in params]
            opt.step()
        update_norms.append(
            float(np.sqrt(sum(np.sum((p.data - b) ** 2) for p, b in zip(params, before))))
        )
        losses.append(full_loss())
        if not np.isfinite(losses[-1]):
            break
    return {"loss": losses, "update_norm": update_norms, "params": [p.numpy() for p in params]}


# --------------------------------------------------------------------------- throughput
def _mlp_step(sizes: Sequence[int], batch: int, dtype: str, seed: int = 0) -> Callable[[], None]:
    model = bl.nn.MLP(list(sizes), seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    x = bl.tensor(rng.standard_normal((batch, sizes[0])), dtype=dtype)
    y = bl.tensor(rng.integers(0, sizes[-1], batch))
    params = model.parameters()

    def step() -> None:
        loss = bl.cross_entropy(model(x), y)
        for p in params:
            p.grad = None
        loss.backward()

    return step


def step_flops(sizes: Sequence[int], batch: int) -> int:
    """FLOPs of one forward and backward pass of ``bl.nn.MLP(sizes)`` (``bl.count``)."""
    step = _mlp_step(sizes, batch, "float64")
    with bl.count() as c:
        step()
    return int(c.flops)


def step_intensity(sizes: Sequence[int], batch: int, itemsize: int = 4) -> float:
    """FLOPs per byte of the training step's matrix products (a model, not a measurement).

    Each matmul is charged 2mkn FLOPs and the bytes of its two operands and its result,
    read or written once. Forward: X_l W_l; backward: the input gradient (except for the
    first layer, whose input needs none) and the weight gradient.
    """
    flops = 0
    moved = 0
    for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        products = [(batch, n_in, n_out), (n_in, batch, n_out)]  # forward, weight gradient
        if layer > 0:
            products.append((batch, n_out, n_in))  # input gradient
        for m, k, n in products:
            flops += 2 * m * k * n
            moved += itemsize * (m * k + k * n + m * n)
    return flops / moved


class _OneBlasThread:
    """Limit BLAS to one thread while timing, when threadpoolctl is installed."""

    def __enter__(self) -> _OneBlasThread:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # measure with the default threads; the numbers are still honest
            self._limit = None
        else:
            self._limit = threadpool_limits(1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._limit is not None:
            self._limit.restore_original_limits()


def time_step(
    step: Callable[[], Any], repeats: int = 5, sync: Callable[[], None] | None = None,
    clock: str = "cpu",
) -> float:  # fmt: skip
    """The fastest of ``repeats`` timed calls (after one warm-up call), in seconds.

    ``clock="cpu"`` (the default) measures the process's CPU time with BLAS on one thread:
    the cost on one core, which other programs competing for the machine disturb far less
    than wall-clock time. ``clock="wall"`` measures elapsed time (needed for a GPU, whose
    work is not CPU time; pass ``sync`` to wait for it).
    """
    if clock not in ("cpu", "wall"):
        raise ValueError(f"clock must be 'cpu' or 'wall', not {clock!r}")
    now = time.process_time if clock == "cpu" else time.perf_counter
    sync = sync or (lambda: None)
    with _OneBlasThread() if clock == "cpu" else _NoLimit():
        step()
        sync()
        best = float("inf")
        for _ in range(repeats):
            t0 = now()
            step()
            sync()
            best = min(best, now() - t0)
    return best


class _NoLimit:
    def __enter__(self) -> _NoLimit:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _sync_for(backend: str) -> Callable[[], None] | None:
    if backend != "cupy":
        return None
    import cupy

    return cupy.cuda.Device().synchronize


def throughput_sweep(
    batches: Sequence[int], sizes: Sequence[int] = (256, 512, 512, 10), *,
    dtype: str = "float32", backend: str = "numpy", repeats: int = 5,
) -> dict:  # fmt: skip
    """Measured seconds and GFLOP/s of the MLP training step for each batch size.

    FLOPs come from ``bl.count`` (forward and backward), times from :func:`time_step`: CPU
    time on one core for NumPy, wall-clock time with synchronisation for ``"cupy"``, which
    runs the same code on the GPU (and raises BackendError where there is none).
    """
    out = {"batch": list(batches), "seconds": [], "gflops": [], "flops": []}
    clock = "wall" if backend == "cupy" else "cpu"
    with bl.use_backend(backend):
        for b in batches:
            flops = step_flops(sizes, b)
            seconds = time_step(_mlp_step(sizes, b, dtype), repeats, _sync_for(backend), clock)
            out["flops"].append(flops)
            out["seconds"].append(seconds)
            out["gflops"].append(flops / seconds / 1e9)
    return out


def matmul_peak(n: int = 1024, dtype: str = "float32", repeats: int = 5,
                backend: str = "numpy") -> float:  # fmt: skip
    """GFLOP/s of one large square matrix product (the practical roof for a training step).

    Timed like :func:`throughput_sweep`: CPU time on one core for NumPy, wall-clock time on
    the GPU for ``backend="cupy"``.
    """
    if backend == "cupy":
        import cupy as xp
    else:
        xp = np
    a = xp.ones((n, n), dtype=dtype)
    b = xp.ones((n, n), dtype=dtype)
    clock = "wall" if backend == "cupy" else "cpu"
    seconds = time_step(lambda: a @ b, repeats, _sync_for(backend), clock)
    return 2 * n**3 / seconds / 1e9


def memory_bandwidth(megabytes: int = 64, repeats: int = 5) -> float:
    """GB/s of copying a large array (read plus write) on one core, in CPU time."""
    a = np.ones(megabytes * 2**20 // 8)
    b = np.empty_like(a)
    seconds = time_step(lambda: np.copyto(b, a), repeats)
    return 2 * a.nbytes / seconds / 1e9


# --------------------------------------------------------------------------- explorer
EXPLORER_CONTROLS = {
    "batch": [1, 32, 512],
    "reduction": ["mean", "sum"],
    "lr": [0.01, 0.1, 1.0],
}


def sgd_view(batch: int = 32, reduction: str = "mean", lr: float = 0.1) -> Any:
    """Loss curve (left) and size of each update (right) for one training run, as a Figure."""
    import matplotlib.pyplot as plt

    X, y = digits_batch(1024, seed=0)
    steps = 50
    run = sgd_run(X, y, batch=batch, reduction=reduction, lr=lr, steps=steps)
    loss = np.array(run["loss"])
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(6.5, 3.0), dpi=80)
    finite = np.isfinite(loss)
    top = 3.0  # the same axes in every view, so that views can be compared
    ax0.plot(np.arange(len(loss))[finite], np.minimum(loss[finite], top), color="#4c78a8")
    ax0.set_xlim(0, steps)
    ax0.set_ylim(0, top)
    if not finite.all():
        ax0.text(0.5, 0.5, f"diverged at step {len(loss) - 1}", transform=ax0.transAxes,
                 ha="center", color="#e45756", fontsize=11)  # fmt: skip
    ax0.set_xlabel("step", fontsize=10)
    ax0.set_ylabel("loss on 256 digits", fontsize=10)
    upd = np.array(run["update_norm"])
    ok = np.isfinite(upd) & (upd > 0)
    ax1.semilogy(np.arange(1, len(upd) + 1)[ok], upd[ok], color="#f58518")
    ax1.set_xlim(0, steps)
    ax1.set_ylim(1e-3, 1e4)
    ax1.set_xlabel("step", fontsize=10)
    ax1.set_ylabel("size of the update", fontsize=10)
    for ax in (ax0, ax1):
        ax.tick_params(labelsize=9)
    fig.suptitle(f"batch {batch}, {reduction} loss, SGD lr {lr}", fontsize=10)
    fig.tight_layout()
    return fig


def sgd_explorer(**value: Any) -> Any:
    """The chapter's explorer over :data:`EXPLORER_CONTROLS` (Contract B)."""
    from backprop_lab.explorer import Explorer

    start = {"batch": 32, "reduction": "mean", "lr": 0.1, **value}
    return Explorer(sgd_view, controls=EXPLORER_CONTROLS, value=start,
                    title="Batch size, sum or mean, and the learning rate")  # fmt: skip
