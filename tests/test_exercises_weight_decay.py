"""Exercise 4.3 (weight decay: W1 and W2 each used twice): the right answer passes and each
planted bug gets its diagnosis, in practice mode and through the grading path, under two
seeds."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_lab.checks.drivers.weight_decay import LAM, X_WD, Y_WD
from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

NOTEBOOK = {"np": np}

RIGHT = {
    "4.3": """
def penalized_backward(upstream, W1, b1, W2, b2, X, Y, lam):
    B = X.shape[0]
    H = 1.0 / (1.0 + np.exp(-(X @ W1 + b1)))
    Yhat = H @ W2 + b2
    dYhat = upstream * 2.0 * (Yhat - Y) / B
    dW2 = H.T @ dYhat + upstream * lam * W2
    db2 = dYhat.sum(axis=0)
    dZ = (dYhat @ W2.T) * H * (1.0 - H)
    dW1 = X.T @ dZ + upstream * lam * W1
    db1 = dZ.sum(axis=0)
    return dW1, db1, dW2, db2
""",
}

_R = RIGHT["4.3"]
PLANTED = [
    (
        "4.3",
        _R.replace(" + upstream * lam * W2", ""),
        "dW2: It is the gradient of the squared loss alone",
    ),  # noqa: E501
    (
        "4.3",
        _R.replace(" + upstream * lam * W2", "").replace(" + upstream * lam * W1", ""),
        "add the penalty's contribution",
    ),  # noqa: E501
    ("4.3", _R.replace("H.T @ dYhat + upstream", "0 * H.T @ dYhat + upstream"), "was overwritten"),  # noqa: E501
    ("4.3", _R.replace("upstream * lam * W1", "upstream * 2 * lam * W1"), "not 2 * lam * W"),
    (
        "4.3",
        _R.replace("db1 = dZ.sum(axis=0)", "db1 = dZ.sum(axis=0) + upstream * lam * b1"),
        "the penalty covers W1 and W2 only",
    ),  # noqa: E501
    (
        "4.3",
        _R.replace("dYhat = upstream * 2.0", "dYhat = 2.0").replace("upstream * lam", "lam"),
        "does not change with upstream",
    ),  # noqa: E501
]


def test_the_exercise_data_are_the_notebooks():
    rng = np.random.default_rng(43)
    np.testing.assert_array_equal(X_WD, rng.normal(size=(6, 3)))
    np.testing.assert_array_equal(Y_WD, rng.normal(size=(6, 2)))
    assert LAM == 0.1


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
