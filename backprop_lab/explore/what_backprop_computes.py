"""Chapter 1 (what backprop computes): the gradient, what it costs, and the two explorers.

* :func:`regression_problem` builds a small MLP and a seeded regression batch;
* :func:`backprop_gradient` and :func:`finite_difference_gradient` compute the gradient of
  the loss with respect to *every* parameter, the first with one backward pass, the second
  with :mod:`backprop_lab.numdiff` (one or two extra forward passes per parameter);
* :func:`gradient_cost_table` measures both as the number of parameters N grows (passes,
  FLOPs from :func:`backprop_lab.count`, seconds) and :func:`plot_gradient_cost` draws it;
* :func:`backward_forward_ratio` measures what one backward pass costs in forward passes;
* :func:`slice_figure` / :func:`slice_explorer`: the loss along one weight, its tangent from
  backprop and the finite-difference secant, for steps h down to 1e-12;
* :func:`matmul_flop_tally` / :func:`flop_explorer`: forward and backward FLOPs of each
  layer of a linear stack, counted by the engine (the explorer of Exercise 1.3).

Matplotlib is imported inside the functions that draw.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import backprop_lab as bl
from backprop_lab import numdiff
from backprop_lab.instrument.counters import forward_flops

__all__ = [
    "regression_problem",
    "loss_of",
    "parameter_slots",
    "flat_parameters",
    "backprop_gradient",
    "finite_difference_gradient",
    "gradient_cost_table",
    "plot_gradient_cost",
    "backward_forward_ratio",
    "time_forward_backward",
    "loss_along",
    "slice_figure",
    "slice_explorer",
    "SLICE_STEPS",
    "matmul_flop_tally",
    "flop_figure",
    "flop_explorer",
]


def regression_problem(
    hidden: int, n_in: int = 8, batch: int = 32, seed: int = 0, activation: str = "tanh"
) -> tuple[bl.nn.MLP, np.ndarray, np.ndarray]:
    """An MLP ``n_in -> hidden -> 1`` and a seeded batch ``X`` (batch, n_in), ``Y`` (batch, 1).

    The MLP has ``N = (n_in + 1) * hidden + hidden + 1`` parameters.
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(batch, n_in))
    Y = np.sin(X[:, :1]) + 0.1 * rng.normal(size=(batch, 1))
    model = bl.nn.MLP([n_in, hidden, 1], activation=activation, seed=seed)
    return model, X, Y


def loss_of(model: Any, X: Any, Y: Any) -> bl.Tensor:
    """The mean squared error of ``model`` on ``(X, Y)`` (a scalar Tensor)."""
    return bl.mse(model(bl.tensor(X)), Y)


def parameter_slots(model: Any) -> list[tuple[str, bl.Tensor, int]]:
    """One ``(name, tensor, flat index)`` per scalar parameter, in ``model.parameters()``
    order: the coordinates ``w_1 ... w_N`` of the loss."""
    slots = []
    for name, p in model.named_parameters():
        for i in range(int(p.data.size)):
            slots.append((name, p, i))
    return slots


def flat_parameters(model: Any) -> np.ndarray:
    """All N parameters as one float64 vector ``w`` that the model reads from.

    Every parameter's ``data`` becomes a view into this vector (once; later calls return the
    same vector), so writing ``w[k]`` moves weight ``k`` of the model: the coordinates of
    :func:`parameter_slots`."""
    params = list(model.parameters())
    buffer = getattr(model, "_flat_parameters", None)
    if buffer is not None and all(np.shares_memory(p.data, buffer) for p in params):
        return buffer
    buffer = np.concatenate([np.asarray(p.data, dtype=np.float64).reshape(-1) for p in params])
    start = 0
    for p in params:
        size = int(p.data.size)
        p.data = buffer[start : start + size].reshape(p.data.shape)
        start += size
    model._flat_parameters = buffer
    return buffer


