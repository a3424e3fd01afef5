"""Vanishing and exploding gradients, and initialisation (Chapter 9).

Every experiment runs a plain stack of layers without biases,

    z_l = h_{l-1} W_l,   h_l = act(z_l)          (or h_l = h_{l-1} + act(z_l), residual)

for l = 1..depth, on a batch of standard-normal inputs h_0, and backpropagates the loss
``sum(h_depth * R)`` for a fixed random R, so that the gradient arriving at the top,
``dL/dh_depth = R``, has the same size in every configuration. What the layers do to it on
the way down is then the only thing that varies.

* :func:`weight_std` names the usual initialisations as standard deviations.
* :func:`stack_profile`: root-mean-square activation and gradient norm at every layer.
* :func:`layer_jacobians`, :func:`product_singular_values`: the layer Jacobians
  ``diag(act'(z_l)) W_l^T`` of one example, and the singular values of their products.
* :func:`profile_grid`, :func:`plot_profile_heatmap`: the 50-layer heatmap.
* :func:`clip_by_global_norm`, :func:`train_deep_relu`: exploding gradients and clipping.
* :func:`layer_norm`, :func:`normalised_stack_norms`: normalisation as a remedy.
* :func:`render_depth`, :func:`depth_explorer`: the chapter's explorer.

The gradients come from the engine (``backward``); NumPy is used only for the layer
Jacobians of one example, whose products the engine has no reason to form.
Matplotlib is imported inside the functions that draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import backprop_lab as bl
from backprop_lab.explore._blas import one_blas_thread
from backprop_lab.instrument.plots import capture_grads

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "weight_std",
    "stack_profile",
    "layer_jacobians",
    "product_singular_values",
    "profile_grid",
    "plot_profile_heatmap",
    "clip_by_global_norm",
    "train_deep_relu",
    "layer_norm",
    "normalised_stack_norms",
    "render_depth",
    "depth_explorer",
    "EXPLORER_CONTROLS",
    "one_layer_ratios",
]


def _linear(x: Any) -> Any:
    return x


def _np_sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# name -> (engine function, NumPy function, NumPy derivative), the last two of the
# pre-activation z
ACTIVATIONS: dict[str, tuple[Callable[[Any], Any], Callable, Callable]] = {
    "sigmoid": (bl.sigmoid, _np_sigmoid, lambda z: _np_sigmoid(z) * (1.0 - _np_sigmoid(z))),
    "tanh": (bl.tanh, np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "relu": (bl.relu, lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(np.float64)),
    "linear": (_linear, _linear, lambda z: np.ones_like(z)),
}

INITS = ("small", "xavier", "he", "large")


def weight_std(init: str, fan_in: int, fan_out: int | None = None) -> float:
    """Standard deviation of the weight entries under a named initialisation.

    ``small``: a fixed 0.01; ``xavier``: sqrt(2 / (fan_in + fan_out)) (Glorot and Bengio);
    ``he``: sqrt(2 / fan_in) (He et al.); ``large``: a fixed 1.0.
    """
    fan_out = fan_in if fan_out is None else fan_out
    if init == "small":
        return 0.01
    if init == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if init == "he":
        return math.sqrt(2.0 / fan_in)
    if init == "large":
        return 1.0
    raise ValueError(f"unknown initialisation {init!r}; choose one of {INITS}")


def _act(activation: str) -> Callable[[Any], Any]:
    try:
        return ACTIVATIONS[activation][0]
    except KeyError:
        raise ValueError(
            f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None


@one_blas_thread
def stack_profile(
    activation: str = "tanh",
    std: float | None = None,
    depth: int = 50,
    width: int = 128,
    batch: int = 64,
    residual: bool = False,
    seed: int = 0,
    init: str = "xavier",
) -> dict[str, np.ndarray]:
    """Run the stack forward and backward once; measure every layer.

    The weights are Gaussian with standard deviation ``std`` (default: ``init``'s).
    Returns ``act_rms[l]`` = root-mean-square of h_{l+1} and ``grad_norm[l]`` =
    ``||dL/dh_{l+1}||`` (Frobenius norm over the batch), for l = 0..depth-1, and
    ``input_grad_norm`` = ``||dL/dh_0||``. Infinite or NaN values are kept as they come:
    they are part of what an exploding stack does.
    """
    act = _act(activation)
    s = weight_std(init, width) if std is None else float(std)
    rng = np.random.default_rng(seed)
    x = bl.tensor(rng.normal(size=(batch, width)), requires_grad=True)
    h = x
    hs = []
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(depth):
            W = bl.tensor(s * rng.normal(size=(width, width)))
            out = act(h @ W)
            h = h + out if residual else out
            hs.append(h)
        R = rng.normal(size=(batch, width))
        grads = capture_grads(hs)
        bl.sum(h * R).backward()
        act_rms = np.array([math.sqrt(float(np.mean(np.asarray(t.data) ** 2))) for t in hs])
        grad_norm = np.array([float(np.linalg.norm(np.asarray(g))) for g in grads])
        input_norm = float(np.linalg.norm(np.asarray(x.grad)))
    return {"act_rms": act_rms, "grad_norm": grad_norm, "input_grad_norm": input_norm}


@one_blas_thread
def layer_jacobians(
    activation: str,
    std: float,
    depth: int = 50,
    width: int = 64,
    seed: int = 0,
    return_weights: bool = False,
) -> Any:
    """The layer Jacobians ``d h_l / d h_{l-1} = diag(act'(z_l)) W_l^T`` of one example.

    Row convention (the book's): a gradient row g at h_l becomes ``g @ J_l`` at h_{l-1}.
    With ``return_weights`` the result is ``(jacobians, weights)``.
    """
    _, act, dact = ACTIVATIONS[activation]
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(1, width))
    jacs, weights = [], []
    for _ in range(depth):
        W = std * rng.normal(size=(width, width))
        z = h @ W
        h = act(z)
        jacs.append(dact(z[0])[:, None] * W.T)
        weights.append(W)
    return (jacs, weights) if return_weights else jacs


@one_blas_thread
def product_singular_values(jacobians: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Singular values (descending) of the products seen from the loss side.

    Entry k-1 holds those of ``J_D J_{D-1} ... J_{D-k+1}``, the matrix that carries a
    gradient from the top layer down through k layers.
    """
    out = []
    P = None
    for J in reversed(jacobians):
        P = J if P is None else P @ J
        out.append(np.linalg.svd(P, compute_uv=False))
    return out


@one_blas_thread
def profile_grid(
    activations: Sequence[str] = ("sigmoid", "tanh", "relu"),
    inits: Sequence[str] = INITS,
    depth: int = 50,
    width: int = 128,
    batch: int = 64,
    seed: int = 0,
) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """:func:`stack_profile` for every (activation, initialisation) pair."""
    return {
        (a, i): stack_profile(a, depth=depth, width=width, batch=batch, seed=seed, init=i)
        for a in activations
        for i in inits
    }


def _log10(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(np.asarray(v, dtype=np.float64))
    return np.where(np.isnan(out), np.inf, out)


def _exponent_label(v: float) -> str:
    if not np.isfinite(v):
        return "inf" if v > 0 else "-inf"
    r = int(round(float(v)))
    return "0" if r == 0 else f"{r:+d}"


def plot_profile_heatmap(grid: dict[tuple[str, str], dict[str, np.ndarray]], clip: float = 8.0):
    """Two heatmaps, one above the other; one row per (activation, initialisation), one
    column per layer.

    Top: log10 of the root-mean-square activation, labelled with its value at the last
    layer. Bottom: log10 of ``||dL/dh_l||`` relative to the top layer's, labelled with its
    value at layer 1. Colours saturate at +-``clip``; the labels give the exact exponents.
    """
    import matplotlib.pyplot as plt

    keys = list(grid)
    act = np.array([_log10(grid[k]["act_rms"]) for k in keys])
    gn = np.array([_log10(grid[k]["grad_norm"]) - _log10(grid[k]["grad_norm"][-1:]) for k in keys])
    depth = act.shape[1]
    fig, axes = plt.subplots(2, 1, figsize=(6.8, 0.5 * len(keys) + 1.4), sharex=True)
    panels = [
        (axes[0], act, "log10 of the rms activation of $h_l$", -1, depth - 0.3, "right"),
        (axes[1], gn, rf"log10 of $\|\bar h_l\| / \|\bar h_{{{depth}}}\|$", 0, 1.3, "left"),
    ]
    for ax, data, title, col, x_text, align in panels:
        shown = np.clip(np.nan_to_num(data, posinf=clip, neginf=-clip), -clip, clip)
        im = ax.imshow(shown, aspect="auto", cmap="RdBu_r", vmin=-clip, vmax=clip,
                       extent=(0.5, depth + 0.5, len(keys) - 0.5, -0.5))  # fmt: skip
        for r, row in enumerate(data):
            v = row[col]
            dark = not np.isfinite(v) or abs(v) > clip / 2
            ax.text(x_text, r, _exponent_label(v), va="center", ha=align, fontsize=8,
                    color="white" if dark else "black")  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.set_yticks(range(len(keys)))
        ax.set_yticklabels([f"{a}, {i}" for a, i in keys], fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    axes[1].set_xlabel("layer l (input side on the left)")
    fig.tight_layout()
    return fig


def clip_by_global_norm(grads: Sequence[np.ndarray], max_norm: float) -> tuple[list, float]:
    """Scale all gradients by ``min(1, max_norm / total_norm)``; return them and the norm.

    The direction of the full gradient is kept; only its length is capped.
    """
    total = math.sqrt(sum(float(np.sum(np.asarray(g) ** 2)) for g in grads))
    factor = 1.0 if not np.isfinite(total) or total <= max_norm else max_norm / total
    return [g * factor for g in grads], total


@one_blas_thread
def train_deep_relu(
    X: np.ndarray,
    y: np.ndarray,
    gain: float,
    max_norm: float | None,
    steps: int = 25,
    lr: float = 0.05,
    depth: int = 12,
    width: int = 64,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Full-batch SGD on a ReLU MLP ``X -> width x depth -> classes`` (no biases).

    Weights are He-normal times ``gain``; with ``max_norm`` set, the gradient is clipped
    to that global norm before every step. Returns the loss and the gradient norm (before
    clipping) at every step; a run that overflows records inf/NaN and stops updating.
    """
    rng = np.random.default_rng(seed)
    sizes = [X.shape[1]] + [width] * depth + [int(np.max(y)) + 1]
    Ws = [
        bl.tensor(gain * rng.normal(size=(a, b)) * math.sqrt(2.0 / a), requires_grad=True)
        for a, b in zip(sizes[:-1], sizes[1:])
    ]
    Xt = bl.tensor(X)
    losses, norms = [], []
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            h = Xt
            for i, W in enumerate(Ws):
                h = h @ W
                if i < len(Ws) - 1:
                    h = bl.relu(h)
            loss = bl.cross_entropy(h, y)
            value = float(loss.data)
            losses.append(value)
            if not np.isfinite(value):
                norms.append(float("nan"))
                continue
            loss.backward()
            grads, total = clip_by_global_norm(
                [np.asarray(W.grad) for W in Ws], math.inf if max_norm is None else max_norm
            )
            norms.append(total)
            for W, g in zip(Ws, grads):
                W.data = W.data - lr * g
                W.grad = None
    return {"loss": np.array(losses), "grad_norm": np.array(norms)}


def layer_norm(h: Any, eps: float = 1e-5) -> Any:
    """Normalise every row (example) to mean 0 and variance 1 over its features, with
    engine ops, so the engine differentiates through the statistics (Chapter 8)."""
    mu = bl.mean(h, axis=-1, keepdims=True)
    c = h - mu
    var = bl.mean(c * c, axis=-1, keepdims=True)
    return c / (var + eps) ** 0.5


@one_blas_thread
def normalised_stack_norms(
    gain: float,
    normalise: bool,
    activation: str = "tanh",
    depth: int = 50,
    width: int = 128,
    batch: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """``||dL/dh_l||`` per layer of ``h_l = act(norm(h_{l-1} W_l))`` with Xavier weights
    times ``gain``; ``normalise=False`` drops the layer norm."""
    act = _act(activation)
    rng = np.random.default_rng(seed)
    s = gain * weight_std("xavier", width)
    h = bl.tensor(rng.normal(size=(batch, width)), requires_grad=True)
    hs = []
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(depth):
            z = h @ bl.tensor(s * rng.normal(size=(width, width)))
            h = act(layer_norm(z) if normalise else z)
            hs.append(h)
        grads = capture_grads(hs)
        bl.sum(h * rng.normal(size=(batch, width))).backward()
        return np.array([float(np.linalg.norm(np.asarray(g))) for g in grads])


# ------------------------------------------------------------------------------- explorer
EXPLORER_CONTROLS: dict[str, list] = {
    "depth": [10, 50],
    "activation": ["sigmoid", "tanh", "relu"],
    "scale": [0.5, 1.0, 2.0],
    "residual": ["off", "on"],
}


@one_blas_thread
def render_depth(depth: int = 50, activation: str = "tanh", scale: float = 1.0,
                 residual: str = "off"):  # fmt: skip
    """The explorer's view: gradient norm per layer (bars) and rms activation (line).

    ``scale`` multiplies the standard initialisation of the activation (Xavier for sigmoid
    and tanh, He for ReLU), so 1.0 is the textbook setting.
    """
    import matplotlib.pyplot as plt

    init = "he" if activation == "relu" else "xavier"
    width = 64
    std = scale * weight_std(init, width)
    prof = stack_profile(activation, std=std, depth=depth, width=width, batch=32,
                         residual=residual == "on", seed=0)  # fmt: skip
    g = prof["grad_norm"] / prof["grad_norm"][-1]
    a = prof["act_rms"]
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    layers = np.arange(1, depth + 1)
    finite = np.isfinite(g) & (g > 0)
    ax.bar(layers[finite], g[finite], color="#4c78a8", width=0.8, label=r"$\|\bar h_l\|$ / top")
    ax.set_yscale("log")
    ax.set_xlabel("layer l (input side on the left)")
    ax.set_ylabel("gradient norm / top layer's", fontsize=9)
    ax2 = ax.twinx()
    ax2.plot(layers, np.where(np.isfinite(a) & (a > 0), a, np.nan), color="#e45756", lw=1.5)
    ax2.set_yscale("log")
    ax2.set_ylabel("rms activation", color="#e45756", fontsize=9)
    lo = min(1e-6, np.nanmin(np.where(finite, g, np.nan)) / 3) if finite.any() else 1e-6
    hi = max(1e6, np.nanmax(np.where(finite, g, np.nan)) * 3) if finite.any() else 1e6
    ax.set_ylim(lo, hi)
    first = g[0]
    verdict = "not finite" if not np.isfinite(first) else f"{first:.1e}"
    ax.set_title(
        f"{activation}, {init} x {scale:g}, residual {residual}: layer 1 gets {verdict} "
        f"of the top gradient",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def depth_explorer() -> Any:
    """The chapter's explorer (Contract B): depth, activation, scale, residual on/off."""
    from backprop_lab.explorer import Explorer

    return Explorer(
        render_depth,
        controls=EXPLORER_CONTROLS,
        value={"depth": 50, "activation": "tanh", "scale": 1.0, "residual": "off"},
        title="Gradient norm per layer",
    )


@one_blas_thread
def one_layer_ratios(
    activation: str, std: float, fan_in: int = 512, fan_out: int = 512, batch: int = 512,
    seed: int = 0,
) -> tuple[float, float]:  # fmt: skip
    """Second-moment ratios across one layer ``z_in -> h = act(z_in) -> z_out = h W``.

    ``z_in`` is standard normal and the upstream gradient at ``z_out`` too. Returns
    ``(E[z_out^2] / E[z_in^2], E[dL/dz_in^2] / E[dL/dz_out^2])``: the forward and the
    backward factor of one layer, measured with the engine.
    """
    act = _act(activation)
    rng = np.random.default_rng(seed)
    z_in = bl.tensor(rng.normal(size=(batch, fan_in)), requires_grad=True)
    W = bl.tensor(std * rng.normal(size=(fan_in, fan_out)))
    z_out = act(z_in) @ W
    g = rng.normal(size=(batch, fan_out))
    bl.sum(z_out * g).backward()
    forward = float(np.mean(np.asarray(z_out.data) ** 2) / np.mean(np.asarray(z_in.data) ** 2))
    backward = float(np.mean(np.asarray(z_in.grad) ** 2) / np.mean(g**2))
    return forward, backward
