"""Chapter 3 (Jacobians): their shapes, and what it costs to build them.

* :func:`jacobian_matrix` is ``bl.jacobian`` reshaped to a matrix (rows: outputs, columns:
  inputs), whatever the shapes of input and output;
* :func:`jacobian_with_passes` builds it in either mode under :func:`backprop_lab.count`
  and reports how many forward and backward passes that took;
* :func:`example_maps` are the three maps of the explorer (elementwise tanh, the linear map
  ``x @ W``, softmax) and :func:`jacobian_explorer` (an :class:`~backprop_lab.explorer.Explorer`)
  shows their Jacobians, built by the engine, as heatmaps.

Matplotlib is imported inside the functions that draw.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import backprop_lab as bl

__all__ = [
    "jacobian_matrix",
    "jacobian_with_passes",
    "example_maps",
    "plot_jacobian",
    "jacobian_figure",
    "jacobian_explorer",
]


def jacobian_matrix(f: Callable[[Any], bl.Tensor], x: Any, mode: str = "reverse") -> np.ndarray:
    """The Jacobian of ``f`` at ``x`` as a 2-D NumPy array of shape (output size, input size).

    ``bl.jacobian`` returns ``output.shape + input.shape``; this flattens both parts in
    row-major order, the book's convention for matrices and tensors."""
    x = np.asarray(x, dtype=np.float64)
    J = np.asarray(bl.to_numpy(bl.jacobian(f, mode=mode)(x)))
    return J.reshape(-1, x.size)


def jacobian_with_passes(
    f: Callable[[Any], bl.Tensor], x: Any, mode: str
) -> tuple[np.ndarray, dict[str, int]]:
    """Build the Jacobian with ``bl.jacobian(f, mode=mode)`` and count the work.

    Returns the matrix and a dict: ``forward_passes`` (calls of ``f``), ``backward_passes``
    (reverse sweeps through the recorded graph) and ``tangent_ops`` (ops that pushed a
    forward-mode tangent)."""
    with bl.count() as c:
        J = jacobian_matrix(c.track(f), x, mode=mode)
    return J, {
        "forward_passes": c.forward_passes,
        "backward_passes": c.backward_passes,
        "tangent_ops": c.tangent_ops,
    }


def example_maps(n: int = 4, m: int = 3, seed: int = 0) -> dict[str, tuple[Callable, str, float]]:
    """Three maps from R^n: ``name -> (f, description, color limit)``; the color limit
    bounds every entry of the map's Jacobian, so heatmaps stay comparable as x moves.

    * ``"elementwise tanh"``: R^n -> R^n, Jacobian diag(1 - tanh(x)^2);
    * ``"linear x @ W"``: R^n -> R^m with a fixed W of shape (n, m), Jacobian W^T (m x n);
    * ``"softmax"``: R^n -> R^n, Jacobian diag(s) - s s^T.
    """
    W = np.round(np.random.default_rng(seed).normal(size=(n, m)), 1)
    return {
        "elementwise tanh": (bl.tanh, "y = tanh(x): y_i depends on x_i only", 1.0),
        "linear x @ W": (
            lambda x: x @ W,
            f"y = x @ W, W of shape {W.shape}",
            float(np.max(np.abs(W))),
        ),
        "softmax": (bl.softmax, "y = softmax(x): every y_i depends on every x_j", 0.25),
    }


def plot_jacobian(
    ax: Any, J: np.ndarray, title: str = "", annotate: bool = True, lim: float | None = None
) -> Any:
    """A heatmap of J (rows: outputs y_i, columns: inputs x_j) on the symmetric color scale
    [-lim, lim] (default: the largest |entry|; fix it to compare several heatmaps)."""
    if lim is None:
        lim = max(float(np.max(np.abs(J))), 1e-12)
    im = ax.imshow(J, cmap="RdBu_r", vmin=-lim, vmax=lim)
    m, n = J.shape
    ax.set_xticks(range(n), [f"x{j + 1}" for j in range(n)], fontsize=8)
    ax.set_yticks(range(m), [f"y{i + 1}" for i in range(m)], fontsize=8)
    if annotate and m * n <= 64:
        for i in range(m):
            for j in range(n):
                v = J[i, j]
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if abs(v) > 0.6 * lim else "black")  # fmt: skip
    ax.set_title(title, fontsize=9)
    return im


SHIFTS = [-2.0, 0.0, 2.0]
SCALES = [0.5, 1.0, 2.0, 4.0]


def jacobian_figure(name: str, shift: float, scale: float, n: int = 4, m: int = 3,
                    seed: int = 0) -> Any:  # fmt: skip
    """Left: the input ``x = scale * linspace(-1, 1, n)`` with ``shift`` added to x1, and the
    map's output. Right: the map's Jacobian at x (engine-built) on the map's fixed colour
    scale."""
    from matplotlib.figure import Figure

    f, desc, lim = example_maps(n, m, seed)[name]
    x = scale * np.linspace(-1.0, 1.0, n)
    x[0] += shift
    J = jacobian_matrix(f, x)
    y = np.asarray(bl.to_numpy(f(bl.tensor(x)).data))
    fig = Figure(figsize=(6.5, 3.2))
    a0, a1 = fig.subplots(1, 2, width_ratios=[1, 1.15])
    k = np.arange(max(x.size, y.size))
    a0.bar(k[: x.size] - 0.2, x, width=0.4, label="input x", color="#4c78a8")
    a0.bar(k[: y.size] + 0.2, y, width=0.4, label="output y", color="#f58518")
    a0.axhline(0, color="k", lw=0.6)
    a0.set_xticks(k, [str(i + 1) for i in k])
    a0.set_xlabel("component", fontsize=9)
    a0.tick_params(labelsize=8)
    a0.legend(fontsize=8)
    a0.set_title(desc, fontsize=8)
    im = plot_jacobian(a1, J, f"Jacobian, {J.shape[0]} x {J.shape[1]}", lim=lim)
    cb = fig.colorbar(im, ax=a1, shrink=0.8)
    cb.ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def jacobian_explorer(n: int = 4, m: int = 3, seed: int = 0) -> Any:
    """Explorer: pick a map (elementwise tanh, linear ``x @ W``, softmax), move the input
    (``shift`` adds to x1, ``scale`` multiplies a fixed base vector) and watch the input,
    the output and the Jacobian heatmap; see :func:`jacobian_figure`."""
    from backprop_lab.explorer import Explorer

    def render(map: str, shift: float, scale: float) -> Any:  # noqa: A002 - the control's name
        return jacobian_figure(map, shift, scale, n=n, m=m, seed=seed)

    return Explorer(
        render,
        controls={"map": list(example_maps(n, m, seed)), "shift": SHIFTS, "scale": SCALES},
        value={"map": "softmax", "shift": 0.0, "scale": 1.0},
        title="Three Jacobians as heatmaps",
    )
