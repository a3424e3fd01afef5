"""A tiny transformer block on the book's engine (Chapter 15, capstone 2).

* :func:`layer_norm`: layer normalisation composed of engine ops (its backward pass is
  the chain rule through mean, subtraction, square, square root and division).
* :class:`TinyTransformer`: token and position embeddings, one pre-norm block (causal
  single-head attention and a ReLU MLP, each with a residual connection) and a linear
  read-out; ``checkpoint=("attention", "mlp")`` wraps either sublayer in
  :func:`backprop_lab.checkpoint`.
* :func:`copy_back_task`: the toy task (output the token ``lag`` positions back).
* :func:`train`, :func:`accuracy`: Adam on the task.
* :func:`step_memory`: one training step under the memory meter and the counter.
* :func:`memory_view`, :func:`memory_explorer`: the saved-memory timeline of one step, with
  and without checkpointing (the chapter's explorer).

Every gradient here is computed by the engine; nothing in this module writes a backward
rule by hand.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import backprop_lab as bl

__all__ = [
    "layer_norm",
    "TinyTransformer",
    "copy_back_task",
    "train",
    "accuracy",
    "step_memory",
    "memory_view",
    "memory_explorer",
    "EXPLORER_CONTROLS",
]


def layer_norm(x: Any, gain: Any, bias: Any, eps: float = 1e-5) -> Any:
    """(x - mean) / sqrt(var + eps) * gain + bias over the last axis, from engine ops."""
    mu = bl.mean(x, axis=-1, keepdims=True)
    centred = x - mu
    var = bl.mean(centred * centred, axis=-1, keepdims=True)
    return centred / (var + eps) ** 0.5 * gain + bias


def copy_back_task(batch: int, length: int, vocab: int, lag: int = 2, seed: int = 0):
    """Random token sequences and targets: the target at position t is the token at t - lag.

    Positions t < lag have no such token; their target is -1 and they are left out of the
    loss and the accuracy.
    """
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, size=(batch, length))
    targets = np.full_like(tokens, -1)
    targets[:, lag:] = tokens[:, :-lag]
    return tokens, targets


class TinyTransformer:
    """Embeddings, one pre-norm transformer block and a read-out, all on the engine.

    ``forward(tokens)`` takes integer tokens (B, T) and returns logits (B, T, vocab)::

        x = onehot(tokens) E + P[:T]    # the embedding lookup as a matrix product
        x = x + Attention(LN1(x))        # causal, one head, scale 1/sqrt(d)
        x = x + W2 relu(W1 LN2(x) + b1) + b2
        logits = x Wout
    """

    def __init__(self, vocab: int = 8, d: int = 32, hidden: int = 64, max_len: int = 64,
                 seed: int = 0) -> None:  # fmt: skip
        rng = np.random.default_rng(seed)

        def p(*shape: int, scale: float | None = None) -> bl.Tensor:
            s = (1.0 / math.sqrt(shape[0])) if scale is None else scale
            return bl.tensor(rng.standard_normal(shape) * s, requires_grad=True)

        self.vocab, self.d, self.hidden = vocab, d, hidden
        self.params = {
            "E": p(vocab, d, scale=1.0),
            "P": p(max_len, d, scale=1.0),
            "ln1_g": bl.tensor(np.ones(d), requires_grad=True),
            "ln1_b": bl.tensor(np.zeros(d), requires_grad=True),
            "Wq": p(d, d),
            "Wk": p(d, d),
            "Wv": p(d, d),
            "Wo": p(d, d),
            "ln2_g": bl.tensor(np.ones(d), requires_grad=True),
            "ln2_b": bl.tensor(np.zeros(d), requires_grad=True),
            "W1": p(d, hidden),
            "b1": bl.tensor(np.zeros(hidden), requires_grad=True),
            "W2": p(hidden, d),
            "b2": bl.tensor(np.zeros(d), requires_grad=True),
            "Wout": p(d, vocab),
        }
        for name, t in self.params.items():
            t.name = name

    def parameters(self) -> list[bl.Tensor]:
        return list(self.params.values())

    def attention(self, x: Any) -> Any:
        """Causal single-head self-attention of LN1(x), projected back by Wo."""
        q = self.params
        h = layer_norm(x, q["ln1_g"], q["ln1_b"])
        Q, K, V = h @ q["Wq"], h @ q["Wk"], h @ q["Wv"]
        t = x.shape[1]
        S = (Q * (1.0 / math.sqrt(self.d))) @ bl.transpose(K, (0, 2, 1))
        S = bl.where(np.tril(np.ones((t, t), dtype=bool)), S, -np.inf)
        return (bl.softmax(S, axis=-1) @ V) @ q["Wo"]

    def mlp(self, x: Any) -> Any:
        """relu(LN2(x) W1 + b1) W2 + b2."""
        q = self.params
        h = layer_norm(x, q["ln2_g"], q["ln2_b"])
        return bl.relu(h @ q["W1"] + q["b1"]) @ q["W2"] + q["b2"]

    def forward(self, tokens: np.ndarray, checkpoint: tuple[str, ...] = ()) -> Any:
        unknown = set(checkpoint) - {"attention", "mlp"}
        if unknown:
            raise ValueError(f"checkpoint may name 'attention' and 'mlp', not {sorted(unknown)}")
        q = self.params
        t = tokens.shape[1]
        onehot = np.eye(self.vocab)[tokens]  # (B, T, vocab), a constant: no gradient
        x = onehot @ q["E"] + q["P"][:t]
        a = bl.checkpoint(self.attention, x) if "attention" in checkpoint else self.attention(x)
        x = x + a
        m = bl.checkpoint(self.mlp, x) if "mlp" in checkpoint else self.mlp(x)
        x = x + m
        return x @ q["Wout"]

    def loss(self, tokens: np.ndarray, targets: np.ndarray, checkpoint: tuple[str, ...] = ()):
        """Mean cross-entropy over the positions that have a target (target >= 0)."""
        logits = self.forward(tokens, checkpoint)
        keep = (targets >= 0).reshape(-1)
        flat = bl.reshape(logits, (-1, self.vocab))[np.flatnonzero(keep)]
        return bl.cross_entropy(flat, targets.reshape(-1)[keep])


def accuracy(model: TinyTransformer, tokens: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of positions with a target where the largest logit is the target."""
    with bl.no_grad():
        logits = model.forward(tokens).numpy()
    keep = targets >= 0
    return float(np.mean(np.argmax(logits, axis=-1)[keep] == targets[keep]))


