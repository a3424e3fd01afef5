"""Gradient checking and the cost of derivatives (Chapter 10).

* :func:`mlp_problem`, :func:`mlp_loss`: a small tanh MLP on a seeded batch, its loss as a
  function of one flat parameter vector (so that finite differences can nudge any entry).
* :func:`cost_in_forward_passes`: what backprop, one-sided and centered differences, a
  directional check and a JVP cost, counted with :func:`backprop_lab.count`;
  :func:`time_gradients` times backprop against centered differences.
* :func:`step_error_curve`, :func:`plot_step_curves`: the error of one-sided and centered
  differences against the step size, in float64 and float32, from measurements made with
  :mod:`backprop_lab.numdiff`.
* :func:`relative_errors`: the entrywise relative error of two gradients, with a floor.
* :func:`render_steps`, :func:`step_explorer`: the chapter's explorer.

Finite differences always come from :mod:`backprop_lab.numdiff`, the project's one
implementation; matplotlib is imported inside the functions that draw.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import backprop_lab as bl
from backprop_lab import numdiff
from backprop_lab.explore._blas import one_blas_thread

__all__ = [
    "mlp_problem",
    "mlp_loss",
    "flat_gradient",
    "cost_in_forward_passes",
    "time_gradients",
    "TEST_FUNCTIONS",
    "step_error_curve",
    "best_step",
    "plot_step_curves",
    "relative_errors",
    "render_steps",
    "step_explorer",
    "EXPLORER_CONTROLS",
]


# ------------------------------------------------------------------------- a small problem
def mlp_problem(
    sizes: Sequence[int] = (8, 16, 16, 1), batch: int = 32, seed: int = 0
) -> tuple[np.ndarray, list[tuple[int, ...]], np.ndarray, np.ndarray]:
    """A tanh MLP with the given layer sizes and a seeded regression batch.

    Returns ``(theta, shapes, X, Y)``: all parameters as one flat float64 vector (weights
    then bias of each layer, Xavier-scaled weights and small random biases), their shapes,
    inputs ``X`` (batch, sizes[0]) and targets ``Y`` (batch, sizes[-1]).
    """
    rng = np.random.default_rng(seed)
    parts, shapes = [], []
    for a, b in zip(sizes[:-1], sizes[1:]):
        parts += [rng.normal(size=(a, b)) * math.sqrt(2.0 / (a + b)), 0.1 * rng.normal(size=b)]
        shapes += [(a, b), (b,)]
    theta = np.concatenate([p.ravel() for p in parts])
    X = rng.normal(size=(batch, sizes[0]))
    Y = np.sin(X[:, : sizes[-1]])
    return theta, shapes, X, Y


def _unflatten(theta: Any, shapes: Sequence[tuple[int, ...]]) -> list[Any]:
    out, k = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(bl.reshape(theta[k : k + size], shape))
        k += size
    return out


def mlp_loss(theta: Any, shapes: Sequence[tuple[int, ...]], X: Any, Y: Any) -> Any:
    """Mean squared error of the tanh MLP whose flat parameters are ``theta`` (a Tensor or
    an array); returns a scalar Tensor, differentiable with respect to ``theta``."""
    if not isinstance(theta, bl.Tensor):
        theta = bl.tensor(theta)
    params = _unflatten(theta, shapes)
    h = bl.tensor(X)
    for i in range(0, len(params), 2):
        h = h @ params[i] + params[i + 1]
        if i + 2 < len(params):
            h = bl.tanh(h)
    return bl.mse(h, Y)


@one_blas_thread
def flat_gradient(theta: np.ndarray, shapes, X, Y) -> np.ndarray:
    """Backprop's gradient of :func:`mlp_loss` with respect to ``theta``."""
    return np.asarray(bl.grad(lambda t: mlp_loss(t, shapes, X, Y))(theta))


# --------------------------------------------------------------------------------- costs
@one_blas_thread
def cost_in_forward_passes(
    sizes: Sequence[int], batch: int = 32, seed: int = 0
) -> dict[str, float]:
    """The work of five ways to learn about the gradient, in forward-pass equivalents
    (FLOPs counted by :func:`backprop_lab.count`, divided by one forward pass's FLOPs).

    ``backprop``: forward + backward. ``one_sided`` and ``centered``: finite differences of
    every parameter (N + 1 and 2N forward passes; counted on the exact formula because the
    FLOPs of every pass are equal). ``directional``: the centered difference along one
    direction (2 passes). ``jvp``: one forward-mode pass with a tangent on the parameters.
    Also returns ``N`` and ``forward_flops``.
    """
    theta, shapes, X, Y = mlp_problem(sizes, batch, seed)
    n = theta.size
    with bl.count() as c_fwd, bl.no_grad():
        mlp_loss(theta, shapes, X, Y)
    with bl.count() as c_bp:
        flat_gradient(theta, shapes, X, Y)
    v = np.random.default_rng(seed).normal(size=n)
    with bl.count() as c_jvp:
        bl.jvp(lambda t: mlp_loss(t, shapes, X, Y), (theta,), (v,))
    f = c_fwd.forward_flops
    return {
        "N": n,
        "forward_flops": f,
        "backprop": c_bp.flops / f,
        "backward": c_bp.backward_flops / f,
        "one_sided": float(n + 1),
        "centered": float(2 * n),
        "directional": 2.0,
        "jvp": (c_jvp.forward_flops + c_jvp.tangent_flops) / f,
    }


