"""Chapter 10 (gradient checking): 10.1 a gradient check with a report, 10.2 finding the
wrong layer, 10.3 the backward rule of row normalisation.

10.1 and 10.2 are graded on facts fixed by construction: which functions carry a planted
bug, where, and how large it is; 10.3 on finite differences.
"""

from __future__ import annotations

import numpy as np

from backprop_lab import numdiff
from backprop_lab.checks.drivers.gradient_checking import PROBLEMS, l2_normalize, problem
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import (
    ENGINE_GRADIENTS,
    FINITE_DIFFERENCES,
    BackwardSpec,
    Bug,
    Cost,
    ValueSpec,
)
from backprop_lab.explore.gradient_checking import draw_inputs

# ------------------------------------------------------------------- 10.1 gradcheck report

#: (problem, bug factors): the planted bugs multiply the claimed gradient at random entries
_REPORT_CASES = [
    ("sin-product", ()),
    ("unused entries", ()),
    ("large scale", ()),
    ("sin-product", (0.99, 1.001, 1.3)),  # three wrong entries, the worst one last
    ("large scale", (1 + 8e-6,)),  # one entry wrong by a relative 4e-6
]


def _draw_report(rng, k):
    name, factors = _REPORT_CASES[k]
    x = rng.uniform(-2, 2, size=(3, 4))
    if name == "unused entries":
        x[:, :2] = rng.uniform(-1, 1, size=(3, 2))
    where = np.sort(rng.choice(x.size, size=len(factors), replace=False))
    if name == "sin-product":  # keep the bugs off entries whose gradient is nearly 0
        x.reshape(-1)[where] = rng.uniform(0.5, 1.5, size=len(factors))
    bugs = [(int(i), float(f)) for i, f in zip(where, factors)]
    return {"name": name, "x": x, "bugs": bugs}


def _report_reference(c):
    if not c.bugs:
        return 1.0, 1e-6, 0.0, -1.0, 0.0, 0.0
    _, grad = PROBLEMS[c.name]
    _, claimed = problem(c.name, c.bugs)
    rel = [abs(f - 1) / (abs(f) + 1) for _, f in c.bugs]  # |a - n| / (|a| + |n|), a = f n
    k = int(np.argmax(rel))
    worst = c.bugs[k][0]
    return (
        0.0,
        max(rel[k], 1e-6),
        float(len(c.bugs)),
        float(worst),
        float(claimed(c.x).reshape(-1)[worst]),
        float(grad(c.x).reshape(-1)[worst]),
    )


_OUT = ("passed", "max_rel_error", "n_failed", "worst", "analytic", "numeric")


def _max_denominator(c):
    """max_rel_error with |a - n| / max(|a|, |n|), a = f n, for the bugged cases."""
    if not c.bugs:
        return c.expected[1]
    rel = [abs(f - 1) / max(abs(f), 1.0) for _, f in c.bugs]
    return max(max(rel), 1e-6)


def _passed(got) -> float | None:
    p = got.get("passed")
    return None if p is None else float(p)


def _on_correct(rule):
    """Predicate from a rule about the verdicts on the correct cases (bugged cases: any)."""

    def holds(c, got):
        return True if c.bugs else bool(rule(c, _passed(got)))

    return holds


def _right_on(c, got, names=_OUT):
    return all(
        got.get(n) is not None and np.allclose(got[n], c.expected[_OUT.index(n)], rtol=1e-3)
        for n in names
    )


