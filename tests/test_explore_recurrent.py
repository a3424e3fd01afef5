"""Chapter 12's helpers (backprop_lab.explore.recurrent): models, gradient bookkeeping through
time, truncation, clipping, training, and the explorer's figure."""

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab import numdiff
from backprop_lab.explore import recurrent as rc

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def _setup(T=6, B=3, d=2, n=4, radius=1.0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(B, T, d))
    U = [rng.normal(size=(B, n)) for _ in range(T)]
    return rc.RNN(d, n, radius=radius, seed=seed), X, U


def _shared_gradient(rnn, X, U):
    hs = rnn.states(X)
    loss = bl.sum(hs[0] * U[0])
    for h, u in zip(hs[1:], U[1:]):
        loss = loss + bl.sum(h * u)
    loss.backward()
    g = np.array(rnn.Wh.grad)
    bl.zero_grad(rnn)
    return g


def test_orthogonal_and_radius():
    rnn = rc.RNN(3, 6, radius=0.7)
    s = np.linalg.svd(np.asarray(rnn.Wh.data), compute_uv=False)
    np.testing.assert_allclose(s, 0.7, rtol=1e-12)
    Q = rc.orthogonal(5, np.random.default_rng(0))
    np.testing.assert_allclose(Q @ Q.T, np.eye(5), atol=1e-12)


def test_numpy_states_match_engine():
    rnn, X, _ = _setup()
    hs = rc.numpy_states(
        np.transpose(X, (1, 0, 2)),
        np.zeros((3, 4)),
        np.asarray(rnn.Wx.data),
        np.asarray(rnn.Wh.data),
        np.asarray(rnn.b.data),
    )
    engine = np.stack([np.asarray(h.data) for h in rnn.states(X)])
    np.testing.assert_allclose(hs[1:], engine, rtol=1e-12, atol=1e-14)
    assert hs.shape == (7, 3, 4)


def test_copy_gradients_sum_to_shared_gradient():
    rnn, X, U = _setup()
    G = rc.copy_gradients(rnn, X, U)
    assert len(G) == 6
    np.testing.assert_allclose(sum(G), _shared_gradient(rnn, X, U), rtol=1e-12, atol=1e-12)
    assert np.all(G[0] == 0)  # h_0 = 0


def test_contribution_table_is_lower_triangular_and_sums_up():
    rnn, X, U = _setup()
    table = rc.loss_term_contributions(rnn, X, U)
    full = _shared_gradient(rnn, X, U)
    np.testing.assert_allclose(table.sum(axis=(0, 1)), full, rtol=1e-12, atol=1e-12)
    for t in range(6):
        for s in range(t + 1, 6):
            assert np.all(table[t, s] == 0)
    np.testing.assert_allclose(rc.window_gradient(table, 6), full, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        rc.window_gradient(table, 1), rc.truncated_gradient(rnn, X, U, 1), rtol=1e-12, atol=1e-12
    )


def test_truncation_limits():
    rnn, X, U = _setup(radius=0.9)
    full = _shared_gradient(rnn, X, U)
    np.testing.assert_allclose(rc.truncated_gradient(rnn, X, U, 6), full, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rc.truncated_gradient(rnn, X, U, 50), full, rtol=1e-12, atol=1e-12)
    errs = [np.linalg.norm(rc.truncated_gradient(rnn, X, U, k) - full) for k in (1, 2, 3)]
    assert errs[0] > 0 and errs[2] > 0
    assert rnn.Wh.grad is None  # truncated_gradient leaves no gradient behind


@pytest.mark.parametrize("radius", [0.5, 1.0, 1.3])
def test_linear_rnn_gradient_norm_is_radius_power(radius):
    X = np.random.default_rng(0).normal(size=(2, 12, 3))
    rnn = rc.RNN(3, 5, radius=radius, activation="linear")
    n = rc.state_gradient_norms(rnn, X)["h"]
    np.testing.assert_allclose(n / n[-1], radius ** np.arange(11, -1, -1), rtol=1e-9)


def test_lstm_gradients_match_finite_differences():
    lstm = rc.LSTM(2, 3, seed=1)
    X = np.random.default_rng(1).normal(size=(2, 4, 2))
    y = np.random.default_rng(2).normal(size=(2, 1))

    def loss_of(Wh):
        lstm.Wh.data[...] = Wh
        with bl.no_grad():
            return float(bl.sum((lstm(X) - y) ** 2).item())

    W0 = np.array(lstm.Wh.data)
    bl.sum((lstm(X) - y) ** 2).backward()
    got = np.array(lstm.Wh.grad)
    want = numdiff.numerical_gradient(loss_of, W0.copy())
    lstm.Wh.data[...] = W0
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    cells = []
    hs = lstm.states(X, cells)
    assert len(hs) == len(cells) == 4 and hs[0].shape == (2, 3)
    norms = rc.state_gradient_norms(lstm, X)
    assert set(norms) == {"h", "c"} and norms["c"].shape == (4,)


def test_forget_bias_sets_forget_gate():
    lstm = rc.LSTM(2, 4, forget_bias=3.0)
    b = np.asarray(lstm.b.data)
    assert np.all(b[4:8] == 3.0) and np.all(b[:4] == 0) and np.all(b[8:] == 0)


def test_scalar_rnn_gradient():
    _, g, _ = rc.scalar_rnn(1.1, T=10, h0=0.5, b=-0.1, target=1.0)
    want = numdiff.derivative(lambda w: rc.scalar_rnn(w, T=10, h0=0.5, b=-0.1, target=1.0)[0], 1.1)
    assert np.isclose(g, want, rtol=1e-6)


def test_clip_by_global_norm():
    gs = [np.array([3.0, 0.0]), np.array([[4.0]])]
    clipped, norm = rc.clip_by_global_norm(gs, 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(clipped[0], [0.6, 0.0])
    np.testing.assert_allclose(clipped[1], [[0.8]])
    same, _ = rc.clip_by_global_norm(gs, 10.0)
    assert all(np.array_equal(a, b) for a, b in zip(same, gs))
    zero, n0 = rc.clip_by_global_norm([np.zeros(3)], 1.0)
    assert n0 == 0.0 and np.all(zero[0] == 0)


def test_train_lowers_the_loss_and_clips():
    X, y = bl.data.adding_problem(n=64, steps=5, seed=0)
    rnn = rc.RNN(2, 4, seed=0)
    before = rc.mse(rnn, X, y)
    run = rc.train(rnn, X, y, steps=30, batch=16, lr=0.05, clip=0.5, seed=0)
    assert len(run["loss"]) == len(run["grad_norm"]) == 30
    assert rc.mse(rnn, X, y) < before


def test_step_inputs_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"\(B, T, inputs\)"):
        rc.step_inputs(np.zeros((3, 4)))


@pytest.mark.parametrize("radius,length", [(0.5, 10), (1.0, 40), (1.5, 80)])
def test_gradient_flow_figure_renders(radius, length):
    import matplotlib.pyplot as plt

    fig = rc.gradient_flow_figure(radius=radius, length=length)
    assert f"T = {length}" in fig.axes[0].get_title()
    plt.close(fig)