def _best_time(fn: Callable[[], Any], repeats: int) -> float:
    best = math.inf
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    finally:
        if enabled:
            gc.enable()
    return best


@one_blas_thread
def time_gradients(sizes: Sequence[int], batch: int = 32, seed: int = 0) -> dict[str, float]:
    """Seconds (best of a few runs) of one forward pass, one backprop gradient and one
    full centered-difference gradient (via :func:`backprop_lab.numdiff.partials`)."""
    theta, shapes, X, Y = mlp_problem(sizes, batch, seed)

    def forward() -> float:
        with bl.no_grad():
            return float(mlp_loss(theta, shapes, X, Y).data)

    fd = _best_time(lambda: numdiff.partials(forward, theta), 1)
    return {
        "forward_s": _best_time(forward, 20),
        "backprop_s": _best_time(lambda: flat_gradient(theta, shapes, X, Y), 20),
        "centered_s": fd,
        "N": theta.size,
    }


# ----------------------------------------------------------------------- error vs step
def _f_sin_exp(x):
    return np.sin(x) * np.exp(x)


def _d_sin_exp(x):
    return np.exp(x) * (np.sin(x) + np.cos(x))


def _f_softplus(x):
    return np.log1p(np.exp(x))


def _d_softplus(x):
    return 1.0 / (1.0 + np.exp(-x))


def _f_cube(x):
    return x**3 - 2.0 * x


def _d_cube(x):
    return 3.0 * x**2 - 2.0


#: name -> (f, exact derivative, where to evaluate): functions of one variable
TEST_FUNCTIONS: dict[str, tuple[Callable, Callable, tuple[float, float]]] = {
    "sin(x) exp(x)": (_f_sin_exp, _d_sin_exp, (-1.0, 1.0)),
    "softplus(x)": (_f_softplus, _d_softplus, (-2.0, 2.0)),
    "x^3 - 2x": (_f_cube, _d_cube, (0.5, 2.0)),
}


def step_error_curve(
    function: str = "sin(x) exp(x)",
    scheme: str = "centered",
    dtype: str = "float64",
    steps: Sequence[float] | None = None,
    points: int = 48,
    bug: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Median relative error of finite differences against the exact derivative.

    The function is evaluated in ``dtype`` (its argument is rounded to ``dtype`` first, as
    it would be in a float32 network); the derivative estimate comes from
    :func:`backprop_lab.numdiff.derivative` at ``points`` random points. ``bug`` multiplies
    the "analytic" derivative by ``1 + bug``, as a backward rule with a small error would.
    Returns ``(steps, median relative errors)``.
    """
    f, df, (lo, hi) = TEST_FUNCTIONS[function]
    cast = {"float64": np.float64, "float32": np.float32}[dtype]
    hs = 10.0 ** np.arange(-14, 0.01, 0.25) if steps is None else np.asarray(steps, float)
    xs = np.random.default_rng(seed).uniform(lo, hi, size=points)

    def in_dtype(x: float) -> float:
        return float(f(cast(x)))

    errs = []
    with np.errstate(all="ignore"):
        for h in hs:
            rel = []
            for x in xs:
                exact = float(df(x))
                analytic = exact * (1.0 + bug)
                numeric = numdiff.derivative(in_dtype, float(cast(x)), h=float(h), scheme=scheme)
                rel.append(abs(numeric - analytic) / max(abs(exact), 1e-300))
            errs.append(float(np.median(rel)))
    return hs, np.array(errs)


def best_step(steps: np.ndarray, errors: np.ndarray) -> tuple[float, float]:
    """The step with the smallest error and that error."""
    i = int(np.argmin(errors))
    return float(steps[i]), float(errors[i])


_COLORS = {
    ("forward", "float64"): "#4c78a8",
    ("centered", "float64"): "#e45756",
    ("forward", "float32"): "#72b7b2",
    ("centered", "float32"): "#f58518",
}


def plot_step_curves(curves: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], ax=None):
    """Error against step, one line per (scheme, dtype), with eps^(1/2) and eps^(1/3) of
    each precision marked; the minimum of each curve is a dot."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.8, 3.8))
    for (scheme, dtype), (hs, errs) in curves.items():
        color = _COLORS.get((scheme, dtype), None)
        name = "one-sided" if scheme == "forward" else "centered"
        ax.loglog(hs, errs, "-", color=color, lw=1.6, label=f"{name}, {dtype}")
        h, e = best_step(hs, errs)
        ax.loglog([h], [e], "o", color=color, ms=5)
    for dtype, style in (("float64", ":"), ("float32", "--")):
        eps = float(np.finfo(dtype).eps)
        for power, label in ((1 / 2, "1/2"), (1 / 3, "1/3")):
            ax.axvline(eps**power, color="0.6", ls=style, lw=0.8)
            ax.text(eps**power * 1.3, 2e-13, rf"$\epsilon_{{{dtype[-2:]}}}^{{{label}}}$",
                    fontsize=8, ha="left", va="bottom", color="0.35")  # fmt: skip
    ax.set_ylim(1e-13, 3.0)
    ax.set_xlabel("step h")
    ax.set_ylabel("median relative error")
    ax.legend(fontsize=8, loc="lower left")
    return ax


def relative_errors(analytic: Any, numeric: Any, floor: float = 1e-10) -> np.ndarray:
    """``|a - n| / max(|a| + |n|, floor)`` entrywise, in float64.

    The floor keeps two tiny numbers (say 1e-14 and 3e-15, both zero up to round-off) from
    being reported as a relative error near 1.
    """
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    return np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), floor)


