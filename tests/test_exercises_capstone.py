"""Exercises of Chapter 15 (the complete picture): the instructor's answers pass, and each
planted bug gets the diagnosis that names it, in practice mode and through the grading
path."""

from __future__ import annotations

import numpy as np
import pytest
from _chapter_solutions import answer_source

from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

NOTEBOOK = "15-the-complete-picture.ipynb"
CONV_NAMES = ("conv1d_forward", "conv1d_vjp", "conv1d_jvp", "conv1d_formulas")


def _conv_rules(source):
    return tuple(answer_from_source(source, {"np": np}, name=n) for n in CONV_NAMES)


def _answers(exercise, source):
    if exercise == "15.1":
        return _conv_rules(source)
    return (answer_from_source(source, {"np": np}),)


@pytest.mark.parametrize("exercise", ["15.1", "15.2", "15.3"])
def test_instructor_answer_passes(exercise, tmp_path):
    answers = _answers(exercise, answer_source(NOTEBOOK, exercise))
    v = practice_verdict(exercise, *answers)
    assert v["passed"], v["feedback"]
    g = grading_verdict(exercise, *answers, folder=tmp_path)
    assert g["passed"], g["feedback"]


def _conv_solution():
    return answer_source(NOTEBOOK, "15.1")


def _conv_with(old, new):
    src = _conv_solution()
    assert old in src, old
    return src.replace(old, new)


_COSINE = """
def cosine_vjp(upstream, a, b):
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    ua, ub = a / na, b / nb
    s = np.sum(ua * ub, axis=1, keepdims=True)
    g = {g}
    return {da}, {db}
"""
_COSINE_RIGHT = dict(
    g="upstream[:, None]",
    da="g * (ub - s * ua) / na",
    db="g * (ua - s * ub) / nb",
)


def _cosine(**changes):
    return _COSINE.format(**{**_COSINE_RIGHT, **changes})


_FLOPS = """
def predict_matmul_flops(B, T, d, hidden, vocab):
    rows = B * T
    embed = 2 * rows * vocab * d
    attention = {attention}
    rest = 8 * rows * d * d + attention + 4 * rows * d * hidden + 2 * rows * d * vocab
    return embed + rest, {backward}
"""
_FLOPS_RIGHT = dict(attention="4 * B * T * T * d", backward="embed + 2 * rest")


def _flops(**changes):
    return _FLOPS.format(**{**_FLOPS_RIGHT, **changes})


PLANTED = [
    (
        "15.1",
        lambda: _conv_with(
            "w[:, :, k] @ x[:, :, k : k + T_out]", "w[:, :, K - 1 - k] @ x[:, :, k : k + T_out]"
        ).replace("w[:, :, 0] @ x[:, :, 0:T_out]", "w[:, :, K - 1] @ x[:, :, 0:T_out]"),
        "flipped",
    ),
    (
        "15.1",
        lambda: _conv_with("cols.append(xp.sum(g @ xk, axis=0))", "cols.append(g @ xk)"),
        "one kernel per example",
    ),
    (
        "15.1",
        lambda: _conv_with("gx[:, :, k : k + T_out] +=", "gx[:, :, 0:T_out] +="),
        "shifted window",
    ),
    ("15.1", lambda: _conv_with("    if tw is not None:\n", "    if False:\n"), "both inputs"),
    (
        "15.1",
        lambda: _conv_with('"jvp_formula": r"', '"jvp_formula": "", "x": r"'),
        "conv1d_formulas()",
    ),
    # found in review
    (
        "15.1",
        lambda: _conv_with("gx[:, :, k : k + T_out] +=", "gx[:, :, k : k + T_out] ="),
        "an assignment keeps only the last offset's share",
    ),
    (
        "15.1",
        lambda: _conv_with(
            "    result = None\n    if tx is not None:",
            "    if tx is not None and tw is not None:\n"
            "        return conv1d_forward(xp, tx, tw)[0]\n"
            "    result = None\n    if tx is not None:",
        ),
        "not conv(x_dot, w_dot)",
    ),
    ("15.2", lambda: _cosine(da="g * b", db="g * a"), "the gradient of the dot product alone"),
    (
        "15.2",
        lambda: _cosine(da="g * ub / na", db="g * ua / nb"),
        "It treats the norms as constants",
    ),
    (
        "15.2",
        lambda: _cosine(da="g * (ub + s * ua) / na", db="g * (ua + s * ub) / nb"),
        "added where it must be removed",
    ),
    (
        "15.2",
        lambda: _cosine(da="g * (ub - s * ua) / na**2", db="g * (ua - s * ub) / nb**2"),
        "||a||^2",
    ),
    ("15.2", lambda: _cosine(g="1.0"), "The upstream gradient is missing"),
    (
        "15.2",
        lambda: _cosine(da="g * (ua - s * ub) / nb", db="g * (ub - s * ua) / na"),
        "da and db are swapped",
    ),
    ("15.2", lambda: _cosine(g="upstream"), "do not broadcast"),
    ("15.3", lambda: _flops(backward="embed + rest"), "backward is about twice forward"),
    ("15.3", lambda: _flops(backward="2 * (embed + rest)"), "one-hot matrix"),
    ("15.3", lambda: _flops(attention="0"), "two products inside attention"),
    ("15.3", lambda: _flops(attention="4 * T * T * d"), "multiply by B"),
]