register(
    ValueSpec(
        id="10.1",
        title="gradcheck_report",
        inputs={"name": (), "x": (3, 4), "bugs": ()},
        outputs=_OUT,
        cases=len(_REPORT_CASES),
        draw=_draw_report,
        reference=_report_reference,
        driver="gradcheck_report",
        signature="gradcheck_report(f, grad, x)",
        rtol=1e-3,
        atol=1e-9,
        bugs=[
            Bug(
                "correct gradients fail",
                "Every correct gradient failed your check: your finite differences are not "
                "accurate enough for your threshold. Use centered differences with a step "
                "near 6e-6 * max(1, |x|) (Section 10.2).",
                predicate=_on_correct(lambda c, p: p == 0.0),
            ),
            Bug(
                "absolute error",
                "A correct gradient of a function a million times larger than the others "
                "failed your check: compare relative errors, |a - n| / (|a| + |n|), not "
                "absolute ones.",
                predicate=_on_correct(lambda c, p: p == float(c.name != "large scale")),
            ),
            Bug(
                "no floor for zeros",
                "On a correct gradient with entries that are exactly 0 your report fails or "
                "shows NaN: where both values are 0 the relative error is 0/0. Give the "
                "denominator a small floor, max(|a| + |n|, tiny).",
                predicate=lambda c, got: (
                    c.bugs
                    or (c.name == "unused entries")
                    != (_passed(got) == 1.0 and not np.isnan(got["max_rel_error"]))
                ),
            ),
            Bug(
                "threshold too loose",
                "Your check passed a gradient with one entry wrong by a relative 4e-6: a "
                "correct float64 backward pass checks to about 1e-7 or better, so a "
                "threshold near 1e-6 or below catches such bugs while passing right answers.",
                predicate=lambda c, got: (
                    _passed(got) == 1.0 if len(c.bugs) == 1 else _right_on(c, got, ("passed",))
                ),
            ),
            Bug(
                "analytic and numeric swapped",
                "Your report's analytic and numeric values are swapped: analytic is what grad "
                "returned, numeric your finite difference.",
                variant=lambda c: (None, None, None, None, c.expected[5], c.expected[4]),
                outputs=("analytic", "numeric"),
            ),
            Bug(
                "max in the denominator",
                "Your relative errors divide by max(|a|, |n|); Section 10.3's definition, which "
                "the report asks for, divides by |a| + |n| (with a small floor).",
                variant=lambda c: (None, _max_denominator(c), None, None, None, None),
                outputs=("max_rel_error",),
            ),
            Bug(
                "first instead of worst",
                "Your report counts the failures right but points at another entry than the "
                "one with the largest relative error: report the worst entry.",
                predicate=lambda c, got: (
                    len(c.bugs) < 2
                    or (
                        _right_on(c, got, ("passed", "n_failed"))
                        and not _right_on(c, got, ("worst",))
                    )
                ),
            ),
            Bug(  # last: the wrong outputs all come from correct gradients that failed
                "a correct gradient fails",
                "A correct gradient failed your check: your finite differences are not "
                "accurate enough for your threshold on that function. Use centered "
                "differences (one-sided ones are accurate to about 1e-8 at best) with a step "
                "near 6e-6 * max(1, |x|), and a threshold that a correct float64 check meets "
                "(Sections 10.2 and 10.3).",
                predicate=lambda c, got: (not c.bugs) or _right_on(c, got, ("passed",)),
                outputs=("passed",),  # wrong, and right on every bugged case
            ),
        ],
        forbidden=ENGINE_GRADIENTS
        + FINITE_DIFFERENCES
        + ("backprop_lab.explore.gradient_checking.relative_errors",),
    )
)

# ------------------------------------------------------------------------ 10.2 find wrong

#: the triples of layers: kinds, and which (layer, variant) is the wrong one, and a scale
_TRIPLES = [
    (("softplus", "safe log", "attention scores"), (1, "0-epsilon"), 1.0),
    (("silu", "affine tanh", "log cosh"), (1, "1-no-slope"), 1.0),
    # large inputs: only layers whose gradients do not saturate to nearly 0 there
    (("attention scores", "log cosh", "safe log"), (0, "1-scale"), 100.0),
    (("log cosh", "silu", "affine tanh"), (2, "0-no-transpose"), 1.0),
    (("softplus", "attention scores", "silu"), (0, "0-sign"), 1e-3),
]


def _draw_triple(rng, k):
    kinds, (bad, variant), scale = _TRIPLES[k]
    specs = []
    for i, kind in enumerate(kinds):
        inputs = draw_inputs(kind, rng, scale if kind != "affine tanh" else 1.0)
        specs.append((kind, variant if i == bad else "ok", inputs))
    return {"layers": specs, "bad": bad, "input": int(variant[0]), "scale": scale,
            "subtle": variant == "0-epsilon"}  # fmt: skip


def _pair_right(c, got):
    return (
        got.get("layer") is not None
        and float(got["layer"]) == c.bad
        and float(got["input"]) == c.input
    )


