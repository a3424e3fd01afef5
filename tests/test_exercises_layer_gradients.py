"""Planted bugs of chapter 8's exercises: each wrong answer must get its own diagnosis, in
practice mode and through the grading path."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

RIGHT = {
    "8.1": """
def affine_backward(dY, X, W, b):
    n, m = W.shape
    return dY @ W.T, X.reshape(-1, n).T @ dY.reshape(-1, m), dY.reshape(-1, m).sum(axis=0)
""",
    "8.2": """
def softmax_cross_entropy(logits, labels):
    B = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    d = np.exp(log_p)
    d[np.arange(B), labels] -= 1
    return float(-log_p[np.arange(B), labels].mean()), d / B
""",
    "8.3": """
def batchnorm_backward(dY, X, gamma, eps):
    s = np.sqrt(X.var(axis=0) + eps)
    xhat = (X - X.mean(axis=0)) / s
    g = dY * gamma
    dX = (g - g.mean(axis=0) - xhat * (g * xhat).mean(axis=0)) / s
    return dX, (dY * xhat).sum(axis=0), dY.sum(axis=0)
""",
    "8.4": """
def rmsnorm_backward(dY, X, gamma, eps):
    d = X.shape[-1]
    r = np.sqrt((X * X).mean(axis=-1, keepdims=True) + eps)
    g = dY * gamma
    return g / r - X * (g * X).sum(axis=-1, keepdims=True) / (d * r**3), (dY * X / r).sum(axis=0)
""",
}

PLANTED = [
    (
        "8.1",
        """
def affine_backward(dY, X, W, b):
    n, m = W.shape
    X2, dY2 = X.reshape(-1, n), dY.reshape(-1, m)
    N = X2.shape[0]
    return dY @ W.T, X2.T @ dY2 / N, dY2.sum(axis=0) / N
""",
        "divided by the number of rows",
    ),
    (
        "8.1",
        """
def affine_backward(dY, X, W, b):
    return dY @ W.T, np.swapaxes(X, -1, -2) @ dY, dY.sum(axis=0)
""",
        "Summed over the axes that broadcasting added",
    ),
    (
        "8.1",
        """
def affine_backward(dY, X, W, b):
    n, m = W.shape
    return dY @ W, X.reshape(-1, n).T @ dY.reshape(-1, m), dY.reshape(-1, m).sum(axis=0)
""",
        "a transpose is probably missing",
    ),
    (
        "8.2",
        """
def softmax_cross_entropy(logits, labels):
    B = logits.shape[0]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    d = p.copy()
    d[np.arange(B), labels] -= 1
    return float(-np.log(p[np.arange(B), labels]).mean()), d / B
""",
        "exp overflows",
    ),
    (
        "8.2",
        """
def softmax_cross_entropy(logits, labels):
    B = logits.shape[0]
    z = logits - logits.max()
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    d = np.exp(log_p)
    d[np.arange(B), labels] -= 1
    return float(-log_p[np.arange(B), labels].mean()), d / B
""",
        "each row's own maximum",
    ),
    (
        "8.2",
        """
def softmax_cross_entropy(logits, labels):
    B = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    d = p.copy()
    d[np.arange(B), labels] -= 1
    return float(-np.log(p[np.arange(B), labels]).mean()), d / B
""",
        "without forming p first",
    ),
    (
        "8.2",
        """
def softmax_cross_entropy(logits, labels):
    B = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    d = np.exp(log_p)
    d[np.arange(B), labels] -= 1
    return float(-log_p[np.arange(B), labels].sum()), d
""",
        "batch size times too large",
    ),
    (
        "8.2",
        """
def softmax_cross_entropy(logits, labels):
    B = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(B), labels].mean()), np.exp(log_p) / B
""",
        "the target is missing",
    ),
    (
        "8.3",
        """
def batchnorm_backward(dY, X, gamma, eps):
    s = np.sqrt(X.var(axis=0) + eps)
    xhat = (X - X.mean(axis=0)) / s
    return dY * gamma / s, (dY * xhat).sum(axis=0), dY.sum(axis=0)
