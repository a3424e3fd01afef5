"""The essay's worked examples, checked against the engine."""

from __future__ import annotations

import numpy as np
import pytest

import backprop_lab as bl


@pytest.mark.parametrize("w", [-1.3, 0.0, 0.5, 1.0, 2.2])
def test_chain_rule_sin_w_squared_cubed(w):
    """d/dw sin(w^2)^3 = 3 sin(w^2)^2 * cos(w^2) * 2w, factor by factor."""
    x = bl.tensor(w, requires_grad=True)
    loss = bl.sin(x**2) ** 3
    loss.backward()
    u = w**2
    expected = 3 * np.sin(u) ** 2 * np.cos(u) * 2 * w
    assert float(x.grad) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert bl.gradcheck(lambda t: bl.sin(t**2) ** 3, w).passed


def test_two_layer_network_hand_formulas():
    """z = W1 x + b1, h = sigma(z), y_hat = W2 h + b2, L = 1/2 ||y_hat - y||^2 (column form).

    The hand-derived deltas: delta2 = y_hat - y; dW2 = delta2 h^T; db2 = delta2;
    delta1 = (W2^T delta2) * sigma'(z); dW1 = delta1 x^T; db1 = delta1.
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1))
    y = rng.standard_normal((2, 1))
    W1, b1 = rng.standard_normal((4, 3)), rng.standard_normal((4, 1))
    W2, b2 = rng.standard_normal((2, 4)), rng.standard_normal((2, 1))

    z = W1 @ x + b1
    h = 1 / (1 + np.exp(-z))
    y_hat = W2 @ h + b2
    delta2 = y_hat - y
    dW2, db2 = delta2 @ h.T, delta2
    delta1 = (W2.T @ delta2) * h * (1 - h)
    dW1, db1 = delta1 @ x.T, delta1

    tW1, tb1, tW2, tb2 = (bl.tensor(a, requires_grad=True) for a in (W1, b1, W2, b2))
    tz = tW1 @ bl.tensor(x) + tb1
    th = bl.sigmoid(tz)
    ty = tW2 @ th + tb2
    diff = ty - bl.tensor(y)
    loss = 0.5 * (diff * diff).sum()
    loss.backward()
    for got, want in [(tW1, dW1), (tb1, db1), (tW2, dW2), (tb2, db2)]:
        assert got.grad.shape == want.shape
        np.testing.assert_allclose(got.grad, want, rtol=1e-12)


def test_softmax_cross_entropy_gradient_is_p_minus_y():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((6, 5))
    labels = rng.integers(0, 5, 6)
    t = bl.tensor(logits, requires_grad=True)
    bl.cross_entropy(t, labels).backward()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(5)[labels]
    np.testing.assert_allclose(t.grad, (p - onehot) / 6, rtol=1e-12, atol=1e-15)
    # The unfused route (log_softmax, pick, mean) gives the same gradient.
    t2 = bl.tensor(logits, requires_grad=True)
    (-(bl.log_softmax(t2) * bl.tensor(onehot)).sum(axis=1).mean()).backward()
    np.testing.assert_allclose(t2.grad, t.grad, rtol=1e-12, atol=1e-15)


def test_residual_block_jacobian_is_identity_plus_jf():
    """Essay correction: J = I + J_f, and its eigenvalues are 1 + eig(J_f) (can be 0)."""
    W = np.diag([-1.0, 0.5])  # J_f has eigenvalue -1 at x = 0 for f(x) = W x
    f = lambda x: x + bl.tensor(W) @ x  # noqa: E731
    J = np.asarray(bl.jacobian(f)(np.zeros(2)))
    np.testing.assert_allclose(J, np.eye(2) + W)
    assert np.min(np.abs(np.linalg.eigvals(J))) == pytest.approx(0.0)
