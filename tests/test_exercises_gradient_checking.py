"""Planted bugs of chapter 10's exercises: each wrong answer must get its own diagnosis, in
practice mode and through the grading path."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_lab import numdiff
from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

# a report built on one comparison rule; the planted bugs change one of its pieces
REPORT = """
def gradcheck_report(f, grad, x):
    x = np.array(x, dtype=np.float64)
    a = np.asarray(grad(x.copy()), dtype=np.float64)
    n = np.zeros_like(x)
    for i in range(x.size):
        old = x.flat[i]
        h = STEP * max(1.0, abs(old))
        x.flat[i] = old + h
        up = f(x)
        x.flat[i] = old - h
        down = f(x)
        x.flat[i] = old
        n.flat[i] = (up - down) / (2 * h)
    err = ERROR
    bad = err > THRESHOLD
    worst = WORST
    return {"passed": not bad.any(), "max_rel_error": float(err.flat[worst]),
            "worst_index": np.unravel_index(worst, x.shape), "analytic": float(a.flat[worst]),
            "numeric": float(n.flat[worst]), "n_failed": int(bad.sum())}
"""
GOOD = {
    "STEP": "6e-6",
    "ERROR": "np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), 1e-12)",
    "THRESHOLD": "1e-7",
    "WORST": "int(np.argmax(err))",
}


def report(**changes):
    source = REPORT
    for key, value in {**GOOD, **changes}.items():
        source = source.replace(key, value)
    return source


FIND = """
def find_wrong(layers):
    rng = np.random.default_rng(0)
    best = (-1.0, None)
    for i, layer in enumerate(layers):
        out = np.asarray(layer.forward(*layer.inputs))
        u = rng.normal(size=out.shape)
        claimed = layer.backward(u, *layer.inputs)
        numeric = numdiff.numerical_vjp(layer.forward, layer.inputs, u)
        for j, (a, n) in enumerate(zip(claimed, numeric)):
            if j not in INPUTS:
                continue
            err = ERROR
            if err > best[0]:
                best = (err, (i, j))
    return best[1]
"""
FIND_GOOD = {
    "INPUTS": "range(9)",
    "ERROR": "float(np.max(np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), 1e-12)))",
}


def find(**changes):
    source = FIND
    for key, value in {**FIND_GOOD, **changes}.items():
        source = source.replace(key, value)
    return source


RIGHT = {
    "10.1": report(),
    "10.2": find(),
    "10.3": """
def l2_normalize_backward(upstream, x):
    norm = np.sqrt((x * x).sum(axis=1, keepdims=True))
    y = x / norm
    return (upstream - (upstream * y).sum(axis=1, keepdims=True) * y) / norm
""",
}

PLANTED = [
    ("10.1", report(ERROR="np.abs(a - n)"), "compare relative errors"),
    ("10.1", report(ERROR="np.abs(a - n) / (np.abs(a) + np.abs(n))"), "0/0"),
    ("10.1", report(THRESHOLD="1e-4"), "threshold near 1e-6"),
    (
        "10.1",
        report(WORST="int(np.flatnonzero(bad)[0]) if bad.any() else 0"),
        "largest relative error",
    ),
    ("10.1", report(STEP="1e-2"), "not accurate enough"),
    (
        "10.1",
        report()
        .replace("    x = np.array(x, dtype=np.float64)\n", "")
        .replace("        x.flat[i] = old\n", ""),
        "changed its input",
    ),
    ("10.2", find(INPUTS="(0,)"), "compare the gradient of every input"),
    (
        "10.2",
        find(ERROR="float(np.max(np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), 1e-12)))")
        .replace("            if err > best[0]:", "            if err > 1e-3 and best[1] is None:")
        .replace("    return best[1]", "    return best[1] or (0, 0)"),
        "few parts in a million",
    ),
    (
        "10.3",
        """
def l2_normalize_backward(upstream, x):
    return upstream / np.sqrt((x * x).sum(axis=1, keepdims=True))
""",
        "remove the component",
    ),
    (
        "10.3",
        """