def backprop_gradient(model: Any, X: Any, Y: Any) -> np.ndarray:
    """The gradient of :func:`loss_of` with respect to all N parameters, flattened in
    :func:`parameter_slots` order, from one forward and one backward pass."""
    model.zero_grad()
    loss_of(model, X, Y).backward()
    return np.concatenate([np.asarray(p.grad).reshape(-1) for p in model.parameters()])


def finite_difference_gradient(
    model: Any,
    X: Any,
    Y: Any,
    eps: float = 1e-6,
    centered: bool = True,
    loss: Callable[[], Any] | None = None,
) -> np.ndarray:
    """The same gradient by finite differences (:func:`backprop_lab.numdiff.partials` on
    the vector of :func:`flat_parameters`, nudged in place and restored).

    One-sided: N + 1 forward passes; centered: 2N. ``loss()`` (default: :func:`loss_of` on
    the model) is called once per forward pass, so wrapping it with ``Counter.track``
    counts the passes."""
    if loss is None:

        def loss() -> Any:
            return loss_of(model, X, Y)

    w = flat_parameters(model)
    with bl.no_grad():
        return numdiff.partials(
            lambda: float(np.asarray(loss().data)),
            w,
            eps=eps,
            scheme="centered" if centered else "forward",
        )


def _best_time(fn: Callable[[], Any], repeats: int) -> float:
    """Best of ``repeats`` wall-clock runs of ``fn()``, garbage collector off (as timeit)."""
    best = float("inf")
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    return best


def gradient_cost_table(
    hiddens: Sequence[int], n_in: int = 8, batch: int = 32, seed: int = 0, time_it: bool = True
) -> list[dict[str, Any]]:
    """Cost of the full gradient by backprop and by finite differences, per network size.

    For each hidden width: ``N`` (parameters); forward/backward passes and FLOPs (from
    :func:`backprop_lab.count`) of one forward pass, of backprop (forward + backward), of
    one-sided and of centered differences; the largest relative disagreement between the
    centered and backprop gradients; and, if ``time_it``, the seconds each took.
    """
    rows = []
    for h in hiddens:
        model, X, Y = regression_problem(h, n_in=n_in, batch=batch, seed=seed)
        n = sum(int(p.data.size) for p in model.parameters())
        with bl.count() as c_fwd:
            with bl.no_grad():
                loss_of(model, X, Y)
        with bl.count() as c_bp:
            g_bp = backprop_gradient(model, X, Y)
        row: dict[str, Any] = {
            "hidden": h,
            "N": n,
            "forward_flops": c_fwd.forward_flops,
            "bp_forward_passes": 1,
            "bp_backward_passes": c_bp.backward_passes,
            "bp_flops": c_bp.flops,
        }
        for name, centered in (("fd1", False), ("fd2", True)):
            with bl.count() as c:
                tracked = c.track(lambda m=model, X=X, Y=Y: loss_of(m, X, Y))
                g = finite_difference_gradient(model, X, Y, centered=centered, loss=tracked)
            row[f"{name}_passes"] = c.forward_passes
            row[f"{name}_flops"] = c.flops
            if centered:
                row["max_rel_err"] = float(
                    np.max(np.abs(g - g_bp)) / max(float(np.max(np.abs(g_bp))), 1e-300)
                )
        if time_it:
            row["bp_seconds"] = _best_time(lambda m=model, X=X, Y=Y: backprop_gradient(m, X, Y), 5)
            row["fd2_seconds"] = _best_time(
                lambda m=model, X=X, Y=Y: finite_difference_gradient(m, X, Y, centered=True), 1
            )
        rows.append(row)
    return rows


