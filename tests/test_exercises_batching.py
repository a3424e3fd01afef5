"""Exercises of Chapter 14 (batches): the instructor's answers pass, and each planted bug
gets the diagnosis that names it, in practice mode and through the grading path."""

from __future__ import annotations

import numpy as np
import pytest
from _chapter_solutions import answer_source

from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

NOTEBOOK = "14-batches-and-gpus.ipynb"
EXERCISES = ("14.1", "14.2", "14.3")


@pytest.mark.parametrize("exercise", EXERCISES)
def test_instructor_answer_passes(exercise, tmp_path):
    answer = answer_from_source(answer_source(NOTEBOOK, exercise), {"np": np})
    v = practice_verdict(exercise, answer)
    assert v["passed"], v["feedback"]
    g = grading_verdict(exercise, answer, folder=tmp_path)
    assert g["passed"], g["feedback"]


_PARAMS = """
def linear_param_grads(X, upstream, mask):
    deltas = upstream * {scale}
    rows = X.reshape(-1, X.shape[-1])
    deltas = deltas.reshape(-1, upstream.shape[-1])
    return {dW}, {db}
"""


def _params(scale="(mask / mask.sum())[..., None]", dW="rows.T @ deltas", db="deltas.sum(axis=0)"):
    return _PARAMS.format(scale=scale, dW=dW, db=db)


_PARAMS_3D = """
def linear_param_grads(X, upstream, mask):
    deltas = upstream * (mask / mask.sum())[..., None]
    return np.swapaxes(X, 1, 2) @ deltas, deltas.sum(axis=(0, 1))
"""
_PARAMS_LOOP = """
def linear_param_grads(X, upstream, mask):
    dW = np.zeros((X.shape[-1], upstream.shape[-1]))
    db = np.zeros(upstream.shape[-1])
    n = mask.sum()
    for b in range(X.shape[0]):
        for t in range(X.shape[1]):
            dW += np.outer(X[b, t], upstream[b, t]) * mask[b, t] / n
            db += upstream[b, t] * mask[b, t] / n
    return dW, db
"""

_NORMS = """
def per_example_grad_norms(X, y, W1, b1, W2, b2):
    z1 = X @ W1 + b1
    h = np.maximum(z1, 0)
    z2 = h @ W2 + b2
    p = np.exp(z2 - z2.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    d2 = p.copy()
    d2[np.arange(len(y)), y] -= 1
    d2 = d2 {scale}
    d1 = (d2 @ W2.T) {mask}
    sq = (np.sum(X * X, 1) * np.sum(d1 * d1, 1) + np.sum(h * h, 1) * np.sum(d2 * d2, 1)
          {biases})
    return {ret}
"""
_NORMS_RIGHT = dict(
    scale="",
    mask="* (z1 > 0)",
    biases="+ np.sum(d1 * d1, 1) + np.sum(d2 * d2, 1)",
    ret="np.sqrt(sq)",
)


def _norms(**changes):
    return _NORMS.format(**{**_NORMS_RIGHT, **changes})


_NORMS_EINSUM = """
def per_example_grad_norms(X, y, W1, b1, W2, b2):
    z1 = X @ W1 + b1
    h = np.maximum(z1, 0)
    z2 = h @ W2 + b2
    p = np.exp(z2 - z2.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    d2 = p.copy()
    d2[np.arange(len(y)), y] -= 1
    d1 = (d2 @ W2.T) * (z1 > 0)
    g1 = np.einsum("bi,bj->bij", X, d1)
    g2 = np.einsum("bi,bj->bij", h, d2)
    sq = (g1 ** 2).sum(axis=(1, 2)) + (g2 ** 2).sum(axis=(1, 2))
    sq = sq + (d1 ** 2).sum(1) + (d2 ** 2).sum(1)
    return np.sqrt(sq)
"""

_LAYER1_ONLY = _NORMS.format(
    scale="",
    mask="* (z1 > 0)",
    biases="- np.sum(h * h, 1) * np.sum(d2 * d2, 1) + np.sum(d1 * d1, 1)",
    ret="np.sqrt(sq)",
)

_CLIP = """
def clipped_mean_gradient(X, y, W, b, clip):
    B = len(y)
    Z = X @ W + b
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    D = P.copy()
    D[np.arange(B), y] -= 1
    norms = np.sqrt((np.sum(X * X, axis=1) {bias}) * np.sum(D * D, axis=1))
    factor = {factor}
    Dc = D * factor[:, None] {mean}
    return X.T @ Dc, Dc.sum(axis=0)
"""
_CLIP_RIGHT = dict(bias="+ 1.0", factor="np.minimum(1.0, clip / norms)", mean="/ B")


