"""Chapter 1 helpers: what backprop computes and what it saves.

* :func:`regression_problem` builds a small MLP and a seeded regression batch;
* :func:`backprop_gradient` and :func:`finite_difference_gradient` compute the gradient of
  the loss with respect to *every* parameter, the first with one backward pass, the second
  with one or two extra forward passes per parameter (perturbing each weight in place);
* :func:`gradient_cost_table` measures both as the number of parameters N grows (passes,
  FLOPs from :func:`backprop_lab.count`, seconds) and :func:`plot_gradient_cost` draws it;
* :func:`backward_forward_ratio` measures what one backward pass costs in forward passes;
* :func:`slice_explorer` is the widget: the loss along one weight, its tangent from
  backprop and the finite-difference secant.

Matplotlib and ipywidgets are imported inside the functions that need them.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import backprop_lab as bl
from backprop_lab.instrument.counters import forward_flops

__all__ = [
    "regression_problem",
    "loss_of",
    "parameter_slots",
    "backprop_gradient",
    "finite_difference_gradient",
    "gradient_cost_table",
    "plot_gradient_cost",
    "backward_forward_ratio",
    "time_forward_backward",
    "loss_along",
    "slice_explorer",
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
    """The same gradient by finite differences: nudge one weight at a time, in place.

    One-sided: ``(L(w + eps e_k) - L(w)) / eps``, N + 1 forward passes. Centered:
    ``(L(w + eps e_k) - L(w - eps e_k)) / (2 eps)``, 2N forward passes. ``loss()`` (default:
    :func:`loss_of` on the model) is called once per forward pass, so wrapping it with
    ``Counter.track`` counts the passes. Every weight is restored afterwards.
    """
    if loss is None:

        def loss() -> Any:
            return loss_of(model, X, Y)

    def value() -> float:
        return float(np.asarray(loss().data))

    grads = []
    with bl.no_grad():
        base = None if centered else value()
        for _, p, i in parameter_slots(model):
            flat = p.data.reshape(-1)  # a view: writing to it changes the weight
            old = flat[i]
            flat[i] = old + eps
            plus = value()
            if centered:
                flat[i] = old - eps
                minus = value()
                grads.append((plus - minus) / (2 * eps))
            else:
                grads.append((plus - base) / eps)
            flat[i] = old
    return np.array(grads)


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
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(9.5 if timed else 5, 3.4))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    for key, label, style in (
        ("fd2_flops", "centered differences (2N passes)", "o-"),
        ("fd1_flops", "one-sided differences (N+1 passes)", "s--"),
        ("bp_flops", "backprop (1 forward + 1 backward)", "^-"),
    ):
        ax.loglog(N, np.array([r[key] for r in rows]) / fwd, style, label=label, ms=4)
    ax.set_xlabel("number of parameters N")
    ax.set_ylabel("cost in forward passes\n(FLOPs / one forward)")
    ax.set_title("work for the full gradient")
    ax.legend(fontsize=7.5)
    ax.grid(True, which="major", alpha=0.3)
    if timed:
        ax = axes[1]
        ax.loglog(N, [r["fd2_seconds"] for r in rows], "o-", label="centered differences", ms=4)
        ax.loglog(N, [r["bp_seconds"] for r in rows], "^-", label="backprop", ms=4)
        ax.set_xlabel("number of parameters N")
        ax.set_ylabel("seconds (this machine)")
        ax.set_title("measured time")
        ax.legend(fontsize=7.5)
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


def _slice_figure(model, X, Y, grad, slot, log_h, span=1.5):
    import matplotlib.pyplot as plt

    slots = parameter_slots(model)
    name, p, i = slots[slot]
    w0 = float(p.data.reshape(-1)[i])
    h = 10.0**log_h
    t = np.linspace(-span, span, 61)
    L = loss_along(model, X, Y, slot, t)
    L0 = float(loss_along(model, X, Y, slot, [0.0])[0])
    Lp, Lm = loss_along(model, X, Y, slot, [h, -h])
    fd = (Lp - Lm) / (2 * h)

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(9.5, 3.3), width_ratios=[1.1, 1])
    colors = ["tab:orange" if k == slot else "tab:blue" for k in range(len(slots))]
    a0.bar(np.arange(len(slots)), grad, color=colors)
    a0.axhline(0, color="k", lw=0.6)
    a0.set_xlabel("parameter k")
    a0.set_ylabel(r"$\partial L / \partial w_k$")
    a0.set_title(f"the gradient: {len(slots)} partial derivatives")

    a1.plot(w0 + t, L, color="tab:blue", label=f"L along {name}[{i}]")
    a1.plot(w0 + t, L0 + grad[slot] * t, "--", color="tab:orange",
            label=f"tangent, backprop slope {grad[slot]:+.4f}")  # fmt: skip
    a1.plot([w0 - h, w0 + h], [Lm, Lp], "o-", color="tab:green", ms=4,
            label=f"secant, h = {h:.0e}: slope {fd:+.4f}")  # fmt: skip
    a1.plot([w0], [L0], "ko", ms=4)
    lo, hi = float(np.min(L)), float(np.max(L))
    a1.set_ylim(lo - 0.15 * (hi - lo + 1e-9), hi + 0.15 * (hi - lo + 1e-9))
    a1.set_xlabel(f"{name}[{i}]  (all other weights fixed)")
    a1.set_ylabel("loss L")
    a1.set_title(f"one slice: k = {slot}")
    a1.legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    return fig


def slice_explorer(model: Any, X: Any, Y: Any) -> Any:
    """Widget: choose a parameter k and a finite-difference step h. Left: all N partial
    derivatives from one backward pass (k highlighted). Right: the loss along w_k with the
    tangent whose slope backprop gives and the centered secant of width 2h.

    The default view is drawn when the widget is created (for the static book)."""
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    grad = backprop_gradient(model, X, Y)
    k = w.IntSlider(value=0, min=0, max=len(grad) - 1, description="weight k")
    log_h = w.FloatSlider(value=-0.5, min=-6.0, max=0.0, step=0.5, description="log10 h")
    out = w.Output()

    def draw(*_: Any) -> None:
        with out:
            out.clear_output(wait=True)
            fig = _slice_figure(model, X, Y, grad, k.value, log_h.value)
            display(fig)
            plt.close(fig)

    k.observe(draw, names="value")
    log_h.observe(draw, names="value")
    draw()
    return w.VBox([w.HBox([k, log_h]), out])