# ------------------------------------------------------------------------------- explorer
EXPLORER_CONTROLS: dict[str, list] = {
    "function": list(TEST_FUNCTIONS),
    "dtype": ["float64", "float32"],
    "bug": [0.0, 1e-6, 1e-3],
    "scheme": ["centered", "forward"],
}


def render_steps(function: str = "sin(x) exp(x)", dtype: str = "float64", bug: float = 0.0,
                 scheme: str = "centered"):  # fmt: skip
    """Error against step for one function, precision, scheme and planted bug size.

    The other scheme is drawn faintly for comparison; the dotted lines mark the theory's
    optimal step (eps^(1/2) one-sided, eps^(1/3) centered) and the horizontal one the bug.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    hs = 10.0 ** np.arange(-14, 0.01, 0.5)
    for sch in ("forward", "centered"):
        _, errs = step_error_curve(function, sch, dtype, steps=hs, points=24, bug=bug)
        main = sch == scheme
        name = "one-sided" if sch == "forward" else "centered"
        ax.loglog(hs, errs, "-", lw=2 if main else 1, alpha=1 if main else 0.35,
                  color=_COLORS[(sch, dtype)], label=name)  # fmt: skip
        if main:
            eps = float(np.finfo(dtype).eps)
            h_theory = eps ** (0.5 if sch == "forward" else 1 / 3)
            i = int(np.argmin(np.abs(np.log(hs / h_theory))))
            ax.loglog([hs[i]], [errs[i]], "o", color=_COLORS[(sch, dtype)])
            ax.set_title(f"{function}, {dtype}, {name}: at h = {hs[i]:.0e} the error is "
                         f"{errs[i]:.0e}", fontsize=10)  # fmt: skip
            ax.axvline(h_theory, color="0.5", ls=":", lw=1)
    if bug:
        ax.axhline(bug, color="black", ls="--", lw=0.8)
        ax.text(2e-14, bug * 1.4, f"planted error {bug:g}", fontsize=8)
    ax.set_ylim(1e-13, 3.0)
    ax.set_xlabel("step h")
    ax.set_ylabel("median relative error")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def step_explorer() -> Any:
    """The chapter's explorer (Contract B): function, precision, planted bug, scheme."""
    from backprop_lab.explorer import Explorer

    return Explorer(
        render_steps,
        controls=EXPLORER_CONTROLS,
        value={"function": "sin(x) exp(x)", "dtype": "float64", "bug": 0.0, "scheme": "centered"},
        title="Finite-difference error against the step",
    )


# ------------------------------------------------------------------ layers to be checked
class CheckableLayer:
    """A layer to check: ``forward(*inputs)``, ``backward(upstream, *inputs)`` (one
    gradient per input) and ``inputs``, a point to check it at. NumPy in, NumPy out."""

    def __init__(self, name: str, forward: Callable, backward: Callable, inputs: Sequence):
        self.name = name
        self.forward = forward
        self.backward = backward
        self.inputs = tuple(np.array(x, dtype=np.float64) for x in inputs)

    def __repr__(self) -> str:
        shapes = ", ".join(str(x.shape) for x in self.inputs)
        return f"<layer {self.name}: inputs of shapes {shapes}>"


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softplus_fwd(x):
    return np.logaddexp(0.0, x)


