"""Unit tests for the chapter 1-3 helpers in backprop_lab.explore."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab.explore import ch01, ch02, ch03

# ----------------------------------------------------------------------------- chapter 1


def test_regression_problem_parameter_count():
    model, X, Y = ch01.regression_problem(hidden=5, n_in=3, batch=7)
    assert X.shape == (7, 3) and Y.shape == (7, 1)
    assert len(ch01.parameter_slots(model)) == 3 * 5 + 5 + 5 + 1


@pytest.mark.parametrize("centered", [True, False])
def test_finite_difference_matches_backprop_and_restores_weights(centered):
    model, X, Y = ch01.regression_problem(hidden=3, n_in=2, batch=5)
    before = [p.data.copy() for p in model.parameters()]
    g_bp = ch01.backprop_gradient(model, X, Y)
    g_fd = ch01.finite_difference_gradient(model, X, Y, centered=centered)
    tol = 1e-7 if centered else 1e-4
    np.testing.assert_allclose(g_fd, g_bp, rtol=tol, atol=tol)
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)


def test_gradient_cost_table_counts_passes():
    rows = ch01.gradient_cost_table([2, 4], n_in=3, batch=4, time_it=False)
    for r in rows:
        assert r["fd1_passes"] == r["N"] + 1
        assert r["fd2_passes"] == 2 * r["N"]
        assert r["bp_backward_passes"] == 1
        assert r["fd2_flops"] == 2 * r["N"] * r["forward_flops"]
        assert r["max_rel_err"] < 1e-6
        assert "bp_seconds" not in r


def test_plot_gradient_cost_untimed():
    import matplotlib.pyplot as plt

    rows = ch01.gradient_cost_table([2], n_in=2, batch=3, time_it=False)
    fig = ch01.plot_gradient_cost(rows)
    assert len(fig.axes) == 1
    plt.close(fig)


def test_backward_forward_ratio_deep_net_near_two():
    shallow = ch01.backward_forward_ratio(sizes=(64, 32, 10), batch=16)
    deep = ch01.backward_forward_ratio(sizes=(64, 32, 32, 32, 10), batch=16)
    assert 1.0 < shallow["ratio"] < deep["ratio"] < 2.0
    f, b = deep["per_op"]["matmul"]
    assert b > f  # hidden layers need both input and weight gradients


def test_time_forward_backward_returns_positive_times():
    tm = ch01.time_forward_backward(sizes=(64, 16, 10), batch=8, repeats=2)
    assert tm["forward_s"] > 0 and tm["backward_s"] > 0 and tm["ratio"] > 0


def test_loss_along_zero_offset_is_the_loss():
    model, X, Y = ch01.regression_problem(hidden=3, n_in=2, batch=5)
    L0 = float(ch01.loss_of(model, X, Y).data)
    vals = ch01.loss_along(model, X, Y, slot=4, offsets=[0.0, 0.1, 0.0])
    assert vals[0] == pytest.approx(L0) and vals[2] == pytest.approx(L0)
    assert float(ch01.loss_of(model, X, Y).data) == pytest.approx(L0)


def test_slice_explorer_builds():
    pytest.importorskip("ipywidgets")
    model, X, Y = ch01.regression_problem(hidden=2, n_in=2, batch=4)
    box = ch01.slice_explorer(model, X, Y)
    slider = box.children[0].children[0]
    slider.value = 3  # redraws without error
    assert slider.max == len(ch01.parameter_slots(model)) - 1


# ----------------------------------------------------------------------------- chapter 2


@pytest.mark.parametrize("w", [-1.7, 0.0, 0.9, 1.3])
def test_chain_factors_match_numerical_and_engine(w):
    f = ch02.chain_factors(w)
    assert f["dL/dw"] == pytest.approx(ch02.numerical_derivative(ch02.loss, w), abs=1e-7)
    t, wt = ch02.traced_chain(w)
    assert float(wt.grad) == pytest.approx(f["dL/dw"], abs=1e-12)
    rows = ch02.replay_rows(t)
    assert [r["input"] for r in rows] == ["a", "z", "w"]
    for r, key in zip(rows, ("dL/da", "da/dz", "dz/dw")):
        assert r["local"] == pytest.approx(f[key], abs=1e-12)
        assert r["upstream"] * r["local"] == pytest.approx(r["downstream"], abs=1e-12)


def test_format_replay_has_one_line_per_row():
    t, _ = ch02.traced_chain(0.9)
    rows = ch02.replay_rows(t)
    text = ch02.format_replay(rows)
    assert len(text.splitlines()) == len(rows) + 1
    assert "0.8100" in text


def test_chain_rule_explorer_builds():
    pytest.importorskip("ipywidgets")
    box = ch02.chain_rule_explorer(0.5)
    box.children[0].value = -1.0


# ----------------------------------------------------------------------------- chapter 3


def test_jacobian_matrix_shapes():
    A = np.arange(6.0).reshape(3, 2)
    J = ch03.jacobian_matrix(lambda x: x @ A, np.ones(3))
    np.testing.assert_array_equal(J, A.T)
    Jb = ch03.jacobian_matrix(lambda X: X @ A, np.ones((2, 3)))
    assert Jb.shape == (4, 6)


@pytest.mark.parametrize("shape", [(5, 2), (2, 5)])
def test_jacobian_with_passes_counts(shape):
    C = np.random.default_rng(0).normal(size=shape)
    n, m = shape

    def f(x):
        return bl.tanh(x @ C)

    x = np.linspace(-1, 1, n)
    J_rev, p_rev = ch03.jacobian_with_passes(f, x, "reverse")
    J_fwd, p_fwd = ch03.jacobian_with_passes(f, x, "forward")
    np.testing.assert_allclose(J_rev, J_fwd, rtol=1e-12, atol=1e-14)
    assert p_rev["forward_passes"] == 1 and p_rev["backward_passes"] == m
    assert p_fwd["forward_passes"] == n and p_fwd["backward_passes"] == 0


def test_example_maps_jacobians():
    maps = ch03.example_maps(n=4, m=3)
    x = np.linspace(-1, 1, 4)
    J_tanh = ch03.jacobian_matrix(maps["elementwise tanh"][0], x)
    np.testing.assert_allclose(J_tanh, np.diag(1 - np.tanh(x) ** 2), atol=1e-14)
    J_lin = ch03.jacobian_matrix(maps["linear x @ W"][0], x)
    assert J_lin.shape == (3, 4)
    J_sm = ch03.jacobian_matrix(maps["softmax"][0], x)
    s = np.exp(x) / np.exp(x).sum()
    np.testing.assert_allclose(J_sm, np.diag(s) - np.outer(s, s), atol=1e-14)
    for name, (fn, _, lim) in maps.items():
        J = ch03.jacobian_matrix(fn, 3 * x)
        assert np.max(np.abs(J)) <= lim + 1e-12, name


def test_jacobian_explorer_builds():
    pytest.importorskip("ipywidgets")
    box = ch03.jacobian_explorer()
    which = box.children[0].children[0]
    for name in which.options:
        which.value = name