""",
        "the direct path alone",
    ),
    (
        "8.3",
        """
def batchnorm_backward(dY, X, gamma, eps):
    s = np.sqrt(X.var(axis=0) + eps)
    xhat = (X - X.mean(axis=0)) / s
    g = dY * gamma
    return (g - xhat * (g * xhat).mean(axis=0)) / s, (dY * xhat).sum(axis=0), dY.sum(axis=0)
""",
        "not the one through the batch mean",
    ),
    (
        "8.3",
        """
def batchnorm_backward(dY, X, gamma, eps):
    s = np.sqrt(X.var(axis=0) + eps)
    xhat = (X - X.mean(axis=0)) / s
    g = dY * gamma
    return (g - g.mean(axis=0)) / s, (dY * xhat).sum(axis=0), dY.sum(axis=0)
""",
        "path through the variance is missing",
    ),
    (
        "8.3",
        """
def batchnorm_backward(dY, X, gamma, eps):
    B = X.shape[0]
    s = np.sqrt(X.var(axis=0, ddof=1) + eps)
    xhat = (X - X.mean(axis=0)) / s
    g = dY * gamma
    dX = (g - g.mean(axis=0) - xhat * (g * xhat).sum(axis=0) / (B - 1)) / s
    return dX, (dY * xhat).sum(axis=0), dY.sum(axis=0)
""",
        "unbiased variance",
    ),
    (
        "8.3",
        """
def batchnorm_backward(dY, X, gamma, eps):
    s = np.sqrt(X.var(axis=0) + eps)
    xhat = (X - X.mean(axis=0)) / s
    g = dY * gamma
    dX = (g - g.mean(axis=0) - xhat * (g * xhat).mean(axis=0)) / s
    return dX, (dY * X).sum(axis=0), dY.sum(axis=0)
""",
        "sum over the batch of dY * x-hat",
    ),
    (
        "8.4",
        """
def rmsnorm_backward(dY, X, gamma, eps):
    r = np.sqrt((X * X).mean(axis=-1, keepdims=True) + eps)
    return dY * gamma / r, (dY * X / r).sum(axis=0)
""",
        "Add the path through r",
    ),
    (
        "8.4",
        """
def rmsnorm_backward(dY, X, gamma, eps):
    r = np.sqrt((X * X).mean(axis=-1, keepdims=True) + eps)
    g = dY * gamma
    return g / r - X * (g * X).sum(axis=-1, keepdims=True) / r**3, (dY * X / r).sum(axis=0)
""",
        "d times too large",
    ),
    (
        "8.4",
        """
def rmsnorm_backward(dY, X, gamma, eps):
    d = X.shape[-1]
    r = np.sqrt((X * X).mean(axis=-1, keepdims=True) + eps)
    g = dY * gamma
    return g / r - X * (g * X).sum(axis=-1, keepdims=True) / (d * r**3), (dY * X).sum(axis=0)
""",
        "carries its 1 / r",
    ),
]

# found in review
PLANTED += [
    (
        "8.1",
        """
def affine_backward(dY, X, W, b):
    n, m = W.shape
    return dY @ W.T, dY.reshape(-1, m).T @ X.reshape(-1, n), dY.reshape(-1, m).sum(axis=0)
""",
        "It is the right matrix transposed",
    ),
    (
        "8.1",
        """
def affine_backward(dY, X, W, b):
    n, m = W.shape
    return dY.reshape(-1, m) @ W.T, X.reshape(-1, n).T @ dY.reshape(-1, m), dY.sum(axis=(0, 1))
""",
        "Its entries are right: reshape it",
    ),
    (
        "8.2",
        RIGHT["8.2"].replace("d / B", "d"),
        "Your loss is right, but its gradient is the batch size times too large",
    ),
    (
        "8.2",
        """
