"""Exercise 2.3 (predict where the slope of sin(c w^2)^3 vanishes): the right answer passes
and each planted bug gets its diagnosis, in practice mode and through the grading path,
under two seeds. The oracle finds the points numerically; here they are checked against
the closed form."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_lab.checks.oracle.slopes import zeros_of_slope
from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

NOTEBOOK = {"np": np}

RIGHT = {
    "2.3": """
def flat_points(c, w_max):
    k = np.arange(0, 100)
    where_a_is_0 = np.sqrt(k * np.pi / c)               # includes w = 0
    where_cos_is_0 = np.sqrt((np.pi / 2 + k * np.pi) / c)
    pts = np.concatenate([where_a_is_0, where_cos_is_0])
    return np.sort(pts[pts <= w_max])
""",
}

SIGN_CHANGES = """
def flat_points(c, w_max):
    w = np.linspace(0, w_max, 200001)
    s = 6 * c * w * np.sin(c * w**2) ** 2 * np.cos(c * w**2)
    k = np.flatnonzero(s[:-1] * s[1:] < 0)
    return np.concatenate([[0.0], (w[k] + w[k + 1]) / 2])
"""

PLANTED = [
    ("2.3", RIGHT["2.3"].replace("pts <= w_max", "(pts > 0) & (pts <= w_max)"), "w = 0 is missing"),
    (
        "2.3",
        RIGHT["2.3"].replace("[where_a_is_0, where_cos_is_0]", "[[0.0], where_cos_is_0]"),
        "touches zero and comes back",
    ),
    (
        "2.3",
        RIGHT["2.3"].replace("[where_a_is_0, where_cos_is_0]", "[where_cos_is_0]"),
        "You have only the points where cos z = 0",
    ),
    ("2.3", RIGHT["2.3"].replace("/ c)", ")"), "These are the points for c = 1"),
    ("2.3", RIGHT["2.3"].replace("pts[pts <= w_max]", "pts[pts <= 2 * w_max]"), "outside"),
    ("2.3", SIGN_CHANGES, "A search for sign changes misses them"),
]


@pytest.mark.parametrize("c, w_max", [(1.0, 2.0), (0.83, 2.41), (2.7, 2.2), (1.6, 1.0)])
def test_the_oracle_finds_the_closed_form_points(c, w_max):
    right = answer_from_source(RIGHT["2.3"], NOTEBOOK)
    np.testing.assert_allclose(zeros_of_slope(c, w_max), right(c, w_max), rtol=0, atol=1e-9)


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
