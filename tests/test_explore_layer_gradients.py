"""Helpers of Chapter 8 (backprop_lab.explore.layer_gradients)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab.explore import layer_gradients as lg


def test_weight_jacobian_is_x_times_delta_and_contracts_to_xt_dy():
    rng = np.random.default_rng(0)
    X, W, dY = rng.normal(size=(3, 2)), rng.normal(size=(2, 5)), rng.normal(size=(3, 5))
    J = lg.linear_weight_jacobian(X, W)
    assert J.shape == (3, 5, 2, 5)
    np.testing.assert_allclose(J, np.einsum("bi,jk->bjik", X, np.eye(5)))
    np.testing.assert_allclose(np.einsum("bj,bjik->ik", dY, J), X.T @ dY)


def test_jacobian_storage_counts():
    s = lg.jacobian_storage(batch=4, n_in=3, n_out=5)
    assert s["entries"] == 4 * 5 * 3 * 5 and s["bytes"] == 8 * s["entries"]
    assert s["contraction_mults"] // s["matmul_mults"] == 5
    assert s["nonzero_fraction"] == pytest.approx(1 / 5)


@pytest.mark.parametrize("axis", [0, -1])
def test_normalise_standardises_and_its_gradient_is_centred_along_the_axis(axis):
    rng = np.random.default_rng(1)
    X = rng.normal(loc=3.0, scale=2.0, size=(7, 5))
    out = np.asarray(lg.normalise(bl.tensor(X), axis=axis).data)
    np.testing.assert_allclose(out.mean(axis=axis), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=axis), 1.0, rtol=1e-4)
    g = bl.grad(lambda x: bl.sum(lg.normalise(x, axis=axis) * rng.normal(size=(7, 5))))(X)
    np.testing.assert_allclose(np.asarray(g).mean(axis=axis), 0.0, atol=1e-12)


def test_stable_cross_entropy_is_right_for_huge_logits_and_naive_is_not():
    logits = np.array([1000.0, 500.0, -300.0])
    loss, grad = lg.softmax_cross_entropy(logits, 2, "log-sum-exp")
    assert float(loss) == pytest.approx(1300.0)
    np.testing.assert_allclose(grad, [1.0, 0.0, -1.0], atol=1e-12)
    loss, grad = lg.softmax_cross_entropy(logits, 2, "naive")
    assert not np.isfinite(loss) and np.isnan(grad).all()


def test_naive_cross_entropy_gradient_fails_silently_in_float32():
    # the loss is right but the backward rule of the division overflows (the chapter's claim)
    loss, grad = lg.softmax_cross_entropy([60.0, 30.0, -18.0, -60.0], 2, "naive", "float32")
    assert float(loss) == pytest.approx(78.0, rel=1e-5)
    assert np.isfinite(grad).all() and grad[0] == 0.0


def test_cross_entropy_methods_agree_on_ordinary_logits():
    z = np.array([0.3, -1.2, 2.0, 0.1])
    a = lg.softmax_cross_entropy(z, 1, "naive")
    b = lg.softmax_cross_entropy(z, 1, "log-sum-exp")
    assert float(a[0]) == pytest.approx(float(b[0]))
    np.testing.assert_allclose(a[1], b[1], atol=1e-12)
    with pytest.raises(ValueError, match="method"):
        lg.softmax_cross_entropy(z, 1, "other")


def test_overflow_thresholds():
    assert lg.overflow_threshold("float16") == pytest.approx(11.09, abs=0.01)
    assert lg.overflow_threshold("float64") == pytest.approx(709.78, abs=0.01)


@pytest.mark.parametrize(
    "values", [(1, "float64", "naive"), (8, "float16", "naive"), (1000, "float16", "log-sum-exp")]
)
def test_render_overflow_draws(values):
    scale, dtype, method = values
    fig = lg.render_overflow(scale, dtype, method)
    assert fig.axes and fig.axes[0].get_title()
    matplotlib.pyplot.close(fig)


def test_overflow_explorer_fits_the_budget():
    ex = lg.overflow_explorer()
    assert ex.n_views <= 40 and ex.value == {"scale": 60, "dtype": "float32", "method": "naive"}
