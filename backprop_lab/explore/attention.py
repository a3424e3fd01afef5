"""Attention (Chapter 13): the forward pass on the engine, its memory, and the explorer.

* :func:`attention`: scaled dot-product attention built from engine ops (matmul, a scale,
  an optional causal mask, a row-wise softmax, matmul). Its backward pass is whatever the
  engine's chain rule makes of those ops; no gradient formula is written here.
* :func:`row_logsumexp`, :func:`attention_forward`: the forward pass in NumPy, returning
  the output and the per-row log-sum-exp (the one number per query row that a
  memory-efficient backward keeps).
* :func:`memory_efficient_attention`: the same function, recorded so that the graph keeps
  only Q, K, V and the per-row log-sum-exp; the weights are recomputed block by block in
  the backward pass (with :func:`backprop_lab.checkpoint`).
* :func:`saved_bytes`, :func:`memory_profile`: peak saved-for-backward bytes, measured with
  :func:`backprop_lab.measure_memory`.
* :func:`saturation_stats`: what the softmax and its gradient do as the head size grows,
  with and without the 1/sqrt(d) scale.
* :func:`attention_view`, :func:`attention_explorer`: weights and score gradients as a
  figure; the chapter's explorer.

matplotlib is imported only inside the functions that draw.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import backprop_lab as bl

__all__ = [
    "causal_mask",
    "attention",
    "row_logsumexp",
    "attention_forward",
    "memory_efficient_attention",
    "saved_bytes",
    "memory_profile",
    "random_qkv",
    "saturation_stats",
    "score_gradients",
    "attention_view",
    "attention_explorer",
    "EXPLORER_CONTROLS",
]


def causal_mask(t: int) -> np.ndarray:
    """Boolean (t, t) matrix, True where query i may look at key j (j <= i)."""
    return np.tril(np.ones((t, t), dtype=bool))


def _scale(d: int, scale: float | None) -> float:
    return 1.0 / math.sqrt(d) if scale is None else float(scale)


def attention(Q: Any, K: Any, V: Any, *, causal: bool = False, scale: float | None = None):
    """softmax(Q K^T * scale) V on the engine; ``scale`` defaults to 1/sqrt(d).

    Q is (T, d) (or (B, T, d)); K and V have the same number of rows as each other. With
    ``causal=True`` query i sees keys 0..i only: the hidden scores are set to -inf
    *before* the softmax, so their weights are exactly 0 and each row still sums to 1.
    """
    Q, K, V = (x if isinstance(x, bl.Tensor) else bl.tensor(x) for x in (Q, K, V))
    d = Q.shape[-1]
    axes = tuple(range(K.ndim - 2)) + (K.ndim - 1, K.ndim - 2)
    S = (Q @ bl.transpose(K, axes)) * _scale(d, scale)
    if causal:
        S = bl.where(causal_mask(S.shape[-1])[: S.shape[-2]], S, -np.inf)
    return bl.softmax(S, axis=-1) @ V


def row_logsumexp(S: np.ndarray) -> np.ndarray:
    """log sum_j exp(S[i, j]) for every row, computed stably; shape (T, 1)."""
    m = np.max(S, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return m + np.log(np.sum(np.exp(S - m), axis=-1, keepdims=True))


def attention_forward(
    Q: np.ndarray, K: np.ndarray, V: np.ndarray, *, causal: bool = False,
    scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """NumPy forward pass: ``(O, lse)`` with O = softmax(S) V and lse the row log-sum-exp.

    The weights themselves are not returned: row i of them is exp(S[i] - lse[i]), so Q, K
    and lse regenerate them whenever they are needed.
    """
    S = (Q @ K.T) * _scale(Q.shape[-1], scale)
    if causal:
        S = np.where(causal_mask(S.shape[0]), S, -np.inf)
    lse = row_logsumexp(S)
    return np.exp(S - lse) @ V, lse


def _normalised_block(q, K, V, lse, scale, mask):
    # exp(S - lse) already has rows summing to 1, so dividing by the row sum changes no
    # value. It changes the graph: the row sum is differentiable, so the backward pass
    # sees the softmax's normaliser, and its gradients are those of the softmax.
    S = (q @ K.T) * scale
    if mask is not None:
        S = bl.where(mask, S, -np.inf)
    E = bl.exp(S - lse)
    return (E @ V) / bl.sum(E, axis=-1, keepdims=True)


def memory_efficient_attention(
    Q: Any, K: Any, V: Any, *, causal: bool = False, block: int = 32,
    scale: float | None = None,
):  # fmt: skip
    """Attention whose recorded graph keeps Q, K, V and one log-sum-exp per query row.

    The queries are split into blocks of ``block`` rows. Each block's log-sum-exp is
    computed without recording; the block's output is then computed inside
    :func:`backprop_lab.checkpoint`, which saves only its inputs and reruns the block
    during the backward pass. So at no time does the graph hold more than one block of
    weights, ``block x T`` numbers instead of ``T x T``.
    """
    Q, K, V = (x if isinstance(x, bl.Tensor) else bl.tensor(x) for x in (Q, K, V))
    t, d = Q.shape
    s = _scale(d, scale)
    full_mask = causal_mask(K.shape[0]) if causal else None
    outs = []
    for i in range(0, t, block):
        q = Q[i : i + block]
        mask = None if full_mask is None else full_mask[i : i + block]
        with bl.no_grad():
            S = (q.data @ K.data.T) * s
            if mask is not None:
                S = np.where(mask, S, -np.inf)
            lse = bl.tensor(row_logsumexp(S))

        def run(q, K, V, lse, mask=mask):
            return _normalised_block(q, K, V, lse, s, mask)

        outs.append(bl.checkpoint(run, q, K, V, lse))
    return outs[0] if len(outs) == 1 else bl.concatenate(outs, axis=0)


def random_qkv(t: int, d: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Q, K, V and an upstream gradient G, all (t, d) with standard-normal entries."""
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal((t, d)) for _ in range(4))


