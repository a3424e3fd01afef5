"""Exercises 5.5 (a residual block's backward pass), 5.6 (a dead-unit detector) and 5.7
(predict the steady gain of a leaky-ReLU stack): right answers pass and each planted bug
gets its diagnosis, in practice mode and through the grading path, under two seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backprop_lab.checks.oracle.gradient_flow import measured_steady_gain
from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

NOTEBOOK = {"np": np, "math": math}

RIGHT = {
    "5.5": """
def residual_backward(upstream, x, W):
    t = np.tanh(x @ W)
    du = upstream * (1.0 - t**2)
    return upstream + du @ W.T, x.T @ du
""",
    "5.6": """
def dead_units(X, W1, b1, W2, b2):
    H1 = np.maximum(X @ W1 + b1, 0.0)
    H2 = np.maximum(H1 @ W2 + b2, 0.0)
    return np.all(H1 == 0, axis=0), np.all(H2 == 0, axis=0)
""",
    "5.7": """
def steady_gain(slope):
    return math.sqrt(2.0 / (1.0 + slope**2))
""",
}

_R5, _D6 = RIGHT["5.5"], RIGHT["5.6"]
PLANTED = [
    (
        "5.5",
        _R5.replace("upstream + du @ W.T", "du @ W.T"),
        "the add gate also sends the upstream g",
    ),  # noqa: E501
    ("5.5", _R5.replace("upstream + du @ W.T", "upstream"), "the branch's share g J_f"),
    ("5.5", _R5.replace("t = np.tanh(x @ W)", "t = np.tanh(x)"), "it belongs at u = x @ W"),
    ("5.5", _R5.replace("du @ W.T", "du @ W"), "needs W.T"),
    ("5.5", _R5.replace("x.T @ du", "x.T @ upstream"), "multiply g by tanh's derivative first"),
    ("5.6", _D6.replace("np.all(", "np.any("), "np.all over the examples, not np.any"),
    ("5.6", _D6.replace("axis=0", "axis=1"), "return one entry per unit"),
    ("5.6", _D6.replace("H1 @ W2", "(X @ W1 + b1) @ W2"), "reads their ReLU"),
    (
        "5.6",
        """
def dead_units(X, W1, b1, W2, b2):
    Z1 = X @ W1 + b1
    Z2 = np.maximum(Z1, 0.0) @ W2 + b2
    return np.all(Z1 < 0, axis=0), np.all(Z2 < 0, axis=0)
""",
        "not < 0",
    ),  # fmt: skip
    ("5.6", _D6.replace("== 0", "!= 0").replace("np.all(", "np.any("), "swapped"),
    ("5.7", "def steady_gain(slope):\n    return math.sqrt(2.0)\n", "ignores the slope"),
    ("5.7", "def steady_gain(slope):\n    return 2.0 / (1.0 + slope**2)\n", "Take the square root"),  # noqa: E501
    (
        "5.7",
        "def steady_gain(slope):\n    return math.sqrt(2.0 / (1.0 + slope))\n",
        "slope**2, not slope",
    ),  # noqa: E501
    ("5.7", "def steady_gain(slope):\n    return 1.0\n", "the weights must make that part up"),
]


@pytest.mark.parametrize("slope", [0.0, 0.5, 0.7])
def test_the_measured_gain_is_the_variance_argument(slope):
    """The oracle measures; the closed form sqrt(2 / (1 + slope^2)) is within 2%."""
    for seed in (0, 1):
        assert measured_steady_gain(slope, seed) == pytest.approx(
            math.sqrt(2.0 / (1.0 + slope**2)), rel=0.02
        )


def _same(practice, graded):
    """The verdicts agree, apart from timings (measured anew in each run)."""
    for key in ("passed", "status", "score", "outputs", "diagnosis", "feedback"):
        if key == "feedback" and practice["status"] == "too_slow":
            continue
        assert practice[key] == graded[key], key


def test_every_exercise_has_two_planted_bugs():
    counts = {}
    for exercise, _, _ in PLANTED:
        counts[exercise] = counts.get(exercise, 0) + 1
    assert set(counts) == set(RIGHT) and min(counts.values()) >= 2, counts


@pytest.mark.parametrize("exercise", sorted(RIGHT))
def test_right_answer_passes_in_both_modes(exercise, tmp_path):
    answer = answer_from_source(RIGHT[exercise], NOTEBOOK)
    practice = practice_verdict(exercise, answer)
    assert practice["passed"], practice["feedback"]
    _same(practice, grading_verdict(exercise, answer, folder=tmp_path))
    other = grading_verdict(exercise, answer, folder=tmp_path / "o", seed=271828)
    assert other["passed"], other["feedback"]


def _ids(rows):
    return [f"{r[0]}-{i}" for i, r in enumerate(rows)]


@pytest.mark.parametrize("exercise, source, phrase", PLANTED, ids=_ids(PLANTED))
def test_planted_bug_is_diagnosed_in_both_modes(exercise, source, phrase, tmp_path):
    answer = answer_from_source(source, NOTEBOOK)
    practice = practice_verdict(exercise, answer)
    assert not practice["passed"]
    assert phrase in practice["feedback"], practice["feedback"]
    _same(practice, grading_verdict(exercise, answer, folder=tmp_path))
    other = grading_verdict(exercise, answer, folder=tmp_path / "o", seed=271828)
    assert phrase in other["feedback"], other["feedback"]