def _silu_fwd(x):
    return x * _sigmoid(x)


def _root(q):
    return np.sqrt(q.shape[1])


def _scores_fwd(q, k):
    return q @ k.T / _root(q)


def _affine_tanh_fwd(x, w, b):
    return np.tanh(x @ w + b)


def _safe_log_fwd(x):
    return np.log(x + 1e-5)


def _log_cosh_fwd(x):
    return np.logaddexp(x, -x) - np.log(2.0)


# name -> forward, {variant: backward}; variant "ok" is right, every other one has a bug in
# the gradient of the input whose position is the variant's first character
_POOL: dict[str, tuple[Callable, dict[str, Callable]]] = {
    "softplus": (
        _softplus_fwd,
        {
            "ok": lambda g, x: (g * _sigmoid(x),),
            "0-sign": lambda g, x: (g * _sigmoid(-x),),
            "0-slope": lambda g, x: (g * _sigmoid(x) * (1 - _sigmoid(x)),),
        },
    ),
    "silu": (
        _silu_fwd,
        {
            "ok": lambda g, x: (g * (_sigmoid(x) * (1 + x * (1 - _sigmoid(x)))),),
            "0-product": lambda g, x: (g * _sigmoid(x),),
        },
    ),
    "attention scores": (
        _scores_fwd,
        {
            "ok": lambda g, q, k: (g @ k / _root(q), g.T @ q / _root(q)),
            "1-scale": lambda g, q, k: (g @ k / _root(q), g.T @ q),
            "1-transpose": lambda g, q, k: (g @ k / _root(q), g @ q / _root(q)),
        },
    ),
    "affine tanh": (
        _affine_tanh_fwd,
        {
            "ok": lambda g, x, w, b: _affine_tanh_bwd(g, x, w, b),
            "1-no-slope": lambda g, x, w, b: _affine_tanh_bwd(g, x, w, b, bug="dw"),
            "0-no-transpose": lambda g, x, w, b: _affine_tanh_bwd(g, x, w, b, bug="dx"),
        },
    ),
    "safe log": (
        _safe_log_fwd,
        {
            "ok": lambda g, x: (g / (x + 1e-5),),
            "0-epsilon": lambda g, x: (g / x,),
        },
    ),
    "log cosh": (
        _log_cosh_fwd,
        {
            "ok": lambda g, x: (g * np.tanh(x),),
            "0-slope": lambda g, x: (g * (1 - np.tanh(x) ** 2),),
        },
    ),
}


def _affine_tanh_bwd(g, x, w, b, bug=None):
    t = np.tanh(x @ w + b)
    dz = g * (1 - t * t)
    dx = dz @ (w if bug == "dx" else w.T)
    dw = x.T @ (g if bug == "dw" else dz)
    return dx, dw, dz.sum(axis=0)


def layer_kinds() -> dict[str, list[str]]:
    """Every layer kind of the pool and its variants ("ok" is the right one)."""
    return {name: list(variants) for name, (_, variants) in _POOL.items()}


def make_layer(kind: str, variant: str, inputs: Sequence) -> CheckableLayer:
    """A :class:`CheckableLayer` of the pool; ``variant`` "ok" or one with a planted bug."""
    forward, variants = _POOL[kind]
    return CheckableLayer(kind, forward, variants[variant], inputs)


def draw_inputs(kind: str, rng: np.random.Generator, scale: float = 1.0) -> tuple:
    """A point to check a layer of ``kind`` at (away from any kink), times ``scale``."""
    if kind == "attention scores":
        return (scale * rng.normal(size=(4, 3)), scale * rng.normal(size=(4, 3)))
    if kind == "affine tanh":
        return (rng.normal(size=(5, 3)), 0.5 * rng.normal(size=(3, 3)), 0.1 * rng.normal(size=3))
    if kind == "safe log":
        return (scale * rng.uniform(2.0, 4.0, size=(3, 4)),)
    return (scale * rng.uniform(-3.0, 3.0, size=(3, 4)),)


def mystery_layers(seed: int = 7) -> list[CheckableLayer]:
    """Three layers to try exercise 10.2's ``find_wrong`` on: one of them has a wrong
    backward rule for one of its inputs. Which one is for the gradient check to say (the
    notebook does not name it)."""
    rng = np.random.default_rng(seed)
    kinds = ("softplus", "safe log", "attention scores")
    variants = ("ok", "0-epsilon", "ok")
    return [make_layer(k, v, draw_inputs(k, rng)) for k, v in zip(kinds, variants)]