def saved_bytes(fn, Q: np.ndarray, K: np.ndarray, V: np.ndarray, G: np.ndarray) -> dict:
    """Run ``fn(Q, K, V)`` forward and backward (upstream G) under the memory meter.

    Returns ``{"peak": bytes, "after_forward": bytes, "grads": (dQ, dK, dV)}``; the bytes
    are those the graph keeps for its backward pass (:func:`backprop_lab.measure_memory`).
    """
    q, k, v = (bl.tensor(a, requires_grad=True) for a in (Q, K, V))
    with bl.measure_memory() as meter:
        out = fn(q, k, v)
        after_forward = meter.bytes
        out.backward(G)
    return {"peak": meter.peak, "after_forward": after_forward, "grads": (q.grad, k.grad, v.grad)}


def memory_profile(ts, d: int = 16, block: int = 32, causal: bool = False) -> dict:
    """Peak saved bytes of plain and memory-efficient attention for each length in ``ts``.

    Also returns the largest difference between their gradients, which must be rounding.
    """
    plain, efficient, worst = [], [], 0.0
    for t in ts:
        Q, K, V, G = random_qkv(t, d, seed=t)
        a = saved_bytes(lambda q, k, v: attention(q, k, v, causal=causal), Q, K, V, G)
        b = saved_bytes(
            lambda q, k, v: memory_efficient_attention(q, k, v, causal=causal, block=block),
            Q, K, V, G,
        )  # fmt: skip
        plain.append(a["peak"])
        efficient.append(b["peak"])
        worst = max(worst, *(float(np.max(np.abs(x - y))) for x, y in zip(a["grads"], b["grads"])))
    return {"T": list(ts), "plain": plain, "efficient": efficient, "max_grad_diff": worst}


def score_gradients(
    Q: np.ndarray, K: np.ndarray, V: np.ndarray, G: np.ndarray, *, scale: float,
    causal: bool = False,
) -> dict:  # fmt: skip
    """Weights P and the gradients at P and at the scores S, from one engine backward pass.

    The scores are made a leaf of the graph (S = Q K^T * scale computed beforehand), so
    ``S.grad`` is the gradient that reaches them; a hook on P records the gradient at the
    weights on its way back.
    """
    S0 = (Q @ K.T) * scale
    if causal:
        S0 = np.where(causal_mask(S0.shape[0]), S0, -np.inf)
    S = bl.tensor(S0, requires_grad=True)
    P = bl.softmax(S, axis=-1)
    seen = {}
    P.register_hook(lambda g: seen.setdefault("P", np.array(g)))
    (P @ bl.tensor(V)).backward(G)
    return {"P": P.numpy(), "dP": seen["P"], "dS": np.array(S.grad)}