def l2_normalize_backward(upstream, x):
    norm = np.sqrt((x * x).sum(axis=0, keepdims=True))
    y = x / norm
    return (upstream - (upstream * y).sum(axis=0, keepdims=True) * y) / norm
""",
        "batch axis",
    ),
]

# found in review
PLANTED += [
    (
        "10.1",
        report(STEP="1.5e-8")
        .replace("x.flat[i] = old - h\n        down = f(x)", "x.flat[i] = old\n        down = f(x)")
        .replace("(up - down) / (2 * h)", "(up - down) / h"),
        "A correct gradient failed your check",
    ),
    (
        "10.1",
        report()
        .replace('"analytic": float(a.flat[worst])', '"analytic": float(n.flat[worst])')
        .replace('"numeric": float(n.flat[worst])', '"numeric": float(a.flat[worst])'),
        "analytic and numeric values are swapped",
    ),
    (
        "10.1",
        report(ERROR="np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), 1e-12)"),
        "divide by max(|a|, |n|)",
    ),
    ("10.2", find().replace("best = (err, (i, j))", "best = (err, (j, i))"), "(input, layer)"),
    (
        "10.2",
        find().replace("best = (err, (i, j))", "best = (err, (i + 1, j + 1))"),
        "count layers and inputs from 0",
    ),
    (
        "10.2",
        """
from backprop_lab.explore import gradient_checking as checking

def find_wrong(layers):          # recognises the planted rule instead of checking it
    for i, layer in enumerate(layers):
        inner = [c.cell_contents for c in layer.backward.__closure__ or ()]
        for variant, rule in checking._POOL[layer.name][1].items():
            if variant != "ok" and any(rule is g for g in inner):
                return i, int(variant[0])
    return 0, 0
""",
        "that is not a gradient check",
    ),
    (
        "10.3",
        RIGHT["10.3"].replace("* y) / norm", "* y)"),
        "times ||x|| in each row",
    ),
    (
        "10.3",
        RIGHT["10.3"].replace("(upstream - (upstream", "(upstream + (upstream"),
        "adds the component of upstream along y",
    ),
    (
        "10.3",
        """
def l2_normalize_backward(upstream, x):
    norm = np.sqrt((x * x).sum(axis=1, keepdims=True))
    return upstream / norm - x * (upstream * x).sum(axis=1, keepdims=True) / norm**2
""",
        "The term along y is not divided by the norm",
    ),
]


def test_a_flat_worst_index_is_accepted(tmp_path):
    """Found in review: returning np.argmax's flat position was diagnosed as pointing at
    another entry; a flat position is unambiguous and now counts as the index."""
    source = report(WORST="int(np.argmax(err))").replace(
        '"worst_index": np.unravel_index(worst, x.shape)', '"worst_index": worst'
    )
    answer = answer_from_source(source, {"np": np})
    assert practice_verdict("10.1", answer)["passed"]


@pytest.mark.parametrize("exercise", sorted(RIGHT))
def test_right_answers_pass(exercise, tmp_path):
    answer = answer_from_source(RIGHT[exercise], {"np": np, "numdiff": numdiff})
    assert practice_verdict(exercise, answer)["passed"]
    assert grading_verdict(exercise, answer, folder=tmp_path)["passed"]


@pytest.mark.parametrize("exercise,source,phrase", PLANTED)
def test_planted_bug_is_diagnosed(exercise, source, phrase, tmp_path):
    answer = answer_from_source(source, {"np": np, "numdiff": numdiff})
    practice = practice_verdict(exercise, answer)
    assert not practice["passed"]
    assert phrase in practice["feedback"], practice["feedback"]
    graded = grading_verdict(exercise, answer, folder=tmp_path)
    assert not graded["passed"] and phrase in graded["feedback"]


def test_every_exercise_has_two_planted_bugs():
    counts = {e: sum(1 for p in PLANTED if p[0] == e) for e in RIGHT}
    assert all(n >= 2 for n in counts.values()), counts
