"""backprop_lab.checks.legacy: the first-generation checks the grader's fixture still uses."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_lab.checks import legacy as checks
from backprop_lab.checks.legacy import (
    CheckFailure,
    check_backward,
    check_jacobian,
    check_value,
    diagnose,
    numerical_jacobian,
    numerical_vjp,
)
from backprop_lab.checks.seeding import LEGACY_SEED_ENV as SEED_ENV
from backprop_lab.checks.seeding import PUBLIC_SEED
from backprop_lab.checks.seeding import practice_seed as seed


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def sigmoid_backward(up, x):
    s = sig(x)
    return up * s * (1.0 - s)


def linear(x, w, b):
    return x @ w + b


def linear_backward(up, x, w, b):
    return up @ w.T, x.T @ up, up.sum(axis=0)


LIN = dict(
    forward=linear, input_shapes=[(4, 3), (3, 2), (2,)], names=["x", "w", "b"], exercise="9.2"
)


def failure(fn, **kw):
    with pytest.raises(CheckFailure) as info:
        check_backward(fn, **kw)
    return str(info.value)


def test_seed_public_and_secret(monkeypatch):
    monkeypatch.delenv(SEED_ENV, raising=False)
    assert seed() == PUBLIC_SEED
    monkeypatch.setenv(SEED_ENV, "17")
    assert seed() == 17


def test_numerical_oracles():
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)
    up = rng.normal(size=(4, 2))
    for got, want in zip(numerical_vjp(linear, [x, w, b], up), linear_backward(up, x, w, b)):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)
    v = rng.normal(size=3)
    np.testing.assert_allclose(
        numerical_jacobian(np.tanh, v), np.diag(1 - np.tanh(v) ** 2), atol=1e-9
    )


def test_pass_prints_deterministic_summary(capsys):
    assert check_backward(sigmoid_backward, sig, [(3, 4)], exercise="9.1") is None
    first = capsys.readouterr().out
    assert first.startswith("Exercise 9.1: sigmoid_backward\n")
    assert "OK: all 2 cases match finite differences." in first

    def other_formula(up, x):  # same values, different rounding
        e = np.exp(-x)
        return up * e / (1.0 + e) ** 2

    other_formula.__name__ = "sigmoid_backward"
    check_backward(other_formula, sig, [(3, 4)], exercise="9.1")
    assert capsys.readouterr().out == first


def test_secret_seed_changes_the_printout(capsys, monkeypatch):
    check_backward(sigmoid_backward, sig, [(3, 4)], exercise="9.1")
    public = capsys.readouterr().out
    monkeypatch.setenv(SEED_ENV, "123456")
    check_backward(sigmoid_backward, sig, [(3, 4)], exercise="9.1")
    assert capsys.readouterr().out != public


def test_student_prints_and_warnings_do_not_change_the_output(capsys):
    check_backward(sigmoid_backward, sig, [(3, 4)], exercise="9.1")
    clean = capsys.readouterr()

    def sigmoid_backward_noisy(up, x):
        print("debug", x.shape)
        np.log(-1.0)
        return sigmoid_backward(up, x)

    sigmoid_backward_noisy.__name__ = "sigmoid_backward"
    check_backward(sigmoid_backward_noisy, sig, [(3, 4)], exercise="9.1")
    noisy = capsys.readouterr()
    assert noisy.out == clean.out and noisy.err == clean.err


def test_summary_is_stable_near_zero():
    a = np.array([1.0, 1e-17, -2.0])
    b = np.array([1.0, -3e-17, -2.0])
    assert checks.summarize(a) == checks.summarize(b)
    assert "-0.0000" not in checks.summarize(np.array([-1e-20, 1.0]))


@pytest.mark.parametrize(
    "bad, words",
    [
        (lambda up, x, w, b: (-(up @ w.T), x.T @ up, up.sum(0)), "opposite sign"),
        (lambda up, x, w, b: (up @ w.T, (x.T @ up).T, up.sum(0)), "not transposed"),
        (lambda up, x, w, b: (up @ w.T, x.T @ up, up), "summed back"),
        (lambda up, x, w, b: (x @ w + b, x.T @ up, up.sum(0)), "forward value"),
        (lambda up, x, w, b: (up @ w.T, x.T @ up), "returned 2 gradients"),
        (lambda up, x, w, b: (None, x.T @ up, up.sum(0)), "returned None"),
        (lambda up, x, w, b: (up @ w.T * np.nan, x.T @ up, up.sum(0)), "NaN"),
    ],
)
def test_diagnoses_for_linear(bad, words):
    msg = failure(bad, **LIN)
    assert words in msg, msg
    assert msg.startswith("Exercise 9.2") and "expected" in msg


def test_diagnosis_missing_batch_factor():
    def mse(p, y):
        return np.sum((p - y) ** 2) / p.shape[0]

    def mse_backward(up, p, y):
        d = up * 2 * (p - y)  # forgot / batch
        return d, -d

    msg = failure(mse_backward, forward=mse, input_shapes=[(5, 3), (5, 3)], exercise="9.3")
    assert "batch size" in msg and "5 times too large" in msg


def test_a_constant_factor_is_stated_without_a_guess():
    """Half the gradient is reported as a factor; no cause (fan-out) is guessed (issue 12)."""
    msg = failure(
        lambda up, x: up * x, forward=lambda x: x * x, input_shapes=[(4,)], exercise="9.4"
    )
    assert "0.5" in msg and "fan-out" not in msg


def test_diagnosis_chain_rule_and_upstream():
    local = failure(
        lambda up, x: sig(x) * (1 - sig(x)), forward=sig, input_shapes=[(4,)], exercise="9.5"
    )
    assert "upstream" in local and "chain rule" in local
    passthrough = failure(lambda up, x: up, forward=sig, input_shapes=[(4,)], exercise="9.5")
    assert "upstream gradient unchanged" in passthrough


def test_not_implemented_and_exceptions():
    def todo(up, x):
        raise NotImplementedError("Exercise 9.6: implement todo")

    assert "not implemented yet" in failure(todo, forward=sig, input_shapes=[(2,)], exercise="9.6")
    assert "ZeroDivisionError" in failure(
        lambda up, x: 1 / 0, forward=sig, input_shapes=[(2,)], exercise="9.6"
    )


def test_check_failure_is_an_assertion_error():
    assert issubclass(CheckFailure, AssertionError)


def test_tensor_like_results_are_accepted(capsys):
    class T:  # duck-typed backprop_lab tensor
        def __init__(self, a):
            self.data, self.grad = a, None

    check_backward(lambda up, x: T(sigmoid_backward(up, x)), sig, [(2, 2)], exercise="9.7")
    assert "OK" in capsys.readouterr().out


def test_call_adapter_for_cache_style(capsys):
    def affine_backward(dout, cache):
        x, w, b = cache
        return linear_backward(dout, x, w, b)

    check_backward(affine_backward, call=lambda f, up, xs: f(up, tuple(xs)), **LIN)
    assert "OK" in capsys.readouterr().out


def test_check_value_and_jacobian(capsys):
    check_value(lambda x: np.maximum(x, 0), lambda x: x * (x > 0), [(2, 3)], exercise="9.8")
    check_jacobian(lambda x: np.diag(1 - np.tanh(x) ** 2), np.tanh, (3,), exercise="9.9")
    out = capsys.readouterr().out
    assert out.count("OK") == 2
    with pytest.raises(CheckFailure, match="sign error"):
        check_value(
            lambda x: -np.maximum(x, 0), lambda x: np.maximum(x, 0), [(2, 3)], exercise="9.8"
        )
    a = np.arange(1.0, 7.0).reshape(2, 3)
    with pytest.raises(CheckFailure, match="transposed"):
        check_jacobian(lambda x: a.T, lambda x: a @ x, (3,), exercise="9.9")


def test_diagnose_directly():
    e = np.arange(6.0).reshape(2, 3) + 1
    assert diagnose(None, e) == [
        "Your function returned None. Did you forget the `return` statement?"
    ]
    assert "opposite sign" in diagnose(-e, e)[0]
    assert "transposed" in " ".join(diagnose(e.T, e))
    assert diagnose(e, e) == []
