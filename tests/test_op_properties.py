"""Property tests over every registered op (Hypothesis picks shapes, values and params).

For each op, in float64 with random shapes including broadcasting:
- its VJP matches centered finite differences (relative error <= 1e-6);
- its JVP agrees with its VJP: u . (J v) == (u J) . v;
- the forward-mode and reverse-mode Jacobians agree.

The three checks are :mod:`backprop_lab.testing`'s, the same that ``check_op`` runs on one
op in a notebook.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from op_cases import CASES, Const, shape_drawer

import backprop_lab as bl
from backprop_lab import testing
from backprop_lab.ops import REGISTRY
from backprop_lab.tensor import apply

OPS = sorted(REGISTRY)
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


def test_every_op_is_complete():
    """Each registry entry has forward, VJP, JVP, formulas and a doc line, and a test case."""
    assert len(REGISTRY) >= 25
    for name, op in REGISTRY.items():
        assert op.name == name
        for rule in (op.forward, op.vjp, op.jvp):
            assert callable(rule), f"{name} lacks a rule"
        for text in (op.formula, op.vjp_formula, op.jvp_formula, op.doc):
            assert isinstance(text, str) and text.strip(), f"{name} lacks a formula or doc"
        assert name in CASES, f"op {name} has no property-test case in tests/op_cases.py"


def test_register_rejects_an_incomplete_op():
    from backprop_lab.ops import register

    with pytest.raises(TypeError, match="lacks jvp"):

        @register(formula="z", vjp_formula="z", jvp_formula="z", doc="d")
        class incomplete:
            def forward(xp, x):
                return x, ()

            def vjp(xp, g, saved, needs):
                return (g,)

    REGISTRY.pop("incomplete", None)


def _make(name, seed):
    rng = np.random.default_rng(seed)
    args, params = CASES[name](rng, shape_drawer(rng))
    args = tuple(a if isinstance(a, Const) else np.asarray(a, dtype=np.float64) for a in args)
    return rng, args, params


def _split(args):
    """Differentiable array inputs, and a function rebuilding the op's argument list."""
    diff = [a for a in args if not isinstance(a, Const)]

    def call(*xs):
        it = iter(xs)
        full = [a.value if isinstance(a, Const) else next(it) for a in args]
        return full

    return diff, call


def _f(name, args, params):
    diff, call = _split(args)

    def f(*xs):
        return apply(REGISTRY[name], *call(*xs), **params)

    return diff, f


def _args(args):
    return tuple(a.value if isinstance(a, Const) else a for a in args)


@pytest.mark.parametrize("name", OPS)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_vjp_matches_centered_differences(name, seed):
    _, args, params = _make(name, seed)
    ok, detail = testing.vjp_matches_differences(REGISTRY[name], _args(args), params, rtol=1e-6)
    assert ok, detail


def _numeric_vjp(f, diff, u, h=1e-6):
    """An independent finite-difference VJP: d/dx_i sum(u * f(x)), centered."""
    out = []
    for i, x in enumerate(diff):
        g = np.zeros_like(x)
        for idx in np.ndindex(*x.shape):
            vals = []
            for s in (h, -h):
                moved = [a.copy() for a in diff]
                moved[i][idx] += s
                y = f(*[bl.tensor(a) for a in moved]).data
                vals.append(float(np.sum(u * y)))
            g[idx] = (vals[0] - vals[1]) / (2 * h)
        out.append(g)
    return out


@pytest.mark.parametrize("name", OPS)
@settings(max_examples=6, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1))
def test_backward_matches_independent_differences(name, seed):
    """The same check without bl.gradcheck, so a bug there cannot hide a bug in an op."""
    rng, args, params = _make(name, seed)
    diff, f = _f(name, args, params)
    xs = [bl.tensor(a, requires_grad=True) for a in diff]
    y = f(*xs)
    u = rng.standard_normal(np.shape(y.data))
    y.backward(u)
    numeric = _numeric_vjp(f, diff, u)
    for x, n in zip(xs, numeric):
        a = np.asarray(x.grad)
        assert a.shape == n.shape
        np.testing.assert_allclose(a, n, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", OPS)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_jvp_agrees_with_vjp(name, seed):
    _, args, params = _make(name, seed)
    ok, detail = testing.jvp_matches_vjp(REGISTRY[name], _args(args), params, seed=seed)
    assert ok, detail


@pytest.mark.parametrize("name", OPS)
@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1))
def test_forward_and_reverse_jacobians_agree(name, seed):
    _, args, params = _make(name, seed)
    ok, detail = testing.jacobians_agree(REGISTRY[name], _args(args), params)
    assert ok, detail
