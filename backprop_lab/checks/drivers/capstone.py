"""Chapter 15's exercises: the driver of the new op's rules, and the forward passes."""

from __future__ import annotations

import numpy as np

from backprop_lab.backend import namespace_of
from backprop_lab.checks.drivers import driver, forward_pass


@forward_pass
def cosine_rows(a, b):
    """Exercise 15.2: the cosine similarity of each row of ``a`` with the same row of ``b``."""
    dots = np.sum(a * b, axis=1)
    return dots / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _formulas_ok(formulas) -> float:
    keys = ("formula", "vjp_formula", "jvp_formula")
    if not isinstance(formulas, dict):
        return 0.0
    return float(all(isinstance(formulas.get(k), str) and formulas[k].strip() for k in keys))


@driver("op_rules")
def call_op_rules(answers, args):
    """Exercise 15.1: run ``forward``, ``vjp`` (both inputs, then each alone) and ``jvp``
    (both tangents, then each alone) of the student's op, and check its formulas' form.

    Returns ``(y, gx, gw, gx_alone, gw_alone, ty, ty_x, ty_w, formulas)``; an input the
    VJP was not asked for counts as a zero array if the rule returns None there.
    """
    forward, vjp, jvp, formulas = answers
    x, w, g, tx, tw = args
    xp = namespace_of(x)
    y, saved = forward(xp, x, w)
    gx, gw = vjp(xp, g, saved, (True, True))
    gx_alone = vjp(xp, g, saved, (True, False))[0]
    gw_alone = vjp(xp, g, saved, (False, True))[1]
    ty = jvp(xp, (tx, tw), (x, w), y)
    ty_x = jvp(xp, (tx, None), (x, w), y)
    ty_w = jvp(xp, (None, tw), (x, w), y)
    return y, gx, gw, gx_alone, gw_alone, ty, ty_x, ty_w, np.array(_formulas_ok(formulas()))
