"""Helpers of chapters 4 and 5 (backprop_lab.explore.ch04, ch05)."""

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab.checks import numerical_vjp
from backprop_lab.explore import ch04, ch05

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def _params(rng, d=3, m=5, k=2):
    return [
        rng.normal(size=(d, m)),
        rng.normal(size=m),
        rng.normal(size=(m, k)),
        rng.normal(size=k),
    ]


def test_two_layer_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 3))
    params = _params(rng)
    Yhat, cache = ch04.two_layer_forward(X, *params)
    up = rng.normal(size=Yhat.shape)
    got = ch04.two_layer_backward(up, cache)
    expected = numerical_vjp(lambda *a: ch04.two_layer_forward(*a)[0], [X, *params], up)
    assert len(got) == 5
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-8)


def test_two_layer_backward_matches_engine():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    params = _params(rng)
    Yhat, cache = ch04.two_layer_forward(X, *params)
    L, dYhat = ch04.squared_loss(Yhat, Y)
    ts = [bl.tensor(p, requires_grad=True) for p in params]
    out = bl.sigmoid(bl.tensor(X) @ ts[0] + ts[1]) @ ts[2] + ts[3]
    loss = bl.sum((out - Y) ** 2) / 6
    loss.backward()
    assert np.isclose(L, float(loss.data))
    for g, t in zip(ch04.two_layer_backward(dYhat, cache)[1:], ts):
        np.testing.assert_allclose(g, t.grad, rtol=1e-10, atol=1e-12)


def test_squared_loss_gradient():
    rng = np.random.default_rng(2)
    Yhat, Y = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    L, d = ch04.squared_loss(Yhat, Y)
    assert np.isclose(L, np.sum((Yhat - Y) ** 2) / 5)
    (e,) = numerical_vjp(lambda a: np.sum((a - Y) ** 2) / 5, [Yhat], np.array(1.0))
    np.testing.assert_allclose(d, e, rtol=1e-6)


def test_init_params_shapes_and_seed():
    a = ch04.init_params(64, 8, 10, seed=3)
    b = ch04.init_params(64, 8, 10, seed=3)
    assert [p.shape for p in a] == [(64, 8), (8,), (8, 10), (10,)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not a[1].any() and not a[3].any()


def test_replay_rows_confirm_upstream_times_local():
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(2, 3)), rng.normal(size=(2, 2))
    params = _params(rng)
    with bl.trace() as tr:
        ts = [bl.tensor(p, requires_grad=True) for p in params]
        out = bl.sigmoid(bl.tensor(X) @ ts[0] + ts[1]) @ ts[2] + ts[3]
        (bl.sum((out - Y) ** 2) / 2).backward()
    rows = ch04.replay_rows(tr)
    ops = [r[0].split()[0] for r in rows]
    assert {"matmul", "sigmoid", "add"} <= set(ops)
    assert all(r[4] < 1e-12 for r in rows)


def test_train_digits_learns_and_records_history():
    digits = bl.data.load_digits()
    Xtr, Xte, ytr, yte = bl.data.train_test_split(digits.X[:600], digits.y[:600], 0.25, seed=0)
    h = ch04.train_digits(Xtr, ytr, Xte, yte, hidden=16, lr=0.05, epochs=4, live=False)
    assert h.epoch == [1, 2, 3, 4]
    assert len(h.train_loss) == len(h.test_acc) == 4
    assert h.train_loss[-1] < h.train_loss[0]
    assert [p.shape for p in h.params] == [(64, 16), (16,), (16, 10), (10,)]
    fig = ch04.plot_history(h)
    assert len(fig.axes) == 2


def test_train_digits_uses_the_given_backward():
    digits = bl.data.load_digits()
    X, y = digits.X[:100], digits.y[:100]
    calls = []

    def spy(dout, cache):
        calls.append(dout.shape)
        return ch04.two_layer_backward(dout, cache)

    ch04.train_digits(X, y, X, y, hidden=4, epochs=1, batch=50, live=False, backward=spy)
    assert calls == [(50, 10), (50, 10)]


def test_outer_product_explorer_builds():
    pytest.importorskip("ipywidgets")
    rng = np.random.default_rng(5)
    box = ch04.outer_product_explorer(rng.normal(size=(4, 64)), rng.normal(size=(4, 3)))
    assert len(box.children) == 2


@pytest.mark.parametrize("gate", ["add", "multiply", "max", "sigmoid"])
def test_gate_rules_match_engine(gate):
    ops = {
        "add": lambda a, b: a + b,
        "multiply": lambda a, b: a * b,
        "max": bl.maximum,
        "sigmoid": lambda a, b: bl.sigmoid(a),
    }
    rng = np.random.default_rng(6)
    for _ in range(5):
        x0, y0, g = (float(v) for v in rng.uniform(-3, 3, size=3))
        x, y = bl.tensor(x0, requires_grad=True), bl.tensor(y0, requires_grad=True)
        z = ops[gate](x, y)
        assert np.isclose(float(z.data), ch05.gate_forward(gate, x0, y0))
        z.backward(np.array(g))
        dx, dy = ch05.gate_backward(gate, g, x0, y0)
        assert np.isclose(float(x.grad), dx)
        if dy is None:
            assert y.grad is None
        else:
            assert np.isclose(float(y.grad), dy)


def test_gate_local_derivative_column():
    assert ch05.GATES["multiply"][2](2.0, -3.0) == -3.0
    assert ch05.GATES["max"][2](1.0, 2.0) == 0.0
    assert np.isclose(ch05.GATES["sigmoid"][2](0.0, 0.0), 0.25)


def test_draw_gate_and_explorers_build():
    fig = ch05.draw_gate("max", 1.0, 2.0, 0.5)
    assert len(fig.axes) == 2
    fig = ch05.draw_gate("sigmoid", 1.0, 0.0, 0.5)
    assert len(fig.axes) == 2
    pytest.importorskip("ipywidgets")
    assert len(ch05.gate_explorer().children) == 3
    assert len(ch05.gain_explorer(depth=3).widget().children) == 3  # title, controls, view


def test_layer_grad_norms_vanish_for_sigmoid_and_recover_with_gain():
    small = ch05.layer_grad_norms("sigmoid", depth=6, width=16, gain=1.0, batch=8)
    large = ch05.layer_grad_norms("sigmoid", depth=6, width=16, gain=8.0, batch=8)
    assert small.shape == (6,)
    assert small[0] / small[-1] < 1e-2
    assert large[0] / large[-1] > 10 * small[0] / small[-1]


def test_dead_relu_run_big_step_kills_units_for_good():
    digits = bl.data.load_digits()
    X, y = digits.X[:300], digits.y[:300]
    r = ch05.dead_relu_run(X, y, big_lr=30.0, hidden=32, recover_steps=3)
    assert r["after_big_step"] > r["init"]
    assert r["after_recovery"] == r["after_big_step"]
    assert r["max_grad_into_dead_units"] == 0.0
