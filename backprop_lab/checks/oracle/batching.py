"""Chapter 14 (batches and GPUs): 14.1 the weight and bias gradients of a layer applied to
sequences, as one matrix product; 14.2 per-example gradient norms without per-example
gradients (memory-bounded); 14.3 the clipped DP-SGD gradient (memory-bounded)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import backprop_lab as bl
from backprop_lab import numdiff
from backprop_lab.checks.drivers.batching import linear_over_sequences
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle._chapter_specs import LabeledValueSpec
from backprop_lab.checks.oracle.spec import (
    ENGINE_GRADIENTS,
    FINITE_DIFFERENCES,
    BackwardSpec,
    Bug,
    Case,
    Cost,
)

HELPERS = (
    "backprop_lab.explore.batching.per_example_grads_loop",
    "backprop_lab.explore.batching.per_example_grads_hooks",
    "backprop_lab.explore.batching.sgd_run",
)
FORBIDDEN = ENGINE_GRADIENTS + FINITE_DIFFERENCES + HELPERS


# --------------------------------------------------------------------------- 14.1
@dataclass
class _ParamGradSpec(BackwardSpec):
    """Padded sequences: the answer gets ``(X, upstream, mask)`` and returns the gradients of
    W and b for the mean loss over the real tokens; ``upstream`` holds each position's own
    loss gradient (meaningless at the padding). Finite differences and the large-input check
    use the effective upstream mask * upstream / (number of real tokens), and move W and b,
    not X."""

    def make_case(self, rng, index, shapes=None):
        case = super().make_case(rng, index, shapes)
        B, T = case.X.shape[:2]
        lengths = rng.integers(1, T + 1, size=B)
        lengths[0], lengths[-1] = T, max(1, T // 2)  # one full sequence, one padded
        mask = (np.arange(T)[None, :] < lengths[:, None]).astype(float)
        effective = case.upstream * mask[..., None] / mask.sum()
        case.extra["mask"] = mask
        case.extra["effective"] = effective
        xs = [case.inputs[n] for n in self.inputs]
        case.extra["fd"] = lambda: tuple(numdiff.numerical_vjp(self.forward, xs, effective))
        case.args = (case.X, case.upstream, mask)
        return case

    def compute_expected(self, case):
        return case.fd()[:2]

    def large_case_ok(self, case, got):
        if any(got.get(o) is None for o in self.outputs):
            return False
        rng = np.random.default_rng(7)
        for _ in range(2):
            vW = rng.choice([-1.0, 1.0], size=case.W.shape)
            vb = rng.choice([-1.0, 1.0], size=case.b.shape)

            def along(t, vW=vW, vb=vb):
                return float(np.sum(linear_over_sequences(case.W + t * vW, case.b + t * vb,
                                                          case.X) * case.effective))  # fmt: skip

            want = numdiff.derivative(along, 0.0)
            have = float(np.sum(got["dW"] * vW) + np.sum(got["db"] * vb))
            scale = float(np.sum(np.abs(got["dW"] * vW)) + np.sum(np.abs(got["db"] * vb)))
            if not np.isfinite(have) or abs(have - want) > 1e-6 * max(scale, 1.0):
                return False
        return True

    def shape_words(self, output):
        return {"dW": "the shape of W", "db": "the shape of b"}[output]


def _param_grads(c: Case, scale):
    """dW and db for the effective upstream ``scale(c) * upstream``, one scale per position
    (what an answer with one slip in its normalisation computes)."""
    deltas = c.upstream * scale(c)[..., None]
    rows = c.X.reshape(-1, c.X.shape[-1])
    deltas = deltas.reshape(-1, c.upstream.shape[-1])
    return rows.T @ deltas, deltas.sum(axis=0)


def _tokens(c: Case) -> float:
    return float(c.mask.sum())


register(
    _ParamGradSpec(
        id="14.1",
        title="linear_param_grads",
        signature="linear_param_grads(X, upstream, mask)",
        forward=linear_over_sequences,
        inputs={"W": (4, 3), "b": (3,), "X": (3, 5, 4)},
        outputs=("dW", "db"),
        arg_labels=("X", "upstream", "mask"),
        bugs=[
            Bug(
                "padding in the count",
                "You divide by every position, B * T, padding included: the loss is the mean "
                "over the real tokens, so divide by their number, mask.sum().",
                variant=lambda c: _param_grads(c, lambda c: c.mask / c.mask.size),
            ),
            Bug(
                "padding not masked",
                "The padded positions contribute: their upstream values are not gradients of "
                "any loss. Multiply upstream by the mask before the product.",
                variant=lambda c: _param_grads(c, lambda c: np.ones_like(c.mask) / _tokens(c)),
            ),
            Bug(
                "padding neither masked nor left out of the count",
                "You average over every position, padding included, as if every sequence had "
                "length T: multiply upstream by the mask, and divide by the number of real "
                "tokens, mask.sum().",
                variant=lambda c: _param_grads(c, lambda c: np.ones_like(c.mask) / c.mask.size),
            ),
            Bug(
                "mean of the sequences' means",
                "This is the gradient of the mean of each sequence's mean loss: a token of a "
                "short sequence then weighs more than one of a long sequence. The loss is the "
                "mean over all real tokens of the batch: divide by mask.sum(), not by each "
                "sequence's length and then by B.",
                variant=lambda c: _param_grads(
                    c, lambda c: c.mask / (c.mask.shape[0] * c.mask.sum(axis=1, keepdims=True))
                ),
            ),
            Bug(
                "summed, not averaged",
                "This is the gradient of the summed loss over the real tokens: the loss is "
                "their mean, so the gradient carries 1 / mask.sum().",
                variant=lambda c: _param_grads(c, lambda c: c.mask),
            ),
            Bug(
                "divided by the number of sequences",
                "You divide by B, the number of sequences: the loss is the mean over tokens, "
                "not over sequences, so divide by the number of real tokens, mask.sum().",
                variant=lambda c: _param_grads(c, lambda c: c.mask / c.mask.shape[0]),
            ),
            Bug(
                "neither masked nor averaged",
                "This is X^T upstream over every position, exercise 8.1's rule as it stands: "
                "here upstream holds each token's own loss gradient, so mask the padding and "
                "divide by the number of real tokens, mask.sum(), before the product.",
                variant=lambda c: _param_grads(c, lambda c: np.ones_like(c.mask)),
            ),
            Bug(
                "one matrix per sequence",
                "dW has one matrix per sequence (shape (B, d_in, d_out)): the same W is used "
                "by every sequence, so add their contributions. Reshape X and the masked, "
                "scaled upstream to 2-D (B*T rows) and one product sums over all of them.",
                predicate=lambda c, got: got["dW"] is not None and got["dW"].ndim == 3,
                outputs=("dW",),
            ),
        ],
        cost=Cost(multiple=8, inputs={"W": (64, 64), "b": (64,), "X": (256, 64, 64)}),
        forbidden=FORBIDDEN,
    )
)


# --------------------------------------------------------------------------- 14.2
def _mlp_draw(rng, index):
    if index >= 0:
        B, d, h, c = 6, 4, 5, 3
    else:
        B, d, h, c = 1024, 64, 128, 10
    return {
        "X": rng.standard_normal((B, d)),
        "y": rng.integers(0, c, size=B),
        "W1": rng.standard_normal((d, h)) / math.sqrt(d),
        "b1": rng.uniform(-0.5, 0.5, size=h),
        "W2": rng.standard_normal((h, c)) / math.sqrt(h),
        "b2": rng.uniform(-0.5, 0.5, size=c),
    }


def _n_params(c: Case) -> int:
    return sum(c.inputs[n].size for n in ("W1", "b1", "W2", "b2"))


def _norms_budget(c: Case) -> float:
    if c.X.shape[0] < 1000:
        return math.inf
    return c.X.shape[0] * _n_params(c) * 8 / 4  # a quarter of the per-example gradients


def _per_example_grads(c: Case):
    """One engine backward pass per example (slow, obviously right)."""
    out = []
    for i in range(c.X.shape[0]):
        ts = [bl.tensor(c.inputs[n], requires_grad=True) for n in ("W1", "b1", "W2", "b2")]
        W1, b1, W2, b2 = ts
        logits = bl.relu(bl.tensor(c.X[i : i + 1]) @ W1 + b1) @ W2 + b2
        bl.cross_entropy(logits, c.y[i : i + 1]).backward()
        out.append([np.array(t.grad) for t in ts])
    return out


def _norms_reference(c: Case, *, scale=1.0, biases=True, mask=True, layers=(1, 2)):
    if mask and biases and scale == 1.0 and layers == (1, 2):
        grads = _per_example_grads(c)
        norms = [math.sqrt(sum(float(np.sum(g * g)) for g in gs)) for gs in grads]
        return np.array(norms), np.array(1.0)
    # variants: computed directly (the oracle is hidden from the grading kernel)
    z1 = c.X @ c.W1 + c.b1
    h = np.maximum(z1, 0)
    z2 = h @ c.W2 + c.b2
    p = np.exp(z2 - z2.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    d2 = p.copy()
    d2[np.arange(len(c.y)), c.y] -= 1
    d1 = (d2 @ c.W2.T) * ((z1 > 0) if mask else 1.0)
    first = np.sum(c.X**2, 1) * np.sum(d1**2, 1) + (np.sum(d1**2, 1) if biases else 0.0)
    second = np.sum(h**2, 1) * np.sum(d2**2, 1) + (np.sum(d2**2, 1) if biases else 0.0)
    sq = (first if 1 in layers else 0.0) + (second if 2 in layers else 0.0)
    return scale * np.sqrt(sq), None


register(
    LabeledValueSpec(
        id="14.2",
        title="per_example_grad_norms",
        signature="per_example_grad_norms(X, y, W1, b1, W2, b2)",
        inputs={"X": (6, 4), "y": (6,), "W1": (4, 5), "b1": (5,), "W2": (5, 3), "b2": (3,)},
        outputs=("norms", "memory"),
        cases=3,
        draw=lambda rng, k: _mlp_draw(rng, -1 if k == 2 else k),
        arguments=lambda c: (c.X, c.y, c.W1, c.b1, c.W2, c.b2, _norms_budget(c)),
        arg_labels=("X", "y", "W1", "b1", "W2", "b2", "memory_budget"),
        reference=_norms_reference,
        driver="memory_budget",
        bugs=[
            Bug(
                "memory over budget",
                "On the large case (B = 1024, 128 hidden units) your function allocated more "
                "than a quarter of what the B per-example gradients would take. The norm of "
                "an outer product needs no outer product: ||a^T c||_F = ||a|| ||c||.",
                predicate=lambda c, got: c.X.shape[0] < 1000 or float(got["memory"]) > 1.0,
                outputs=("memory",),
            ),
            Bug(
                "mean loss used",
                "Every norm is 1/B times the right value: these are the gradients of the "
                "mean loss, whose per-example rows carry a factor 1/B. Each example's own "
                "loss L_i is not divided by B.",
                variant=lambda c: _norms_reference(c, scale=1.0 / c.X.shape[0]),
                outputs=("norms",),
            ),
            Bug(
                "biases left out",
                "The biases' gradients are missing from the norm: g_i stacks the gradients "
                "of W1, b1, W2 and b2; example i's bias gradients are its delta rows.",
                variant=lambda c: _norms_reference(c, biases=False),
                outputs=("norms",),
            ),
            Bug(
                "relu mask forgotten",
                "The hidden layer's delta ignores the ReLU: multiply by (z1 > 0), the "
                "derivative of relu at each example's own pre-activation.",
                variant=lambda c: _norms_reference(c, mask=False),
                outputs=("norms",),
            ),
            Bug(
                "first layer only",
                "These are the norms of the first layer's gradients alone (W1 and b1): g_i "
                "stacks all four parameters, so the second layer's squared norms add in too.",
                variant=lambda c: _norms_reference(c, layers=(1,)),
                outputs=("norms",),
            ),
            Bug(
                "second layer only",
                "These are the norms of the second layer's gradients alone (W2 and b2): g_i "
                "stacks all four parameters, so the first layer's squared norms add in too "
                "(its delta is the second layer's, sent back through W2 and the ReLU).",
                variant=lambda c: _norms_reference(c, layers=(2,)),
                outputs=("norms",),
            ),
            Bug(
                "squared norms",
                "These are the squared norms: take the square root.",
                variant=lambda c: (_norms_reference(c)[0] ** 2, None),
                outputs=("norms",),
            ),
        ],
        forbidden=FORBIDDEN,
    )
)


# --------------------------------------------------------------------------- 14.3
def _softmax_regression_draw(rng, index):
    B, d, k = (8, 4, 3) if index >= 0 else (4096, 64, 10)
    X = rng.standard_normal((B, d))
    y = rng.integers(0, k, size=B)
    W = rng.standard_normal((d, k)) / math.sqrt(d)
    b = rng.uniform(-0.5, 0.5, size=k)
    norms = _example_norms(X, y, W, b)
    clip = float(np.median(norms))  # about half of the examples are clipped
    return {"X": X, "y": y, "W": W, "b": b, "clip": np.array(clip)}


def _deltas(X, y, W, b):
    Z = X @ W + b
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    P[np.arange(len(y)), y] -= 1
    return P


def _example_norms(X, y, W, b):
    D = _deltas(X, y, W, b)
    return np.sqrt((np.sum(X * X, axis=1) + 1.0) * np.sum(D * D, axis=1))


def _clip_budget(c: Case) -> float:
    if c.X.shape[0] < 1000:
        return math.inf
    per_example = c.X.shape[0] * (c.W.size + c.b.size) * 8
    return per_example / 4


def _clip_reference(c: Case):
    """Every example's gradient from the engine, clipped, averaged (slow, obviously right)."""
    total_W = np.zeros_like(c.W)
    total_b = np.zeros_like(c.b)
    C = float(c.clip)
    for i in range(c.X.shape[0]):
        W = bl.tensor(c.W, requires_grad=True)
        b = bl.tensor(c.b, requires_grad=True)
        bl.cross_entropy(bl.tensor(c.X[i : i + 1]) @ W + b, c.y[i : i + 1]).backward()
        gW, gb = np.array(W.grad), np.array(b.grad)
        norm = math.sqrt(float(np.sum(gW * gW) + np.sum(gb * gb)))
        factor = min(1.0, C / norm) if norm > 0 else 1.0
        total_W += factor * gW
        total_b += factor * gb
    B = c.X.shape[0]
    return total_W / B, total_b / B, np.array(1.0)