register(
    ValueSpec(
        id="10.2",
        title="find_wrong",
        inputs={"layers": ()},
        outputs=("layer", "input"),
        cases=len(_TRIPLES),
        draw=_draw_triple,
        reference=lambda c: (float(c.bad), float(c.input)),
        driver="find_wrong",
        rtol=0.0,
        atol=1e-12,
        bugs=[
            Bug(
                "first input only",
                "On layers whose wrong gradient belongs to another input than the first, you "
                "name input 0: compare the gradient of every input of every layer.",
                predicate=lambda c, got: (
                    _pair_right(c, got)
                    if c.input == 0
                    else got.get("input") is not None and float(got["input"]) == 0.0
                ),
            ),
            Bug(
                "pair swapped",
                "Your pair is (input, layer); the exercise asks for (layer_index, input_index).",
                variant=lambda c: (float(c.input), float(c.bad)),
            ),
            Bug(
                "counted from 1",
                "Your indices are one too large: count layers and inputs from 0, as Python "
                "lists do.",
                variant=lambda c: (float(c.bad + 1), float(c.input + 1)),
            ),
            Bug(
                "subtle bug missed",
                "You miss a wrong gradient that is off by a few parts in a million: at the "
                "default step, a correct rule checks to about 1e-9 here, so a threshold "
                "of about 1e-6 (or picking the largest relative error) finds it.",
                predicate=lambda c, got: (
                    (not _pair_right(c, got)) if c.subtle else _pair_right(c, got)
                ),
            ),
        ],
    )
)

# --------------------------------------------------------------------- 10.3 l2 normalize


def _l2_direct(c):
    norm = np.sqrt(np.sum(c.x * c.x, axis=1, keepdims=True))
    return numdiff.numerical_vjp(lambda x: x / norm, [c.x], c.upstream)[0]


def _y(c):
    return c.x / np.sqrt(np.sum(c.x * c.x, axis=1, keepdims=True))


def _l2_columns(c):
    def forward(x):
        return x / np.sqrt(np.sum(x * x, axis=0, keepdims=True))

    return numdiff.numerical_vjp(forward, [c.x], c.upstream)[0]


register(
    BackwardSpec(
        id="10.3",
        title="l2_normalize_backward",
        forward=l2_normalize,
        inputs={"x": (4, 5)},
        outputs=("dx",),
        cases=3,
        draw=lambda rng, k: {"x": rng.uniform(-2, 2, size=[(4, 5), (3, 2), (2, 6)][k % 3])},
        bugs=[
            Bug(
                "norm path missing",
                "dx is upstream / ||x|| alone: the norm depends on x too. Scaling x does not "
                "change y, so dx must be orthogonal to x in every row; remove the component "
                "of upstream along y.",
                variant=lambda c: _l2_direct(c),
            ),
            Bug(
                "norm over the wrong axis",
                "Your rule normalises over the batch axis (the columns); every row is divided "
                "by its own norm (axis=1).",
                variant=lambda c: _l2_columns(c),
            ),
            Bug(
                "not divided by the norm",
                "Your dx is the right one times ||x|| in each row: after removing the component "
                "along y, divide by the norm.",
                variant=lambda c: c.expected[0] * np.sqrt(np.sum(c.x * c.x, axis=1, keepdims=True)),
            ),
            Bug(
                "component added",
                "Your rule adds the component of upstream along y where it must remove it: "
                "a change of x along y changes only the length, which y does not see.",
                variant=lambda c: 2 * _l2_direct(c) - c.expected[0],
            ),
            Bug(
                "projection not divided by the norm",
                "The term along y is not divided by the norm: the whole bracket, upstream "
                "minus its component along y, is divided by ||x|| (with x written out, that "
                "term carries ||x||**3).",
                variant=lambda c: (
                    _l2_direct(c) - np.sum(c.upstream * _y(c), axis=1, keepdims=True) * _y(c)
                ),
            ),
            Bug(
                "times the norm",
                "Your dx is the right one times ||x||**2 in each row: the rule divides by the "
                "norm once.",
                variant=lambda c: c.expected[0] * np.sum(c.x * c.x, axis=1, keepdims=True),
            ),
        ],
        cost=Cost(multiple=40, inputs={"x": (2048, 512)}),
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES,
    )
)