def test_exercise_10_3_answer_does_not_answer_15_2():
    """Found in review: 15.2 was 10.3 again (row normalisation, same signature); now it asks
    for the cosine similarity's rule, for which 10.3's rule is one piece."""
    from _chapter_solutions import answer_source as source

    l2 = answer_from_source(source("10-gradient-checking.ipynb", "10.3"), {"np": np})
    assert not practice_verdict("15.2", l2)["passed"]


def test_counting_instead_of_predicting_is_refused():
    """Found in review: the forward half of 15.3 could be measured with the counter's class
    (bl.count was forbidden, Counter was not)."""
    source = """
from backprop_lab.instrument.counters import Counter
from backprop_lab.explore import transformer as tf

def predict_matmul_flops(B, T, d, hidden, vocab):
    model = tf.TinyTransformer(vocab=vocab, d=d, hidden=hidden, seed=0)
    tokens, targets = tf.copy_back_task(B, T, vocab, seed=0)
    with Counter() as c:
        model.loss(tokens, targets)
    forward = c.per_op["matmul"][1]
    return forward, 2 * forward
"""
    verdict = practice_verdict("15.3", answer_from_source(source, {"np": np}))
    assert not verdict["passed"]
    assert "backprop_lab.instrument.counters.Counter" in verdict["feedback"]


@pytest.mark.parametrize(("exercise", "make", "phrase"), PLANTED)
def test_planted_bug_is_diagnosed(exercise, make, phrase, tmp_path):
    answers = _answers(exercise, make())
    v = practice_verdict(exercise, *answers)
    assert not v["passed"]
    assert phrase in v["feedback"], v["feedback"]
    g = grading_verdict(exercise, *answers, folder=tmp_path)
    assert not g["passed"] and g["status"] == v["status"] and phrase in g["feedback"]
    if v["status"] != "too_slow":  # a cost verdict quotes a measured ratio, which varies
        assert g["diagnosis"] == v["diagnosis"]


def test_every_exercise_has_two_planted_bugs():
    for exercise in ("15.1", "15.2", "15.3"):
        assert sum(p[0] == exercise for p in PLANTED) >= 2


CHAPTERS_13_15 = ["13.1", "13.2", "13.3", "14.1", "14.2", "14.3", "15.1", "15.2", "15.3"]


def _walk(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _walk(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _walk(v)
    else:
        yield x


@pytest.mark.parametrize("exercise", CHAPTERS_13_15)
def test_payload_is_data_without_seed_or_expected_values(exercise):
    from backprop_lab.checks import oracle

    seed = 4242
    payload = oracle.payload(exercise, seed)
    leaves = list(_walk(payload))
    assert all(isinstance(x, (str, int, float, np.ndarray, type(None))) for x in leaves)
    assert seed not in [x for x in leaves if isinstance(x, int)]
    expected = [e for c in oracle.spec(exercise).build_cases(seed) for e in c.expected]
    arrays = [x for x in leaves if isinstance(x, np.ndarray) and x.dtype == np.float64]
    for e in expected:  # no expected output travels to the kernel
        assert not any(a.shape == e.shape and np.array_equal(a, e) for a in arrays if a.size > 1)


@pytest.mark.parametrize("exercise", CHAPTERS_13_15)
def test_forbidden_names_resolve_to_functions(exercise):
    from backprop_lab.checks import oracle
    from backprop_lab.checks.runner import _codes, _resolve

    names = oracle.forbidden(exercise)
    assert "backprop_lab.transforms.grad" in names
    for name in names:
        assert _codes(_resolve(name)), f"{name} resolves to no function"
