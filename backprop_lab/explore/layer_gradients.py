"""Layer gradients (Chapter 8): the linear layer's Jacobian, softmax with cross-entropy,
and normalisation layers.

* :func:`linear_weight_jacobian`: the four-index Jacobian of ``Y = X W`` with respect to
  ``W``, built by the engine one row at a time (to look at, never to use), and
  :func:`jacobian_storage` the size it would have for a real layer.
* :func:`normalise`: batch normalisation (``axis=0``) or layer normalisation
  (``axis=-1``) composed from engine ops, so that the engine differentiates through the
  statistics.
* :func:`softmax_cross_entropy`: the loss and its gradient computed two ways with the
  engine, composed naively from ``exp``, ``sum`` and ``log``, or with the fused
  log-sum-exp op ``bl.cross_entropy``; :func:`render_overflow` and
  :func:`overflow_explorer` show where the naive way breaks in float16, 32 and 64.

Nothing here computes a backward rule by hand: every gradient comes from the engine.
Matplotlib is imported inside the functions that draw.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import backprop_lab as bl
from backprop_lab.explore._blas import one_blas_thread

__all__ = [
    "linear_weight_jacobian",
    "jacobian_storage",
    "normalise",
    "softmax_cross_entropy",
    "overflow_threshold",
    "render_overflow",
    "overflow_explorer",
    "EXPLORER_CONTROLS",
    "LOGIT_PATTERN",
    "LABEL",
]


@one_blas_thread
def linear_weight_jacobian(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``dY[b, j] / dW[i, k]`` for ``Y = X @ W``, shape ``(B, m, n, m)``, via ``bl.jacobian``."""
    return np.asarray(bl.jacobian(lambda w: bl.tensor(X) @ w)(W))


def jacobian_storage(batch: int, n_in: int, n_out: int, bytes_per_entry: int = 8) -> dict:
    """Entries, bytes and contraction cost of the weight Jacobian of a dense layer,
    against the matrix product ``X^T @ dY`` that replaces it."""
    entries = batch * n_out * n_in * n_out
    return {
        "entries": entries,
        "bytes": entries * bytes_per_entry,
        "nonzero_fraction": 1.0 / n_out,
        "contraction_mults": entries,
        "matmul_mults": batch * n_in * n_out,
    }


def normalise(x: Any, axis: int = 0, eps: float = 1e-5) -> Any:
    """``(x - mean) / sqrt(var + eps)`` along ``axis``, with engine ops.

    ``axis=0`` normalises every feature over the batch (batch normalisation without its
    scale and shift); ``axis=-1`` every example over its features (layer normalisation).
    The variance is the biased one (divide by the count), as in both layers' definitions.
    """
    mu = bl.mean(x, axis=axis, keepdims=True)
    c = x - mu
    var = bl.mean(c * c, axis=axis, keepdims=True)
    return c / (var + eps) ** 0.5


def softmax_cross_entropy(logits: np.ndarray, label: int, method: str, dtype: str = "float64"):
    """Loss and gradient of the cross-entropy of one row of logits, by the engine.

    ``method="naive"``: ``p = exp(z) / sum(exp(z))`` then ``-log(p[label])``, three engine
    ops as one would write them. ``method="log-sum-exp"``: the engine's fused
    ``bl.cross_entropy``, which subtracts the row maximum. Computed in ``dtype``; returns
    ``(loss, gradient)`` as NumPy values in that dtype (inf and NaN included).
    """
    z = bl.tensor(np.asarray(logits, dtype=dtype).reshape(1, -1), requires_grad=True)
    with np.errstate(all="ignore"):
        if method == "naive":
            e = bl.exp(z)
            p = e / bl.sum(e, axis=1, keepdims=True)
            loss = -bl.log(p[0, label])
        elif method == "log-sum-exp":
            loss = bl.cross_entropy(z, np.array([label]))
        else:
            raise ValueError(f"method must be 'naive' or 'log-sum-exp', not {method!r}")
        loss.backward()
    return np.asarray(loss.data), np.asarray(z.grad).reshape(-1)


def overflow_threshold(dtype: str) -> float:
    """The largest x for which exp(x) is finite in ``dtype``: log of the largest float."""
    return float(np.log(np.finfo(dtype).max))


# ------------------------------------------------------------------------------- explorer
LOGIT_PATTERN = np.array([1.0, 0.5, -0.3, -1.0])
LABEL = 2
EXPLORER_CONTROLS: dict[str, list] = {
    "scale": [1, 8, 30, 60, 300, 1000],
    "dtype": ["float16", "float32", "float64"],
    "method": ["naive", "log-sum-exp"],
}


def _exact(scale: float) -> tuple[float, np.ndarray]:
    z = scale * LOGIT_PATTERN
    m = z.max()
    lse = m + math.log(float(np.sum(np.exp(z - m))))
    p = np.exp(z - lse)
    y = np.zeros_like(p)
    y[LABEL] = 1.0
    return float(lse - z[LABEL]), p - y


@one_blas_thread
def render_overflow(scale: float = 60, dtype: str = "float32", method: str = "naive"):
    """Logits ``scale * [1, 0.5, -0.3, -1]``, label 2: the gradient the chosen method gets
    in ``dtype`` (bars) against the exact ``p - y`` (outlines), and both losses."""
    import matplotlib.pyplot as plt

    loss, grad = softmax_cross_entropy(scale * LOGIT_PATTERN, LABEL, method, dtype)
    exact_loss, exact_grad = _exact(scale)
    grad64 = grad.astype(np.float64)
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    k = np.arange(len(grad))
    finite = np.isfinite(grad64)
    ax.bar(k[finite], grad64[finite], width=0.55, color="#4c78a8", label=f"{method}, {dtype}")
    ax.bar(k, exact_grad, width=0.8, fill=False, edgecolor="black", lw=1.2,
           label="exact p - y")  # fmt: skip
    for i in k[~finite]:
        ax.text(i, 0.0, "NaN" if np.isnan(grad64[i]) else "inf", ha="center", va="center",
                color="#e45756", fontsize=12, fontweight="bold")  # fmt: skip
    ax.set_ylim(-1.3, 1.3)
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_xticks(k)
    ax.set_xticklabels([f"z{i} = {scale * v:g}" + (" (label)" if i == LABEL else "")
                        for i, v in enumerate(LOGIT_PATTERN)], fontsize=8)  # fmt: skip
    ax.set_ylabel("dL/dz")
    right = finite.all() and np.allclose(grad64, exact_grad, atol=1e-2)
    verdict = "gradient right" if right else "gradient WRONG"
    loss_text = f"{float(loss):.5g}" if np.isfinite(loss) else str(float(loss))
    ax.set_title(f"{method} in {dtype}: loss {loss_text} (exact {exact_loss:.5g}); {verdict}",
                 fontsize=10)  # fmt: skip
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def overflow_explorer() -> Any:
    """The chapter's explorer (Contract B): logit scale, precision, naive or stable."""
    from backprop_lab.explorer import Explorer

    return Explorer(
        render_overflow,
        controls=EXPLORER_CONTROLS,
        value={"scale": 60, "dtype": "float32", "method": "naive"},
        title="Softmax cross-entropy with large logits",
    )
