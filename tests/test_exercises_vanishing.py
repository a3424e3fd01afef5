"""Planted bugs of chapter 9's exercises: each wrong answer must get its own diagnosis, in
practice mode and through the grading path."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

RIGHT = {
    "9.1": """
def preserving_std(phi, fan_in, fan_out):
    m = (phi(np.array(1.0)) ** 2 + phi(np.array(-1.0)) ** 2) / 2
    return 1 / np.sqrt(fan_in * m), 1 / np.sqrt(fan_out * m)
""",
    "9.2": """
def predict_ratio(kind, depth, gain):
    per = {"linear": gain, "relu": gain / np.sqrt(2), "tanh": gain,
           "residual": np.sqrt(1 + gain**2)}[kind]
    return per**depth
""",
    "9.3": """
def dead_units(weights, biases, X):
    masks, h = [], X
    for W, b in zip(weights, biases):
        h = np.maximum(h @ W + b, 0.0)
        masks.append((h == 0).all(axis=0))
    return masks
""",
    "9.4": """
def residual_backward(upstream, x, W, b):
    t = np.tanh(x @ W + b)
    dz = upstream * (1 - t * t)
    return upstream + dz @ W.T, x.T @ dz, dz.sum(axis=0)
""",
}

PLANTED = [
    (
        "9.1",
        """
def preserving_std(phi, fan_in, fan_out):
    return 1 / np.sqrt(fan_in), 1 / np.sqrt(fan_out)
""",
        "do not depend on phi",
    ),
    (
        "9.1",
        """
def preserving_std(phi, fan_in, fan_out):
    m = (phi(np.array(1.0)) ** 2 + phi(np.array(-1.0)) ** 2) / 2
    return 1 / np.sqrt(fan_in * m), 1 / np.sqrt(fan_in * m)
""",
        "sum over fan_out terms",
    ),
    (
        "9.1",
        """
def preserving_std(phi, fan_in, fan_out):
    m = (phi(np.array(1.0)) ** 2 + phi(np.array(-1.0)) ** 2) / 2
    return 1 / (fan_in * m), 1 / (fan_out * m)
""",
        "You returned variances",
    ),
    (
        "9.1",
        """
def preserving_std(phi, fan_in, fan_out):
    m = phi(np.array(1.0)) ** 2 + phi(np.array(-1.0)) ** 2
    return 1 / np.sqrt(fan_in * m), 1 / np.sqrt(fan_out * m)
""",
        "with the 1/2",
    ),
    (
        "9.2",
        """
def predict_ratio(kind, depth, gain):
    per = {"linear": gain, "relu": gain, "tanh": gain, "residual": np.sqrt(1 + gain**2)}[kind]
    return per**depth
""",
        "sqrt(2) per layer",
    ),
    (
        "9.2",
        """
def predict_ratio(kind, depth, gain):
    per = {"linear": gain, "relu": gain / np.sqrt(2), "tanh": gain, "residual": gain}[kind]
    return per**depth
""",
        "ignore the skip path",
    ),
    (
        "9.2",
        """
def predict_ratio(kind, depth, gain):
    per = {"linear": gain, "relu": gain / np.sqrt(2), "tanh": gain, "residual": 1 + gain}[kind]
    return per**depth
""",
        "squared norms add",
    ),
    (
        "9.3",
        """
def dead_units(weights, biases, X):
    masks, h = [], X
    for W, b in zip(weights, biases):
        z = h @ W + b
        masks.append((z < 0).all(axis=0))
        h = np.maximum(z, 0.0)
    return masks
""",
        "exactly 0",
    ),
    (
        "9.3",
        """
def dead_units(weights, biases, X):
    masks, h = [], X
    for W, b in zip(weights, biases):
        h = np.maximum(h @ W + b, 0.0)
        masks.append((h == 0).any(axis=0))
    return masks
""",
        "use all over the batch axis",
    ),
    (
        "9.3",
        """
def dead_units(weights, biases, X):
    masks, h = [], X
    for W, b in zip(weights, biases):
        h = np.maximum(h @ W + b, 0.0)
        masks.append((h == 0).all(axis=1))
    return masks
""",
        "one entry per example",
    ),
    (
        "9.4",
        """
def residual_backward(upstream, x, W, b):
    t = np.tanh(x @ W + b)
    dz = upstream * (1 - t * t)
    return dz @ W.T, x.T @ dz, dz.sum(axis=0)
""",
        "misses the skip path",
    ),
    (
        "9.4",
        """
def residual_backward(upstream, x, W, b):
    t = np.tanh(x @ W + b)
    dz = upstream * (1 - t * t)
    return upstream + dz @ W, x.T @ dz, dz.sum(axis=0)
""",
        "multiplies by W.T",
    ),
    (
        "9.4",
        """
def residual_backward(upstream, x, W, b):
    t = np.tanh(x @ W + b)
    dz = upstream * (1 - t * t)
    return upstream, x.T @ dz, dz.sum(axis=0)
""",
        "adds its own term",
    ),
]

# found in review
PLANTED += [
    (
        "9.1",
        """
def preserving_std(phi, fan_in, fan_out):
    m = (phi(np.array(1.0)) ** 2 + phi(np.array(-1.0)) ** 2) / 2
    return 1 / np.sqrt(fan_out * m), 1 / np.sqrt(fan_in * m)
""",
        "have their fans swapped",
    ),
    (
        "9.1",
        """
def preserving_std(phi, fan_in, fan_out):
    m = phi(np.array(1.0)) ** 2 / 2
    return 1 / np.sqrt(fan_in * m), 1 / np.sqrt(fan_out * m)
""",
        "right for ReLU but not when phi(-1) is not 0",
    ),
    (
        "9.1",
        """
def preserving_std(phi, fan_in, fan_out):   # Monte Carlo, which the exercise rules out
    z = np.random.default_rng(0).normal(size=4_000_000)
    h = 1e-6
    m1 = np.mean(phi(z) ** 2)
    m2 = np.mean(((phi(z + h) - phi(z - h)) / (2 * h)) ** 2)
    return 1 / np.sqrt(fan_in * m1), 1 / np.sqrt(fan_out * m2)
""",
        "estimating the second moments by sampling",
    ),
    (
        "9.2",
        RIGHT["9.2"].replace("gain / np.sqrt(2)", "gain * np.sqrt(2)"),
        "grow by sqrt(2) per layer",
    ),
    (
        "9.2",
        RIGHT["9.2"].replace("np.sqrt(1 + gain**2)", "(1 + gain**2)"),
        "the norm gains its square root",
    ),
    (
        "9.2",
        RIGHT["9.2"].replace('"tanh": gain,', '"tanh": gain**2,'),
        "but not for the tanh layers",
    ),
    (
        "9.3",
        """
def dead_units(weights, biases, X):
    masks, z = [], X
    for W, b in zip(weights, biases):
        z = z @ W + b                     # the ReLU between layers forgotten
        masks.append(np.all(np.maximum(z, 0) == 0, axis=0))
    return masks
""",
        "reads the previous layer's pre-activations",
    ),
    ("9.3", RIGHT["9.3"].replace("(h == 0).all(axis=0)", "(h != 0).any(axis=0)"), "swapped"),
]


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
