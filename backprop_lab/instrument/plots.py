"""Gradient-flow plots (matplotlib, imported when a function is called).

* :func:`plot_grad_norms`         gradient norm per layer (vanishing/exploding at a glance)
* :func:`plot_activation_histograms` one histogram per layer, with the saturated fraction
* :func:`dead_relu_fraction`      units that output 0 for every example of a batch
* :func:`plot_dead_relus`         that fraction over training
* :func:`plot_grad_norm_per_step` gradient norm per time step of an RNN
* :func:`capture_grads`           hooks that keep the gradients of intermediate tensors

The functions take plain data (dicts of arrays, lists of numbers), so a chapter can feed
them from a :class:`~backprop_lab.instrument.trace.Trace` (:func:`activations_from_trace`), from
module hooks, or from its own bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..backend import to_numpy
from ..tensor import Tensor

__all__ = [
    "grad_norms",
    "plot_grad_norms",
    "activations_from_trace",
    "saturation_fraction",
    "plot_activation_histograms",
    "dead_relu_fraction",
    "plot_dead_relus",
    "capture_grads",
    "plot_grad_norm_per_step",
]


def _np(a: Any) -> Any:
    import numpy as np

    if isinstance(a, Tensor):
        a = a.data
    return np.asarray(to_numpy(a), dtype=float)


def _axes(ax: Any, figsize: tuple[float, float] = (6, 3)) -> Any:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)[1]


def grad_norms(named: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> dict[str, float]:
    """``{name: ||grad||}`` from ``{name: tensor or array}`` (tensors give their ``.grad``;
    a module's ``named_parameters()`` works too). Missing gradients give 0."""
    import numpy as np

    items = named.items() if isinstance(named, Mapping) else named
    out = {}
    for name, v in items:
        g = v.grad if isinstance(v, Tensor) else v
        out[name] = 0.0 if g is None else float(np.linalg.norm(_np(g).ravel()))
    return out


def plot_grad_norms(named: Any, ax: Any = None, log: bool = True, title: str | None = None):
    """Bar chart of the gradient norm of each layer/parameter, input side on the left."""
    norms = grad_norms(named)
    ax = _axes(ax, (max(4, 0.5 * len(norms) + 2), 3))
    ax.bar(range(len(norms)), list(norms.values()), color="#4c78a8")
    ax.set_xticks(range(len(norms)), list(norms.keys()), rotation=45, ha="right")
    if log and any(v > 0 for v in norms.values()):
        ax.set_yscale("log")
    ax.set_ylabel("gradient norm")
    ax.set_title(title or "Gradient norm per layer")
    return ax


def activations_from_trace(trace: Any, ops: Sequence[str] = ("relu", "tanh", "sigmoid")):
    """``{label: output}`` of every traced op whose name is in ``ops``, in forward order."""
    return {ev.label: ev.value for ev in trace.forward if ev.op.name in ops and not ev.recompute}


def saturation_fraction(a: Any, kind: str = "tanh", eps: float = 0.03) -> float:
    """Fraction of activations in the flat tails: |a| > 1-eps for tanh, a < eps or
    a > 1-eps for sigmoid, a == 0 for relu (where the gradient is zero or nearly)."""
    x = _np(a)
    if kind == "tanh":
        return float((abs(x) > 1 - eps).mean())
    if kind == "sigmoid":
        return float(((x < eps) | (x > 1 - eps)).mean())
    if kind == "relu":
        return float((x == 0).mean())
    raise ValueError(f"kind must be 'tanh', 'sigmoid' or 'relu', not {kind!r}")


def _kind_of(name: str) -> str | None:
    for k in ("tanh", "sigmoid", "relu"):
        if k in name:
            return k
    return None


def plot_activation_histograms(activations: Mapping[str, Any], bins: int = 40,
                               kind: str | None = None, axes: Any = None):  # fmt: skip
    """One histogram per layer; titles give the saturated fraction (tanh, sigmoid: in the
    tails; relu: exactly zero). ``kind`` defaults to what the layer name contains."""
    import matplotlib.pyplot as plt

    n = len(activations)
    if axes is None:
        fig, axes = plt.subplots(1, max(n, 1), figsize=(2.6 * max(n, 1), 2.4), squeeze=False)
        axes = axes[0]
    for ax, (name, a) in zip(axes, activations.items()):
        x = _np(a).ravel()
        ax.hist(x, bins=bins, color="#72b7b2")
        k = kind or _kind_of(name)
        sat = f"\nsaturated {100 * saturation_fraction(x, k):.0f}%" if k else ""
        ax.set_title(f"{name}{sat}", fontsize=9)
        ax.tick_params(labelsize=7)
    return axes


def dead_relu_fraction(a: Any) -> float:
    """Fraction of units (last axis) that output 0 for every example in the batch."""
    x = _np(a)
    x = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(-1, 1)
    return float((x == 0).all(axis=0).mean())


def plot_dead_relus(history: Sequence[Any], ax: Any = None, labels: Sequence[str] | None = None):
    """Dead-ReLU fraction over training. ``history`` is a list with one entry per step:
    a number, or a dict ``{layer: fraction}`` (one line per layer)."""
    ax = _axes(ax)
    if history and isinstance(history[0], Mapping):
        names = list(history[0].keys())
        for name in names:
            ax.plot([h[name] for h in history], label=name)
        ax.legend(fontsize=8)
    else:
        ax.plot(list(history), label=None if not labels else labels[0])
    ax.set_xlabel("training step")
    ax.set_ylabel("fraction of dead ReLUs")
    ax.set_ylim(0, 1)
    return ax


def capture_grads(tensors: Sequence[Tensor]) -> list[Any]:
    """Register hooks that store each tensor's gradient when backward computes it.

    Returns a list, filled during backward (``None`` until then), aligned with
    ``tensors``: e.g. the hidden states h_1..h_T of an RNN.
    """
    store: list[Any] = [None] * len(tensors)
    for i, t in enumerate(tensors):

        def hook(g: Any, i: int = i) -> None:
            store[i] = g

        t.register_hook(hook)
    return store


def plot_grad_norm_per_step(grads: Sequence[Any], ax: Any = None, log: bool = True,
                            label: str | None = None):  # fmt: skip
    """||dL/dh_t|| against t for an RNN (vanishing gradients decay to the left)."""
    import numpy as np

    norms = [0.0 if g is None else float(np.linalg.norm(_np(g).ravel())) for g in grads]
    ax = _axes(ax)
    ax.plot(range(1, len(norms) + 1), norms, marker="o", label=label)
    if log and any(v > 0 for v in norms):
        ax.set_yscale("log")
    ax.set_xlabel("time step t")
    ax.set_ylabel(r"$\|\partial L / \partial h_t\|$")
    if label:
        ax.legend(fontsize=8)
    return ax
