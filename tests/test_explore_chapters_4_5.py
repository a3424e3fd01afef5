"""Helpers of chapters 4 and 5 (backprop_lab.explore.two_layer_network, gates)."""

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab import numdiff
from backprop_lab.explore import gates
from backprop_lab.explore import two_layer_network as tln
from backprop_lab.explorer import Explorer

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def _params(rng, d=3, m=5, k=2):
    return [
        rng.normal(size=(d, m)),
        rng.normal(size=m),
        rng.normal(size=(m, k)),
        rng.normal(size=k),
    ]


def test_no_helper_ships_an_answer_of_chapters_4_or_5():
    """Exercises 4.1, 4.2, 5.1-5.4 and 5.6 are not answered by the package."""
    for name in ("two_layer_backward", "squared_loss_backward"):
        assert not hasattr(tln, name)
    for name in ("GATES", "gate_backward", "gate_forward"):
        assert not hasattr(gates, name)
    rng = np.random.default_rng(0)
    L = tln.squared_loss(rng.normal(size=(4, 2)), rng.normal(size=(4, 2)))
    assert isinstance(L, float)  # the loss only, no gradient


def test_engine_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    params = _params(rng)
    g = tln.engine_gradients(X, Y, params)

    def loss(*ps):
        return tln.squared_loss(tln.two_layer_forward(X, *ps)[0], Y)

    fd = numdiff.numerical_vjp(loss, params, 1.0)
    for name, e in zip(("dW1", "db1", "dW2", "db2"), fd):
        np.testing.assert_allclose(g[name], e, rtol=1e-6, atol=1e-8)
    Yhat, (_, _, _, _, _, Z, H) = tln.two_layer_forward(X, *params)
    assert g["dZ"].shape == Z.shape and g["dH"].shape == H.shape
    assert g["L"] == pytest.approx(tln.squared_loss(Yhat, Y))


def test_saved_for_backward_lists_what_each_op_keeps():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    rows, total, trace = tln.saved_for_backward(X, Y, _params(rng))
    ops = [r[0] for r in rows]
    assert ops[:3] == ["matmul", "add", "sigmoid"]
    assert rows[0][1] == "(4, 3), (3, 5)" and rows[0][2] == 8 * (12 + 15)
    assert rows[2][1] == "(4, 5)"  # the sigmoid keeps its output
    assert rows[1][2] == 0  # the add keeps nothing
    assert total < sum(r[2] for r in rows)  # H, saved by the sigmoid and the matmul, once
    assert bl.draw_graph(trace).svg.startswith("<svg")


def test_init_params_shapes_and_seed():
    a = tln.init_params(64, 8, 10, seed=3)
    b = tln.init_params(64, 8, 10, seed=3)
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
    rows = tln.replay_rows(tr)
    ops = [r[0].split()[0] for r in rows]
    assert {"matmul", "sigmoid", "add"} <= set(ops)
    assert all(r[4] < 1e-12 for r in rows)


def test_train_digits_learns_and_records_history():
    digits = bl.data.load_digits()
    Xtr, Xte, ytr, yte = bl.data.train_test_split(digits.X[:600], digits.y[:600], 0.25, seed=0)
    h = tln.train_digits(Xtr, ytr, Xte, yte, hidden=16, lr=0.05, epochs=4, live=False)
    assert h.epoch == [1, 2, 3, 4]
    assert len(h.train_loss) == len(h.test_acc) == 4
    assert h.train_loss[-1] < h.train_loss[0]
    assert [p.shape for p in h.params] == [(64, 16), (16,), (16, 10), (10,)]
    fig = tln.plot_history(h)
    assert len(fig.axes) == 2


def test_train_digits_uses_the_given_backward():
    digits = bl.data.load_digits()
    X, y = digits.X[:100], digits.y[:100]
    calls = []

    def spy(dout, cache):  # the engine's gradients, through the backward interface
        calls.append(dout.shape)
        Xb, W1, b1, W2, b2, Z, H = cache
        Yb = np.eye(10)[np.zeros(len(Xb), dtype=int)]  # any targets: only shapes matter
        g = tln.engine_gradients(Xb, Yb, [W1, b1, W2, b2])
        return None, g["dW1"], g["db1"], g["dW2"], g["db2"]

    tln.train_digits(X, y, X, y, hidden=4, epochs=1, batch=50, live=False, backward=spy)
    assert calls == [(50, 10), (50, 10)]