def _clip(**changes):
    return _CLIP.format(**{**_CLIP_RIGHT, **changes})


_CLIP_BATCH = """
def clipped_mean_gradient(X, y, W, b, clip):
    B = len(y)
    Z = X @ W + b
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    P[np.arange(B), y] -= 1
    gW, gb = X.T @ P / B, P.sum(axis=0) / B
    f = min(1.0, clip / np.sqrt(np.sum(gW * gW) + np.sum(gb * gb)))
    return f * gW, f * gb
"""
_CLIP_MATERIALISED = """
def clipped_mean_gradient(X, y, W, b, clip):
    B = len(y)
    Z = X @ W + b
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    P[np.arange(B), y] -= 1
    G = np.einsum("bi,bj->bij", X, P)
    norms = np.sqrt((G ** 2).sum(axis=(1, 2)) + (P ** 2).sum(axis=1))
    f = np.minimum(1.0, clip / norms)
    return (G * f[:, None, None]).mean(axis=0), (P * f[:, None]).mean(axis=0)
"""

PLANTED = [
    # 14.1 has padded sequences and a mean over the real tokens (before the review it was
    # exercise 8.1's weight gradient again)
    ("14.1", _params(scale="(mask / mask.size)[..., None]"), "padding included"),
    ("14.1", _params(scale="(1.0 / mask.sum())"), "The padded positions contribute"),
    (
        "14.1",
        _params(scale="(mask / (mask.shape[0] * mask.sum(axis=1, keepdims=True)))[..., None]"),
        "the mean of each sequence's mean loss",
    ),
    ("14.1", _params(scale="mask[..., None]"), "the gradient of the summed loss"),
    ("14.1", _params(scale="(mask / mask.shape[0])[..., None]"), "the number of sequences"),
    ("14.1", _params(scale="1.0"), "exercise 8.1's rule as it stands"),
    ("14.1", _PARAMS_3D, "one matrix per sequence"),
    (
        "14.1",
        _params(db="deltas.reshape(X.shape[0], -1, upstream.shape[-1]).sum(axis=0)"),
        "Summed over the axes",
    ),
    ("14.1", _params(dW="deltas.T @ rows"), "transposed"),
    ("14.1", _PARAMS_LOOP, "times as long as one forward pass"),
    ("14.2", _norms(scale="/ len(y)"), "mean loss"),
    ("14.2", _norms(biases=""), "biases"),
    ("14.2", _norms(mask=""), "ReLU"),
    ("14.2", _norms(ret="sq"), "squared norms"),
    ("14.2", _NORMS_EINSUM, "||a^T c||_F = ||a|| ||c||"),
    # found in review: one layer's gradients left out of g_i
    ("14.2", _LAYER1_ONLY, "the first layer's gradients alone"),
    ("14.3", _CLIP_BATCH, "clips the averaged gradient"),
    ("14.3", _clip(factor="clip / norms"), "min(1, clip / ||g_i||)"),
    ("14.3", _clip(bias=""), "bias part"),
    ("14.3", _clip(mean=""), "B times the right value"),
    ("14.3", _CLIP_MATERIALISED, "scale that row"),
]


@pytest.mark.parametrize(("exercise", "source", "phrase"), PLANTED)
def test_planted_bug_is_diagnosed(exercise, source, phrase, tmp_path):
    answer = answer_from_source(source, {"np": np})
    v = practice_verdict(exercise, answer)
    assert not v["passed"]
    assert phrase in v["feedback"], v["feedback"]
    g = grading_verdict(exercise, answer, folder=tmp_path)
    assert not g["passed"] and g["status"] == v["status"] and phrase in g["feedback"]
    if v["status"] != "too_slow":  # a cost verdict quotes a measured ratio, which varies
        assert g["diagnosis"] == v["diagnosis"]


def test_every_exercise_has_two_planted_bugs():
    for exercise in EXERCISES:
        assert sum(p[0] == exercise for p in PLANTED) >= 2


def test_exercise_8_1_rule_does_not_answer_14_1():
    """Found in review: 14.1 was a special case of exercise 8.1 (the affine layer's weight
    gradient over any leading axes); it now needs the padding mask and the token count."""
    plain = answer_from_source(_params(scale="1.0"), {"np": np})
    verdict = practice_verdict("14.1", plain)
    assert not verdict["passed"] and "exercise 8.1's rule" in verdict["feedback"]