def plot_gradient_cost(rows: Sequence[dict[str, Any]]) -> Any:
    """Two log-log panels: work in forward-pass equivalents (FLOPs / one forward pass)
    against N, and measured seconds against N (if the rows were timed)."""
    import matplotlib.pyplot as plt

    N = np.array([r["N"] for r in rows], dtype=float)
    fwd = np.array([r["forward_flops"] for r in rows], dtype=float)
    timed = "bp_seconds" in rows[0]
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(6.5 if timed else 3.6, 3.3))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    for key, label, style in (
        ("fd2_flops", "centered (2N)", "o-"),
        ("fd1_flops", "one-sided (N+1)", "s--"),
        ("bp_flops", "backprop", "^-"),
    ):
        ax.loglog(N, np.array([r[key] for r in rows]) / fwd, style, label=label, ms=4)
    ax.set_xlabel("number of parameters N", fontsize=9)
    ax.set_ylabel("FLOPs / one forward pass", fontsize=9)
    ax.set_title("work for the full gradient", fontsize=9)
    ax.legend(fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(True, which="major", alpha=0.3)
    if timed:
        ax = axes[1]
        ax.loglog(N, [r["fd2_seconds"] for r in rows], "o-", label="centered", ms=4)
        ax.loglog(N, [r["bp_seconds"] for r in rows], "^-", label="backprop", ms=4)
        ax.set_xlabel("number of parameters N", fontsize=9)
        ax.set_ylabel("seconds (this machine)", fontsize=9)
        ax.set_title("measured time", fontsize=9)
        ax.legend(fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return fig


def _digits_batch(batch: int) -> tuple[np.ndarray, np.ndarray]:
    d = bl.data.load_digits()
    return np.asarray(d.X[:batch], dtype=np.float64), np.asarray(d.y[:batch])


def backward_forward_ratio(
    sizes: Sequence[int] = (64, 256, 256, 10), batch: int = 256, seed: int = 0
) -> dict[str, Any]:
    """FLOPs of one forward and one backward pass of a ReLU MLP with cross-entropy on a
    batch of digits, counted with :func:`backprop_lab.count`.

    Returns ``forward_flops``, ``backward_flops``, ``ratio`` (backward / forward), and
    ``per_op``: for every op name, its forward and backward FLOPs.
    """
    X, y = _digits_batch(batch)
    model = bl.nn.MLP(list(sizes), activation="relu", seed=seed)
    with bl.trace() as t, bl.count() as c:
        loss = bl.cross_entropy(model(bl.tensor(X)), y)
        loss.backward()
    per_op: dict[str, list[int]] = {}
    for ev in t.forward:
        f = forward_flops(ev.op, ev.inputs, ev.output)
        # the counter's convention: the forward FLOPs once per input that gets a gradient
        b = 0
        if ev.backward is not None:
            b = f * sum(g is not None for g in ev.backward.input_grads)
        entry = per_op.setdefault(ev.op.name, [0, 0])
        entry[0] += f
        entry[1] += b
    return {
        "forward_flops": c.forward_flops,
        "backward_flops": c.backward_flops,
        "ratio": c.backward_flops / c.forward_flops,
        "per_op": per_op,
        "parameters": sum(int(p.data.size) for p in model.parameters()),
    }


def time_forward_backward(
    sizes: Sequence[int] = (64, 256, 256, 10), batch: int = 256, seed: int = 0, repeats: int = 15
) -> dict[str, float]:
    """Seconds of the recorded forward pass and of the backward pass of the network of
    :func:`backward_forward_ratio`, each the best of ``repeats``, and their ``ratio``
    (backward / forward).

    As ``timeit`` does, the garbage collector is off while timing; BLAS is limited to one
    thread (threadpoolctl), so that a busy machine disturbs the two passes less."""
    X, y = _digits_batch(batch)
    model = bl.nn.MLP(list(sizes), activation="relu", seed=seed)
    xt = bl.tensor(X)
    fwd, bwd = [], []
    try:
        from threadpoolctl import threadpool_limits

        limit: Any = threadpool_limits(limits=1)
    except ImportError:  # pragma: no cover - threadpoolctl is in requirements.txt
        limit = None
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            model.zero_grad()
            t0 = time.perf_counter()
            loss = bl.cross_entropy(model(xt), y)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    finally:
        if gc_was_enabled:
            gc.enable()
        if limit is not None:
            limit.restore_original_limits()
    return {"forward_s": min(fwd), "backward_s": min(bwd), "ratio": min(bwd) / min(fwd)}


def loss_along(model: Any, X: Any, Y: Any, slot: int, offsets: Sequence[float]) -> np.ndarray:
    """The loss with parameter number ``slot`` moved by each offset (others fixed):
    a one-dimensional slice of the loss surface. The weight is restored."""
    _, p, i = parameter_slots(model)[slot]
    flat = p.data.reshape(-1)
    old = flat[i]
    out = []
    with bl.no_grad():
        try:
            for d in offsets:
                flat[i] = old + d
                out.append(float(np.asarray(loss_of(model, X, Y).data)))
        finally:
            flat[i] = old
    return np.array(out)


#: The steps h of the slice explorer: from 1 down to 1e-12, where round-off takes over.
SLICE_STEPS = [1.0, 1e-1, 1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12]


def slice_figure(model: Any, X: Any, Y: Any, grad: np.ndarray, slot: int, h: float,
                 span: float = 1.5) -> Any:  # fmt: skip
    """Left: all N partial derivatives (weight ``slot`` highlighted). Right: the loss along
    weight ``slot`` with the tangent of slope ``grad[slot]`` and the centered secant through
    ``w +- h``; the title gives the secant's error against the backprop slope."""
    from matplotlib.figure import Figure

    slots = parameter_slots(model)
    name, p, i = slots[slot]
    w0 = float(p.data.reshape(-1)[i])
    t = np.linspace(-span, span, 61)
    L = loss_along(model, X, Y, slot, t)
    L0 = float(loss_along(model, X, Y, slot, [0.0])[0])
    Lp, Lm = loss_along(model, X, Y, slot, [h, -h])
    fd = (Lp - Lm) / (2 * h)
    err = abs(fd - grad[slot])

    fig = Figure(figsize=(6.5, 3.4))
    a0, a1 = fig.subplots(1, 2, width_ratios=[1, 1.25])
    colors = ["#f58518" if k == slot else "#4c78a8" for k in range(len(slots))]
    a0.bar(np.arange(len(slots)), grad, color=colors)
    a0.axhline(0, color="k", lw=0.6)
    a0.set_xticks(range(0, len(slots), 2))
    a0.set_xlabel("parameter k", fontsize=9)
    a0.set_ylabel(r"$\partial L / \partial w_k$", fontsize=9)
    a0.set_title(f"all {len(slots)} partial derivatives", fontsize=9)
    a0.tick_params(labelsize=8)

    a1.plot(w0 + t, L, color="#4c78a8", label="loss along this weight")
    a1.plot(w0 + t, L0 + grad[slot] * t, "--", color="#f58518",
            label=f"tangent (backprop) {grad[slot]:+.6f}")  # fmt: skip
    shown = max(h, 0.02)  # a secant narrower than a pixel is drawn at the pixel's width
    a1.plot([w0 - shown, w0 + shown], [L0 - fd * shown, L0 + fd * shown], "-", color="#54a24b",
            lw=2.5, label=f"secant slope {fd:+.6f}")  # fmt: skip
    a1.plot([w0], [L0], "ko", ms=3)
    lo, hi = float(np.min(L)), float(np.max(L))
    a1.set_ylim(lo - 0.15 * (hi - lo + 1e-9), hi + 0.35 * (hi - lo + 1e-9))
    a1.set_xlabel(f"{name}[{i}] (k = {slot}), all other weights fixed", fontsize=8)
    a1.set_ylabel("loss L", fontsize=9)
    a1.set_title(f"h = {h:.0e}: |secant - tangent| = {err:.1e}", fontsize=9)
    a1.legend(fontsize=7.5, loc="upper left")
    a1.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def slice_explorer(model: Any, X: Any, Y: Any, slots: Sequence[int] = (0, 2, 5, 9, 12)) -> Any:
    """Explorer: weight ``k`` (a few of the model's parameters) and the step ``h`` (a slider
    over :data:`SLICE_STEPS`); see :func:`slice_figure`."""
    from backprop_lab.explorer import Explorer

    grad = backprop_gradient(model, X, Y)
    slots = [int(k) for k in slots if 0 <= int(k) < len(grad)]

    def render(k: int, h: float) -> Any:
        return slice_figure(model, X, Y, grad, k, h)

    return Explorer(
        render,
        controls={"k": slots, "h": SLICE_STEPS},
        value={"k": slots[0], "h": 1e-1},
        title="One slice of the loss: tangent (backprop) and secant (finite difference)",
    )


def matmul_flop_tally(
    widths: Sequence[int], batch: int = 8, seed: int = 0
) -> list[tuple[int, int]]:
    """Forward and backward FLOPs of each matmul of the linear stack
    ``X @ W_1 @ ... @ W_D`` (``X`` of shape (batch, widths[0]) is data, every ``W_l`` of
    shape (widths[l-1], widths[l]) needs a gradient; loss ``sum(Y * R)``), counted by the
    engine with the counter's convention. One ``(forward, backward)`` pair per layer."""
    rng = np.random.default_rng(seed)
    widths = [int(w) for w in widths]
    Ws = [
        bl.tensor(rng.normal(size=(a, b)) / np.sqrt(a), requires_grad=True)
        for a, b in zip(widths[:-1], widths[1:])
    ]
    with bl.trace() as t:
        h = bl.tensor(rng.normal(size=(batch, widths[0])))
        for W in Ws:
            h = h @ W
        bl.sum(h * rng.normal(size=h.shape)).backward()
    tally = []
    for ev in t.forward:
        if ev.op.name != "matmul":
            continue
        f = forward_flops(ev.op, ev.inputs, ev.output)
        b = 0 if ev.backward is None else f * sum(g is not None for g in ev.backward.input_grads)
        tally.append((f, b))
    return tally


def flop_figure(depth: int, first: int, hidden: int = 256, batch: int = 8) -> Any:
    """Bars: forward and backward FLOPs per layer of a linear stack with ``depth`` layers,
    input width ``first`` and hidden width ``hidden``; the title gives backward / forward."""
    from matplotlib.figure import Figure

    widths = [first] + [hidden] * depth
    tally = matmul_flop_tally(widths, batch=batch)
    fwd = np.array([f for f, _ in tally], dtype=float)
    bwd = np.array([b for _, b in tally], dtype=float)
    fig = Figure(figsize=(6.5, 3.2))
    ax = fig.subplots()
    k = np.arange(1, depth + 1)
    ax.bar(k - 0.2, fwd / 1e6, width=0.4, color="#4c78a8", label="forward")
    ax.bar(k + 0.2, bwd / 1e6, width=0.4, color="#e45756", label="backward")
    ax.set_xticks(k)
    ax.set_xlabel("layer (layer 1 reads the data)", fontsize=9)
    ax.set_ylabel("MFLOP (batch of 8)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(
        f"widths {first} -> {hidden} x {depth}: backward / forward = {bwd.sum() / fwd.sum():.3f}",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def flop_explorer(hidden: int = 256) -> Any:
    """Explorer for Exercise 1.3: depth and input width of a linear stack; see
    :func:`flop_figure`."""
    from backprop_lab.explorer import Explorer

    def render(depth: int, first: int) -> Any:
        return flop_figure(depth, first, hidden=hidden)

    return Explorer(
        render,
        controls={"depth": [1, 2, 3, 4, 6, 8], "first": [16, 64, 256, 1024]},
        value={"depth": 2, "first": 64},
        title="Forward and backward FLOPs per layer of a linear stack",
    )