def test_outer_product_explorer_within_budget():
    rng = np.random.default_rng(5)
    X, dZ = rng.normal(size=(6, 64)), rng.normal(size=(6, 3))
    e = tln.outer_product_explorer(X, dZ, X.T @ dZ, examples=[0, 2, 5], units=[0, 2])
    assert isinstance(e, Explorer) and e.n_views == 6
    fig = tln.outer_product_figure(X, dZ, X.T @ dZ, 2, 1, labels=np.arange(6))
    assert len(fig.axes) == 3


@pytest.mark.parametrize("gate", gates.GATE_NAMES)
def test_gate_gradients_come_from_the_engine_and_match_finite_differences(gate):
    rng = np.random.default_rng(6)
    for _ in range(5):
        x0, y0, g = (float(v) for v in rng.uniform(-3, 3, size=3))
        out, dx, dy = gates.gate_gradients(gate, x0, y0, g)
        f = {
            "add": lambda a, b: a + b,
            "multiply": lambda a, b: a * b,
            "max": max,
            "sigmoid": lambda a, b: 1 / (1 + np.exp(-a)),
        }[gate]
        assert out == pytest.approx(f(x0, y0))
        assert dx == pytest.approx(
            g * numdiff.derivative(lambda v, f=f, y0=y0: f(v, y0), x0), abs=1e-6
        )
        if gate == "sigmoid":
            assert dy is None
        else:
            assert dy == pytest.approx(
                g * numdiff.derivative(lambda v, f=f, x0=x0: f(x0, v), y0), abs=1e-6
            )


def test_local_derivative_curve_of_the_sigmoid_peaks_at_a_quarter():
    xs = np.linspace(-6, 6, 241)
    local = gates.local_derivative_curve("sigmoid", xs, 0.0)
    assert local.max() == pytest.approx(0.25) and xs[local.argmax()] == 0.0


def test_draw_gate_and_explorers_build():
    fig = gates.draw_gate("max", 1.0, 2.0, 0.5)
    assert len(fig.axes) == 2
    e = gates.gate_explorer()
    assert isinstance(e, Explorer) and e.n_views <= 40
    assert len(gates.gain_explorer(depth=3).widget().children) == 3  # title, controls, view
    assert gates.gain_explorer().n_views <= 40


def test_layer_grad_norms_vanish_for_sigmoid_and_recover_with_gain():
    small = gates.layer_grad_norms("sigmoid", depth=6, width=16, gain=1.0, batch=8)
    large = gates.layer_grad_norms("sigmoid", depth=6, width=16, gain=8.0, batch=8)
    assert small.shape == (6,)
    assert small[0] / small[-1] < 1e-2
    assert large[0] / large[-1] > 10 * small[0] / small[-1]


def test_dead_relu_run_big_step_kills_units_for_good():
    digits = bl.data.load_digits()
    X, y = digits.X[:300], digits.y[:300]
    r = gates.dead_relu_run(X, y, big_lr=30.0, hidden=32, recover_steps=3)
    assert r["after_big_step"] > r["init"]
    assert r["after_recovery"] == r["after_big_step"]
    assert r["frozen"] >= r["after_big_step"]


def test_a_silenced_first_layer_unit_stays_dead_and_a_second_layer_unit_comes_back():
    digits = bl.data.load_digits()
    X, y = digits.X[:300], digits.y[:300]
    first = gates.silenced_unit_run(X, y, layer=1, unit=3, steps=15, hidden=16)
    second = gates.silenced_unit_run(X, y, layer=2, unit=3, steps=15, hidden=16)
    assert np.all(first == first[0]) and first[0] == pytest.approx(-0.05)
    assert second[0] == pytest.approx(-0.05) and second.max() > 0


def test_stack_grad_ratio_residual_keeps_the_gradient():
    assert gates.stack_grad_ratio(False, 0.5) < 1e-4
    assert 0.1 < gates.stack_grad_ratio(True, 0.5) < 100