def train(model: TinyTransformer, *, steps: int = 150, batch: int = 32, length: int = 12,
          lag: int = 2, lr: float = 0.01, seed: int = 0) -> list[float]:  # fmt: skip
    """Adam on fresh batches of the copy-back task; returns the loss of every step."""
    opt = bl.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        tokens, targets = copy_back_task(batch, length, model.vocab, lag, seed=seed + 1 + step)
        loss = model.loss(tokens, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.data))
    return losses


def step_memory(model: TinyTransformer, tokens: np.ndarray, targets: np.ndarray,
                checkpoint: tuple[str, ...] = ()) -> dict:  # fmt: skip
    """One forward and backward pass under the memory meter and the counter.

    Returns peak saved bytes, the live-bytes timeline, FLOPs (all, of the forward pass
    proper, and recomputed) and the gradients (copies), so that runs with and without
    checkpointing can be compared.
    """
    for p in model.parameters():
        p.grad = None
    with bl.measure_memory() as meter, bl.count() as c:
        model.loss(tokens, targets, checkpoint).backward()
    return {
        "peak": meter.peak,
        "timeline": list(meter.timeline),
        "flops": c.flops,
        "forward_flops": c.forward_flops - c.recompute_flops,
        "recompute_flops": c.recompute_flops,
        "grads": {n: np.array(p.grad) for n, p in model.params.items()},
    }


# --------------------------------------------------------------------------- explorer
EXPLORER_CONTROLS = {
    "T": [8, 16, 32, 64],
    "checkpointing": ["none", "attention", "mlp", "both"],
}

_CHOICES = {"none": (), "attention": ("attention",), "mlp": ("mlp",),
            "both": ("attention", "mlp")}  # fmt: skip


def memory_view(T: int = 32, checkpointing: str = "none") -> Any:
    """Saved bytes after every recorded or freed node of one training step, as a Figure.

    The grey curve is the same step without checkpointing, for comparison.
    """
    import matplotlib.pyplot as plt

    if checkpointing not in _CHOICES:
        raise ValueError(f"checkpointing must be one of {list(_CHOICES)}, not {checkpointing!r}")
    model = TinyTransformer(seed=0)
    tokens, targets = copy_back_task(16, T, model.vocab, seed=0)
    base = step_memory(model, tokens, targets)
    run = step_memory(model, tokens, targets, _CHOICES[checkpointing])
    fig, ax = plt.subplots(figsize=(6.5, 3.2), dpi=80)
    ax.plot(np.array(base["timeline"]) / 2**10, color="#bbbbbb", label="no checkpointing")
    label = f"checkpoint: {checkpointing}"
    ax.plot(np.array(run["timeline"]) / 2**10, color="#4c78a8", label=label)
    ax.set_xlabel("event (node recorded in forward, then freed in backward)", fontsize=10)
    ax.set_ylabel("saved for backward (KiB)", fontsize=10)
    extra = run["recompute_flops"] / max(base["flops"], 1)
    ax.set_title(f"T = {T}: peak {run['peak'] / 2**10:.0f} KiB "
                 f"(without: {base['peak'] / 2**10:.0f} KiB), recomputed {extra:.0%} of the "
                 "step's FLOPs", fontsize=10)  # fmt: skip
    ax.legend(fontsize=9)
    ax.tick_params(labelsize=9)
    fig.tight_layout()
    return fig


def memory_explorer(**value: Any) -> Any:
    """The chapter's explorer over :data:`EXPLORER_CONTROLS` (Contract B)."""
    from backprop_lab.explorer import Explorer

    start = {"T": 32, "checkpointing": "none", **value}
    return Explorer(memory_view, controls=EXPLORER_CONTROLS, value=start,
                    title="Memory of one training step of the transformer block")  # fmt: skip
