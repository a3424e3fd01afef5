"""backprop_lab.testing.check_op: the registry's property checks on one op, for notebooks."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import CASES, Const, shape_drawer

import backprop_lab as bl
from backprop_lab.ops import REGISTRY, register
from backprop_lab.testing import PROPERTIES, check_op


def cases_of(name):
    def make(rng):
        args, params = CASES[name](rng, shape_drawer(rng))
        args = tuple(a.value if isinstance(a, Const) else np.asarray(a, float) for a in args)
        return args, params

    return make


@pytest.mark.parametrize("name", ["mul", "tanh", "sum", "matmul", "cross_entropy", "where"])
def test_built_in_ops_pass(name):
    result = check_op(name, cases_of(name), examples=3)
    assert result.passed, str(result)
    assert {r.check for r in result.rows} == set(PROPERTIES)


def softplus_class(vjp_scale=1.0, jvp_scale=1.0):
    class softplus_chk:
        def forward(xp, x):
            return xp.log(1 + xp.exp(x)), (x,)

        def vjp(xp, g, saved, needs):
            return (vjp_scale * g / (1 + xp.exp(-saved[0])),)

        def jvp(xp, tangents, inputs, out):
            return jvp_scale * tangents[0] / (1 + xp.exp(-inputs[0]))

    return softplus_chk


def reg(cls):
    return register(formula="z", vjp_formula="z", jvp_formula="z", doc="softplus",
                    flops="elementwise")(cls)  # fmt: skip


@pytest.fixture
def cleanup():
    yield
    REGISTRY.pop("softplus_chk", None)


def test_a_correct_new_op_passes_and_reads_well(cleanup):
    op = reg(softplus_class())
    result = check_op(op, examples=4)
    assert result.passed and bool(result)
    text = str(result)
    assert "softplus_chk: all 3 properties hold on 4 random examples" in text
    assert "VJP vs finite differences" in text and "<table>" in result._repr_html_()


def test_a_wrong_vjp_is_caught(cleanup):
    reg(softplus_class(vjp_scale=1.001))
    result = check_op("softplus_chk", examples=2)
    failed = {r.check for r in result.failures()}
    assert failed == {"VJP vs finite differences", "JVP vs VJP", "forward vs reverse Jacobians"}
    assert "FAILED" in result.summary()


def test_a_wrong_jvp_is_caught(cleanup):
    reg(softplus_class(jvp_scale=0.5))
    result = check_op("softplus_chk", examples=2)
    failed = {r.check for r in result.failures()}
    assert failed == {"JVP vs VJP", "forward vs reverse Jacobians"}


def test_re_registering_in_a_loop_checks_the_latest_rules(cleanup):
    for scale in (2.0, 1.0):  # a notebook cell run twice, fixed in between
        reg(softplus_class(vjp_scale=scale, jvp_scale=scale))
    assert check_op("softplus_chk", examples=2).passed


def test_a_rule_that_raises_is_a_failing_row(cleanup):
    cls = softplus_class()
    cls.vjp = lambda xp, g, saved, needs: (g * saved[1],)  # IndexError inside the rule
    reg(cls)
    result = check_op("softplus_chk", examples=1)
    assert not result.passed
    assert any("IndexError" in r.detail for r in result.failures())


def test_unknown_name():
    with pytest.raises(KeyError, match="register it first"):
        check_op("no_such_op")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # log of negatives: the point
def test_positive_domain_for_log():
    assert check_op("log", domain=(0.5, 3.0), examples=2).passed
    assert not check_op(bl.REGISTRY["log"], domain=(-1.0, 1.0), examples=2).passed
