"""Exercise 3.3 (the Jacobian of x -> tanh(x @ W) by the matrix chain rule): the right
answer passes and each planted bug gets its diagnosis, in practice mode and through the
grading path, under two seeds."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

NOTEBOOK = {"np": np}

RIGHT = {
    "3.3": """
def tanh_layer_jacobian(x, W):
    u = x @ W
    return np.diag(1.0 - np.tanh(u) ** 2) @ W.T
""",
}

PLANTED = [
    (
        "3.3",
        RIGHT["3.3"].replace(
            "np.diag(1.0 - np.tanh(u) ** 2) @ W.T", "W @ np.diag(1.0 - np.tanh(u) ** 2)"
        ),
        "the right one transposed",
    ),  # noqa: E501
    (
        "3.3",
        RIGHT["3.3"].replace("np.diag(1.0 - np.tanh(u) ** 2) @ W.T", "W.T"),
        "This is the Jacobian of x -> x @ W alone",
    ),  # noqa: E501
    (
        "3.3",
        RIGHT["3.3"].replace(
            "np.diag(1.0 - np.tanh(u) ** 2) @ W.T", "(np.diag(1.0 - np.tanh(x) ** 2) @ W).T"
        ),
        "it belongs at u = x @ W",
    ),  # noqa: E501
    ("3.3", RIGHT["3.3"].replace("np.tanh(u) ** 2", "np.tanh(u)"), "the square matters"),
]


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
