"""The one finite-difference helper: values, schemes, steps, in-place restore."""

import numpy as np
import pytest

from backprop_lab import numdiff as nd


def test_centered_gradient_matches_analytic():
    x = np.array([[1.0, 2.0], [3.0, -1.0]])
    g = nd.numerical_gradient(lambda a: np.sum(a**3), x)
    np.testing.assert_allclose(g, 3 * x**2, rtol=1e-9)


def test_forward_scheme_is_less_accurate_than_centered():
    f = np.sin
    c = abs(nd.derivative(f, 0.7) - np.cos(0.7))
    o = abs(nd.derivative(f, 0.7, scheme="forward") - np.cos(0.7))
    assert c < 1e-9 and 1e-10 < o < 1e-6 and c < o


def test_jacobian_layout_rows_are_outputs():
    A = np.arange(6.0).reshape(3, 2)
    J = nd.numerical_jacobian(lambda v: A @ v, np.array([0.5, -1.0]))
    assert J.shape == (3, 2)
    np.testing.assert_allclose(J, A, atol=1e-8)


def test_vjp_of_product_and_inputs_untouched():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    ga, gb = nd.numerical_vjp(lambda x, y: x * y, [a, b], np.array([1.0, -1.0, 2.0]))
    np.testing.assert_allclose(ga, b * [1, -1, 2], rtol=1e-9)
    np.testing.assert_allclose(gb, a * [1, -1, 2], rtol=1e-9)
    assert a.tolist() == [1.0, 2.0, 3.0]


def test_partials_restores_entry_when_value_raises():
    x = np.array([1.0, 2.0])
    calls = []

    def value():
        calls.append(x.copy())
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        nd.partials(value, x)
    assert x.tolist() == [1.0, 2.0]


def test_partials_refuses_arrays_it_cannot_nudge():
    x = np.array([1.0, 2.0])
    x.flags.writeable = False
    with pytest.raises(TypeError, match="writable"):
        nd.partials(lambda: 0.0, x)
    with pytest.raises(ValueError, match="scheme"):
        nd.partials(lambda: 0.0, np.zeros(2), scheme="sideways")


def test_default_step_scales_with_entry():
    assert nd.default_step(0.0) == pytest.approx(nd.EPS64 ** (1 / 3))
    assert nd.default_step(100.0) == pytest.approx(100 * nd.EPS64 ** (1 / 3))
    assert nd.default_step(1.0, "forward") == pytest.approx(nd.EPS64**0.5)