def softmax_cross_entropy(logits, labels):
    B = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    d = p.copy()
    d[np.arange(B), labels] -= 1
    return float(-np.log(np.maximum(p[np.arange(B), labels], 1e-300)).mean()), d / B
""",
        "if you clip p to a tiny number",
    ),
    (
        "8.3",
        RIGHT["8.3"].replace("- xhat * (g * xhat)", "+ xhat * (g * xhat)"),
        "The path through the variance has the wrong sign",
    ),
    (
        "8.3",
        RIGHT["8.3"].replace("np.sqrt(X.var(axis=0) + eps)", "np.sqrt(X.var(axis=0))"),
        "your rule leaves out eps",
    ),
    (
        "8.3",
        RIGHT["8.3"].replace("dY.sum(axis=0)\n", "dY.mean(axis=0)\n"),
        "sums over the batch, not means",
    ),
    (
        "8.4",
        """
def rmsnorm_backward(dY, X, gamma, eps):   # layer normalisation's rule
    s = np.sqrt(X.var(axis=-1, keepdims=True) + eps)
    xh = (X - X.mean(axis=-1, keepdims=True)) / s
    g = dY * gamma
    r = np.sqrt((X * X).mean(axis=-1, keepdims=True) + eps)
    dX = (g - g.mean(axis=-1, keepdims=True) - xh * (g * xh).mean(axis=-1, keepdims=True)) / s
    return dX, (dY * X / r).sum(axis=0)
""",
        "as layer normalisation's does",
    ),
    (
        "8.4",
        RIGHT["8.4"].replace("+ eps)", ")"),
        "your rule leaves out eps",
    ),
    (
        "8.4",
        RIGHT["8.4"].replace("(dY * X / r).sum(axis=0)", "(dY * X / r).mean(axis=0)"),
        "dgamma is a sum over the batch, not a mean",
    ),
]


def test_the_engine_forward_pass_is_refused_in_8_2():
    """Found in review: forbidding bl.cross_entropy by its public function also forbade
    reshape, stack, transpose and where (one generated wrapper shares their code); the fused
    op is now recognised by its own forward rule, and only it."""
    import backprop_lab as bl

    engine = answer_from_source(
        """
def softmax_cross_entropy(logits, labels):
    B = logits.shape[0]
    loss = bl.cross_entropy(bl.tensor(logits), labels).item()
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    p[np.arange(B), labels] -= 1
    return float(loss), p / B
""",
        {"np": np, "bl": bl},
    )
    verdict = practice_verdict("8.2", engine)
    assert not verdict["passed"] and "backprop_lab.ops.cross_entropy.forward" in verdict["feedback"]
    reshaping = answer_from_source(
        RIGHT["8.2"].replace(
            "B = logits.shape[0]", "B = bl.reshape(logits, (-1,)).shape[0] // logits.shape[1]"
        ),
        {"np": np, "bl": bl},
    )
    assert practice_verdict("8.2", reshaping)["passed"]


@pytest.mark.parametrize("exercise", sorted(RIGHT))
def test_right_answers_pass(exercise, tmp_path):
    answer = answer_from_source(RIGHT[exercise], {"np": np})
    assert practice_verdict(exercise, answer)["passed"]
    assert grading_verdict(exercise, answer, folder=tmp_path)["passed"]


@pytest.mark.parametrize("exercise,source,phrase", PLANTED)
def test_planted_bug_is_diagnosed(exercise, source, phrase, tmp_path):
    answer = answer_from_source(source, {"np": np})
    practice = practice_verdict(exercise, answer)
    assert not practice["passed"]
    assert phrase in practice["feedback"], practice["feedback"]
    graded = grading_verdict(exercise, answer, folder=tmp_path)
    assert not graded["passed"] and phrase in graded["feedback"]


def test_every_exercise_has_two_planted_bugs():
    counts = {e: sum(1 for p in PLANTED if p[0] == e) for e in RIGHT}
    assert all(n >= 2 for n in counts.values()), counts
