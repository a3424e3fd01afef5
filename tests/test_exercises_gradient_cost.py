"""Exercise 1.3 (predict the backward pass's FLOPs): the right answer passes and each planted
bug gets its diagnosis, in practice mode and through the grading path, under two seeds."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

NOTEBOOK = {"np": np}

RIGHT = {
    "1.3": """
def backward_flop_ratio(widths):
    w = np.asarray(widths, dtype=float)
    sizes = w[:-1] * w[1:]
    return (sizes[0] + 2 * sizes[1:].sum()) / sizes.sum()
""",
}

PLANTED = [
    (
        "1.3",
        "def backward_flop_ratio(widths):\n    return 2.0\n",
        "The first layer's input is the data",
    ),
    ("1.3", "def backward_flop_ratio(widths):\n    return 1.0\n", "Every layer after the first"),
    (
        "1.3",
        RIGHT["1.3"].replace("return (", "return 1 + ("),
        "a whole training step",
    ),
    (
        "1.3",
        RIGHT["1.3"].replace("(sizes[0] + 2 * sizes[1:].sum())", "2 * sizes[1:].sum()"),
        "but its weights do",
    ),
    (
        "1.3",
        "def backward_flop_ratio(widths):\n    D = len(widths) - 1\n    return (2 * D - 1) / D\n",
        "weight each layer by widths[l-1] * widths[l]",
    ),
    (
        "1.3",
        RIGHT["1.3"].replace(
            "return (sizes[0] + 2 * sizes[1:].sum()) / sizes.sum()",
            "return sizes.sum() / (sizes[0] + 2 * sizes[1:].sum())",
        ),
        "Yours is the reciprocal",
    ),
]


def _same(practice, graded):
    for key in ("passed", "status", "score", "outputs", "diagnosis", "feedback"):
        assert practice[key] == graded[key], key


@pytest.mark.parametrize("exercise", sorted(RIGHT))
def test_right_answer_passes_in_both_modes(exercise, tmp_path):
    answer = answer_from_source(RIGHT[exercise], NOTEBOOK)
    practice = practice_verdict(exercise, answer)
    assert practice["passed"], practice["feedback"]
    _same(practice, grading_verdict(exercise, answer, folder=tmp_path))
    assert grading_verdict(exercise, answer, folder=tmp_path / "o", seed=271828)["passed"]


@pytest.mark.parametrize("exercise, source, phrase", PLANTED)
def test_planted_bug_is_diagnosed_in_both_modes(exercise, source, phrase, tmp_path):
    answer = answer_from_source(source, NOTEBOOK)
    practice = practice_verdict(exercise, answer)
    assert not practice["passed"]
    assert phrase in practice["feedback"], practice["feedback"]
    _same(practice, grading_verdict(exercise, answer, folder=tmp_path))
    other = grading_verdict(exercise, answer, folder=tmp_path / "o", seed=271828)
    assert phrase in other["feedback"], other["feedback"]


def test_measuring_instead_of_predicting_is_refused():
    source = """
def backward_flop_ratio(widths):
    from backprop_lab.explore.what_backprop_computes import matmul_flop_tally
    t = np.array(matmul_flop_tally(widths))
    return t[:, 1].sum() / t[:, 0].sum()
"""
    v = practice_verdict("1.3", answer_from_source(source, NOTEBOOK))
    assert v["status"] == "forbidden" and "matmul_flop_tally" in v["feedback"]
