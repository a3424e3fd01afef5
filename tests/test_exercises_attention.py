"""Exercises of Chapter 13 (attention): the instructor's answers pass, and each planted bug
gets the diagnosis that names it, in practice mode and through the grading path."""

from __future__ import annotations

import numpy as np
import pytest
from _chapter_solutions import answer_source

from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

NOTEBOOK = "13-attention.ipynb"
FUNCTIONS = {"13.1": "attention_backward", "13.2": "attention_backward_lse",
             "13.3": "temperature_gradient"}  # fmt: skip


def _solution(exercise):
    return answer_from_source(answer_source(NOTEBOOK, exercise), {"np": np})


@pytest.mark.parametrize("exercise", sorted(FUNCTIONS))
def test_instructor_answer_passes(exercise, tmp_path):
    answer = _solution(exercise)
    v = practice_verdict(exercise, answer)
    assert v["passed"], v["feedback"]
    g = grading_verdict(exercise, answer, folder=tmp_path)
    assert g["passed"], g["feedback"]


_BWD = """
def attention_backward(upstream, Q, K, V, causal):
    d = Q.shape[1]
    S = Q @ K.T / np.sqrt(d)
    if causal{mask_cond}:
        S = np.where(np.tril(np.ones(S.shape, dtype=bool)), S, -np.inf)
    P = np.exp(S - S.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    dV = {dV}
    dP = upstream @ V.T
    dS = {dS}
    dQ = dS @ K {scale}
    dK = {dK} {scale}
    return dQ, dK, dV
"""
_RIGHT = dict(mask_cond="", dV="P.T @ upstream", dS="P * (dP - np.sum(dP * P, axis=1, "
              "keepdims=True))", dK="dS.T @ Q", scale="/ np.sqrt(d)")  # fmt: skip


def _bwd(**changes):
    return _BWD.format(**{**_RIGHT, **changes})


_JACOBIAN_LOOP = """
def attention_backward(upstream, Q, K, V, causal):
    d = Q.shape[1]
    S = Q @ K.T / np.sqrt(d)
    if causal:
        S = np.where(np.tril(np.ones(S.shape, dtype=bool)), S, -np.inf)
    P = np.exp(S - S.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    dP = upstream @ V.T
    dS = np.zeros_like(P)
    for i in range(P.shape[0]):
        J = np.diag(P[i]) - np.outer(P[i], P[i])
        dS[i] = dP[i] @ J
    return dS @ K / np.sqrt(d), dS.T @ Q / np.sqrt(d), P.T @ upstream
"""

_LSE = """
def attention_backward_lse(upstream, Q, K, V, O, lse, block):
    T, d = Q.shape
    scale = 1.0 / np.sqrt(d)
    D = {D}
    dQ = np.zeros_like(Q)
    dK = np.zeros_like(K)
    dV = np.zeros_like(V)
    for start in range(0, {stop}, block):
        rows = slice(start, start + block)
        P = np.exp(Q[rows] @ K.T * scale - {lse})
        dV += P.T @ upstream[rows]
        dS = P * (upstream[rows] @ V.T - D[rows])
        dQ[rows] = dS @ K * {s}
        dK += dS.T @ Q[rows] * {s}
    return dQ, dK, dV
"""
_LSE_RIGHT = dict(D="np.sum(upstream * O, axis=1, keepdims=True)", stop="T", s="scale",
                  lse="lse[rows]")  # fmt: skip


def _lse(**changes):
    return _LSE.format(**{**_LSE_RIGHT, **changes})


_LSE_FULL = """
def attention_backward_lse(upstream, Q, K, V, O, lse, block):
    d = Q.shape[1]
    P = np.exp(Q @ K.T / np.sqrt(d) - lse)
    dV = P.T @ upstream
    dP = upstream @ V.T
    dS = P * (dP - np.sum(dP * P, axis=1, keepdims=True))
    return dS @ K / np.sqrt(d), dS.T @ Q / np.sqrt(d), dV
"""

_TAU = """
def temperature_gradient(upstream, Q, K, V, tau):
    R = Q @ K.T
    P = np.exp(tau * R - (tau * R).max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    dP = upstream @ V.T
    dS = {dS}
    return float({total})
"""
_TAU_RIGHT = dict(dS="P * (dP - np.sum(dP * P, axis=1, keepdims=True))", total="np.sum(dS * R)")


def _tau(**changes):
    return _TAU.format(**{**_TAU_RIGHT, **changes})


PLANTED = [
    ("13.1", _bwd(dS="P * dP"), "row-sum term"),
    ("13.1", _bwd(scale=""), "sqrt(d) times the right value"),
    ("13.1", _bwd(scale="/ d"), "applied once, not twice"),
    ("13.1", _bwd(mask_cond=" and False"), "mask"),
    ("13.1", _bwd(dV="P @ upstream"), "P.T @ upstream"),
    ("13.1", _bwd(dK="dS @ Q"), "dS.T @ Q"),
    ("13.1", _JACOBIAN_LOOP, "times as long as one forward pass"),
    ("13.2", _LSE_FULL, "quarter of one T x T"),
    ("13.2", _lse(D="0.0 * O[:, :1]"), "row-sum term"),
    ("13.2", _lse(s="1.0"), "sqrt(d) times the right value"),
    ("13.2", _lse(lse="0.0"), "without subtracting lse"),
    ("13.2", _lse(stop="T // block * block"), "last query rows are missing"),
    ("13.3", _tau(dS="P * dP"), "row-sum term"),
    ("13.3", _tau(total="np.sum(dS * tau * R)"), "tau times the right value"),
    ("13.3", _tau(total="np.trace(dS * R)"), "diagonal"),
    # found in review: three wrong causal masks, dK assigned per block, an unexplained tau
    ("13.1", _bwd().replace("S, -np.inf)", "S, 0.0)"), "were set to 0, not -inf"),
    (
        "13.1",
        _bwd()
        .replace("        S = np.where(np.tril(np.ones(S.shape, dtype=bool)), S, -np.inf)\n", "")
        .replace("    if causal:\n", "")
        .replace(
            "P /= P.sum(axis=1, keepdims=True)\n",
            "P /= P.sum(axis=1, keepdims=True)\n    if causal:\n"
            "        P = P * np.tril(np.ones(P.shape))\n",
        ),
        "multiplied by the mask after the softmax",
    ),
    ("13.1", _bwd().replace("np.tril(", "np.triu("), "hides the keys before each query"),
    ("13.2", _lse().replace("dK += dS.T", "dK = dS.T"), "holds the last block's contribution"),
    ("13.3", _tau(total="np.sum(dS * R) / tau"), "No single slip explains your numbers"),
]


@pytest.mark.parametrize(("exercise", "source", "phrase"), PLANTED)
def test_planted_bug_is_diagnosed(exercise, source, phrase, tmp_path):
    answer = answer_from_source(source, {"np": np})
    v = practice_verdict(exercise, answer)
    assert not v["passed"]
    assert phrase in v["feedback"], v["feedback"]
    g = grading_verdict(exercise, answer, folder=tmp_path)
    assert not g["passed"] and g["status"] == v["status"] and phrase in g["feedback"]
    if v["status"] != "too_slow":  # a cost verdict quotes a measured ratio, which varies
        assert g["diagnosis"] == v["diagnosis"]


def test_every_exercise_has_two_planted_bugs():
    for exercise in FUNCTIONS:
        assert sum(p[0] == exercise for p in PLANTED) >= 2