def saturation_stats(ds, *, scaled: bool, t: int = 64, repeats: int = 4, seed: int = 0) -> dict:
    """How peaked the weights are and how much gradient reaches the scores, per head size.

    For each d in ``ds`` and each of ``repeats`` draws: Q, K, V, G standard normal (t, d),
    scores Q K^T (times 1/sqrt(d) when ``scaled``), one engine backward pass. Returns lists
    over ``ds``: ``score_std`` (standard deviation of the scores), ``saturated`` (fraction
    of rows whose largest weight exceeds 0.99) and ``grad_ratio`` (the median over rows of
    ||dL/dS_i|| / ||dL/dP_i||: how much of the gradient arriving at a row of weights the
    softmax passes on to that row of scores).
    """
    out = {"d": list(ds), "score_std": [], "saturated": [], "grad_ratio": []}
    for d in ds:
        scale = 1.0 / math.sqrt(d) if scaled else 1.0
        std, sat, ratio = [], [], []
        for r in range(repeats):
            Q, K, V, G = random_qkv(t, d, seed=seed + 1000 * r + d)
            g = score_gradients(Q, K, V, G, scale=scale)
            std.append(np.std((Q @ K.T) * scale))
            sat.append(np.max(g["P"], axis=-1) > 0.99)
            ratio.append(np.linalg.norm(g["dS"], axis=1) / np.linalg.norm(g["dP"], axis=1))
        out["score_std"].append(float(np.mean(std)))
        out["saturated"].append(float(np.mean(np.concatenate(sat))))
        out["grad_ratio"].append(float(np.median(np.concatenate(ratio))))
    return out


# --------------------------------------------------------------------------- explorer
EXPLORER_CONTROLS = {
    "d": [4, 32, 256],
    "scaling": ["1/sqrt(d)", "none"],
    "T": [8, 32],
}


def attention_view(d: int = 32, scaling: str = "1/sqrt(d)", T: int = 32) -> Any:
    """Causal attention weights (left) and the gradient at the scores (right), as a Figure.

    Q, K, V and the upstream gradient are standard normal (seed 0). The titles give the
    mean largest weight per row and ||dL/dS|| / ||dL/dP||.
    """
    import matplotlib.pyplot as plt

    if scaling not in EXPLORER_CONTROLS["scaling"]:
        raise ValueError(f"scaling must be one of {EXPLORER_CONTROLS['scaling']}, not {scaling!r}")
    Q, K, V, G = random_qkv(T, d, seed=0)
    scale = 1.0 / math.sqrt(d) if scaling == "1/sqrt(d)" else 1.0
    r = score_gradients(Q, K, V, G, scale=scale, causal=True)
    hidden = ~causal_mask(T)
    fig, axes = plt.subplots(1, 2, figsize=(6.5, 3.4), dpi=80)
    P = np.ma.masked_where(hidden, r["P"])
    im0 = axes[0].imshow(P, cmap="viridis", vmin=0, vmax=1)
    axes[0].set_title(f"weights P  (mean max {np.mean(r['P'].max(axis=1)):.2f})", fontsize=10)
    dS = r["dS"]
    lim = max(float(np.max(np.abs(dS))), 1e-12)
    im1 = axes[1].imshow(np.ma.masked_where(hidden, dS), cmap="RdBu_r", vmin=-lim, vmax=lim)
    ratio = np.linalg.norm(dS) / np.linalg.norm(r["dP"])
    axes[1].set_title(f"dL/dS  (||dS||/||dP|| = {ratio:.2g})", fontsize=10)
    for ax in axes:
        ax.set_xlabel("key j", fontsize=10)
        ax.set_ylabel("query i", fontsize=10)
        ax.tick_params(labelsize=9)
    fig.colorbar(im0, ax=axes[0], fraction=0.046, pad=0.04)
    fig.colorbar(im1, ax=axes[1], fraction=0.046, pad=0.04)
    fig.suptitle(f"d = {d}, scale {scaling}, T = {T}, causal", fontsize=10)
    fig.tight_layout()
    return fig


def attention_explorer(**value: Any) -> Any:
    """The chapter's explorer over :data:`EXPLORER_CONTROLS` (Contract B)."""
    from backprop_lab.explorer import Explorer

    start = {"d": 32, "scaling": "1/sqrt(d)", "T": 32, **value}
    return Explorer(
        attention_view,
        controls=EXPLORER_CONTROLS,
        value=start,
        title="Attention weights and the gradient at the scores",
    )
