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
def stuck_units(weights, biases, X):
    masks, h, movable = [], X, None
    for W, b in zip(weights, biases):
        h = np.maximum(h @ W + b, 0.0)
        dead = (h == 0).all(axis=0)
        if movable is None:
            stuck = dead
        else:
            stuck = dead & ~((b > 0) | ((W > 0) & movable[:, None]).any(axis=0))
        masks.append(stuck)
        movable = ~stuck
    return masks
""",
    "9.4": """
def residual_mlp_backward(upstream, x, W1, b1, W2):
    z = x @ W1 + b1
    dz = (upstream @ W2.T) * (z > 0)
    return upstream + dz @ W1.T, x.T @ dz, dz.sum(axis=0), np.maximum(z, 0).T @ upstream
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
    # 9.3 asks for the dead units that can never come back (before the review it asked for
    # Exercise 5.6's dead-unit detector again)
    (
        "9.3",
        RIGHT["9.3"].replace("        masks.append(stuck)", "        masks.append(dead)"),
        "You marked every unit that is dead now",
    ),
    (
        "9.3",
        RIGHT["9.3"].replace("stuck = dead & ~(", "stuck = np.zeros_like(dead) & ~("),
        "Only first-layer units are marked",
    ),
    (
        "9.3",
        RIGHT["9.3"].replace("(b > 0) | ", ""),
        "A dead unit with a positive bias can come back",
    ),
    ("9.3", RIGHT["9.3"].replace(" & movable[:, None]", ""), "from a unit that is stuck itself"),
    (
        "9.3",
        RIGHT["9.3"].replace("movable = ~stuck", "movable = ~dead"),
        "dead now but can come back",
    ),
    ("9.3", RIGHT["9.3"].replace("(W > 0)", "(W != 0)"), "A negative weight from a unit"),
    ("9.3", RIGHT["9.3"].replace("(b > 0)", "(b >= 0)"), "A bias of exactly 0 is no way back"),
    # 9.4 has a two-layer branch (before the review it was exercise 5.5 with a bias)
    ("9.4", RIGHT["9.4"].replace("return upstream + dz", "return dz"), "misses the skip path"),
    ("9.4", RIGHT["9.4"].replace("upstream + dz @ W1.T", "upstream"), "adds its own term"),
    ("9.4", RIGHT["9.4"].replace(" * (z > 0)", ""), "as if it were the identity"),
    (
        "9.4",
        RIGHT["9.4"].replace("np.maximum(z, 0).T @ upstream", "z.T @ upstream"),
        "dW2 uses the pre-activation",
    ),
    ("9.4", RIGHT["9.4"].replace("upstream @ W2.T", "upstream @ W2"), "a transpose is probably"),
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


def test_stuck_unit_cases_are_what_they_plant():
    """9.3's expected masks are planted; check them against the deadness the forward pass
    shows and against the stuck-unit rule, over many seeds."""
    from backprop_lab.checks import oracle
    from backprop_lab.checks.oracle import vanishing as spec

    for seed in range(25):
        for c in oracle.spec("9.3").build_cases(seed):
            for kind, dead, stuck, rule in zip(
                c.kinds, spec.dead_masks(c), c.expected, spec._slipped(c)
            ):
                assert np.array_equal(dead, ~np.isin(kind, ["alive", "some rows"]))
                assert np.array_equal(stuck, rule)


def test_every_exercise_has_two_planted_bugs():
    counts = {e: sum(1 for p in PLANTED if p[0] == e) for e in RIGHT}
    assert all(n >= 2 for n in counts.values()), counts


def test_chapter_5_answers_do_not_answer_9_3_and_9_4():
    """Found in review: 9.3 was exercise 5.6 (dead units) for three layers and 9.4 was
    exercise 5.5 (a residual block with a tanh branch) with a bias; both now go further."""
    dead_now = answer_from_source(
        """
def stuck_units(weights, biases, X):
    masks, h = [], X
    for W, b in zip(weights, biases):
        h = np.maximum(h @ W + b, 0.0)
        masks.append(np.all(h == 0, axis=0))
    return masks
""",
        {"np": np},
    )
    assert not practice_verdict("9.3", dead_now)["passed"]
    one_layer = answer_from_source(
        """
def residual_mlp_backward(upstream, x, W1, b1, W2):
    t = np.tanh(x @ W1 + b1)
    du = upstream * (1.0 - t**2)
    return upstream + du @ W1.T, x.T @ du, du.sum(axis=0), W2 * 0
""",
        {"np": np},
    )
    assert not practice_verdict("9.4", one_layer)["passed"]