def _clip_variant(c: Case, *, per_example=True, cap=True, bias_in_norm=True, mean=True):
    D = _deltas(c.X, c.y, c.W, c.b)
    B = c.X.shape[0]
    C = float(c.clip)
    if not per_example:
        gW, gb = c.X.T @ D / B, D.sum(axis=0) / B
        norm = math.sqrt(float(np.sum(gW * gW) + np.sum(gb * gb)))
        f = min(1.0, C / norm)
        return f * gW, f * gb, None
    extra = 1.0 if bias_in_norm else 0.0
    norms = np.sqrt((np.sum(c.X * c.X, axis=1) + extra) * np.sum(D * D, axis=1))
    factor = C / norms
    if cap:
        factor = np.minimum(1.0, factor)
    Dc = D * factor[:, None] / (B if mean else 1.0)
    return c.X.T @ Dc, Dc.sum(axis=0), None


register(
    LabeledValueSpec(
        id="14.3",
        title="clipped_mean_gradient",
        signature="clipped_mean_gradient(X, y, W, b, clip)",
        inputs={"X": (8, 4), "y": (8,), "W": (4, 3), "b": (3,), "clip": ()},
        outputs=("gW", "gb", "memory"),
        cases=3,
        draw=lambda rng, k: _softmax_regression_draw(rng, -1 if k == 2 else k),
        arguments=lambda c: (c.X, c.y, c.W, c.b, float(c.clip), _clip_budget(c)),
        arg_labels=("X", "y", "W", "b", "clip", "memory_budget"),
        reference=_clip_reference,
        driver="memory_budget",
        bugs=[
            Bug(
                "memory over budget",
                "On the large case (B = 4096) your function allocated more than a quarter of "
                "what the B per-example gradients would take. Clipping scales example i's "
                "gradient, and example i's gradient is built from row i of the logits' "
                "gradient: scale that row.",
                predicate=lambda c, got: c.X.shape[0] < 1000 or float(got["memory"]) > 1.0,
                outputs=("memory",),
            ),
            Bug(
                "batch gradient clipped",
                "This clips the averaged gradient as a whole. DP-SGD clips each example's "
                "gradient before averaging, so that no single example can contribute more "
                "than clip.",
                variant=lambda c: _clip_variant(c, per_example=False),
                outputs=("gW", "gb"),
            ),
            Bug(
                "factor not capped at 1",
                "Examples whose gradient is already shorter than clip were scaled up: the "
                "factor is min(1, clip / ||g_i||), so they are left as they are.",
                variant=lambda c: _clip_variant(c, cap=False),
                outputs=("gW", "gb"),
            ),
            Bug(
                "bias left out of the norm",
                "The norm of g_i leaves out the bias part: ||g_i||^2 = ||x_i||^2 ||d_i||^2 + "
                "||d_i||^2, the second term from dL_i/db = d_i.",
                variant=lambda c: _clip_variant(c, bias_in_norm=False),
                outputs=("gW", "gb"),
            ),
            Bug(
                "sum instead of mean",
                "It is B times the right value: the clipped gradients are averaged over the "
                "batch (divide by B).",
                variant=lambda c: _clip_variant(c, mean=False),
                outputs=("gW", "gb"),
            ),
        ],
        forbidden=FORBIDDEN,
    )
)
