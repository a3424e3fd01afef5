"""Unit tests for the chapter 1-3 helpers in backprop_lab.explore (what_backprop_computes,
chain_rule, jacobians)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab import numdiff
from backprop_lab.explore import chain_rule, jacobians
from backprop_lab.explore import what_backprop_computes as wbc
from backprop_lab.explorer import Explorer

# ----------------------------------------------------------------------------- chapter 1


def test_regression_problem_parameter_count():
    model, X, Y = wbc.regression_problem(hidden=5, n_in=3, batch=7)
    assert X.shape == (7, 3) and Y.shape == (7, 1)
    assert len(wbc.parameter_slots(model)) == 3 * 5 + 5 + 5 + 1


def test_flat_parameters_are_the_models_weights():
    model, X, Y = wbc.regression_problem(hidden=3, n_in=2, batch=5)
    L0 = float(wbc.loss_of(model, X, Y).data)
    w = wbc.flat_parameters(model)
    assert w.size == len(wbc.parameter_slots(model))
    assert wbc.flat_parameters(model) is w  # made once
    w[4] += 0.5  # moves weight 4 of the model
    assert float(wbc.loss_of(model, X, Y).data) != pytest.approx(L0)
    w[4] -= 0.5
    assert float(wbc.loss_of(model, X, Y).data) == pytest.approx(L0)
    g = wbc.backprop_gradient(model, X, Y)  # the engine still trains the views
    assert g.shape == w.shape and np.all(np.isfinite(g))


@pytest.mark.parametrize("centered", [True, False])
def test_finite_difference_matches_backprop_and_restores_weights(centered):
    model, X, Y = wbc.regression_problem(hidden=3, n_in=2, batch=5)
    before = [p.data.copy() for p in model.parameters()]
    g_bp = wbc.backprop_gradient(model, X, Y)
    g_fd = wbc.finite_difference_gradient(model, X, Y, centered=centered)
    tol = 1e-7 if centered else 1e-4
    np.testing.assert_allclose(g_fd, g_bp, rtol=tol, atol=tol)
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)


def test_gradient_cost_table_counts_passes():
    rows = wbc.gradient_cost_table([2, 4], n_in=3, batch=4, time_it=False)
    for r in rows:
        assert r["fd1_passes"] == r["N"] + 1
        assert r["fd2_passes"] == 2 * r["N"]
        assert r["bp_backward_passes"] == 1
        assert r["fd2_flops"] == 2 * r["N"] * r["forward_flops"]
        assert r["max_rel_err"] < 1e-6
        assert "bp_seconds" not in r


def test_plot_gradient_cost_untimed():
    import matplotlib.pyplot as plt

    rows = wbc.gradient_cost_table([2], n_in=2, batch=3, time_it=False)
    fig = wbc.plot_gradient_cost(rows)
    assert len(fig.axes) == 1
    plt.close(fig)


def test_backward_forward_ratio_deep_net_near_two():
    shallow = wbc.backward_forward_ratio(sizes=(64, 32, 10), batch=16)
    deep = wbc.backward_forward_ratio(sizes=(64, 32, 32, 32, 10), batch=16)
    assert 1.0 < shallow["ratio"] < deep["ratio"] < 2.0
    f, b = deep["per_op"]["matmul"]
    assert b > f  # hidden layers need both input and weight gradients


def test_time_forward_backward_returns_positive_times():
    tm = wbc.time_forward_backward(sizes=(64, 16, 10), batch=8, repeats=2)
    assert tm["forward_s"] > 0 and tm["backward_s"] > 0 and tm["ratio"] > 0


def test_loss_along_zero_offset_is_the_loss():
    model, X, Y = wbc.regression_problem(hidden=3, n_in=2, batch=5)
    L0 = float(wbc.loss_of(model, X, Y).data)
    vals = wbc.loss_along(model, X, Y, slot=4, offsets=[0.0, 0.1, 0.0])
    assert vals[0] == pytest.approx(L0) and vals[2] == pytest.approx(L0)
    assert float(wbc.loss_of(model, X, Y).data) == pytest.approx(L0)


def test_slice_figure_shows_round_off_at_the_smallest_step():
    model, X, Y = wbc.regression_problem(hidden=3, n_in=2, batch=16, seed=1)
    g = wbc.backprop_gradient(model, X, Y)
    errors = {}
    for h in (1e-1, 1e-5, 1e-12):
        fig = wbc.slice_figure(model, X, Y, g, 5, h)
        errors[h] = float(fig.axes[1].get_title().split("=")[-1])
    # truncation error at large h, round-off at tiny h, both far above the best step's
    assert errors[1e-5] < 1e-8 < errors[1e-1] and errors[1e-5] < 1e-8 < errors[1e-12]
    assert min(wbc.SLICE_STEPS) == 1e-12


def test_slice_explorer_is_an_explorer_within_budget():
    model, X, Y = wbc.regression_problem(hidden=3, n_in=2, batch=16, seed=1)
    e = wbc.slice_explorer(model, X, Y)
    assert isinstance(e, Explorer) and e.n_views <= 40
    assert "<img" in e.render_html({"k": 12, "h": 1e-12})


def test_matmul_flop_tally_counts_one_product_for_the_first_layer():
    tally = wbc.matmul_flop_tally([10, 20, 5, 7], batch=4)
    assert [f for f, _ in tally] == [2 * 4 * 10 * 20, 2 * 4 * 20 * 5, 2 * 4 * 5 * 7]
    assert [b / f for f, b in tally] == [1, 2, 2]


def test_flop_explorer_within_budget():
    e = wbc.flop_explorer()
    assert e.n_views <= 40
    fig = wbc.flop_figure(3, 16)
    assert "backward / forward" in fig.axes[0].get_title()


# ----------------------------------------------------------------------------- chapter 2


@pytest.mark.parametrize("w", [-1.7, 0.0, 0.9, 1.3])
def test_replayed_factors_multiply_to_the_derivative(w):
    t, wt = chain_rule.traced_chain(w)
    rows = chain_rule.replay_rows(t)
    assert [r["input"] for r in rows] == ["a", "z", "w"]
    product = np.prod([r["local"] for r in rows])
    assert float(wt.grad) == pytest.approx(product, abs=1e-12)
    fd = numdiff.derivative(chain_rule.loss, w)
    assert float(wt.grad) == pytest.approx(fd, abs=1e-7)
    for r in rows:
        assert r["upstream"] * r["local"] == pytest.approx(r["downstream"], abs=1e-12)
    v = chain_rule.forward_values(w)
    assert [r["input_value"] for r in rows] == pytest.approx([v["a"], v["z"], v["w"]])


def test_format_replay_has_one_line_per_row():
    t, _ = chain_rule.traced_chain(0.9)
    rows = chain_rule.replay_rows(t)
    text = chain_rule.format_replay(rows)
    assert len(text.splitlines()) == len(rows) + 1
    assert "0.8100" in text


def test_chain_rule_explorer_within_budget():
    e = chain_rule.chain_rule_explorer(0.9)
    assert isinstance(e, Explorer) and e.n_views <= 41
    assert e.value == {"w": 0.9}
    fig = chain_rule.chain_figure(1.25)
    assert len(fig.axes) == 2


def test_no_helper_computes_an_exercise_answer():
    """The answers of Exercises 2.1 and 1.1 are not in the package."""
    assert not hasattr(chain_rule, "chain_factors")
    assert not hasattr(chain_rule, "numerical_derivative")


# ----------------------------------------------------------------------------- chapter 3


def test_jacobian_matrix_shapes():
    A = np.arange(6.0).reshape(3, 2)
    J = jacobians.jacobian_matrix(lambda x: x @ A, np.ones(3))
    np.testing.assert_array_equal(J, A.T)
    Jb = jacobians.jacobian_matrix(lambda X: X @ A, np.ones((2, 3)))
    assert Jb.shape == (4, 6)


@pytest.mark.parametrize("shape", [(5, 2), (2, 5)])
def test_jacobian_with_passes_counts(shape):
    C = np.random.default_rng(0).normal(size=shape)
    n, m = shape

    def f(x):
        return bl.tanh(x @ C)

    x = np.linspace(-1, 1, n)
    J_rev, p_rev = jacobians.jacobian_with_passes(f, x, "reverse")
    J_fwd, p_fwd = jacobians.jacobian_with_passes(f, x, "forward")
    np.testing.assert_allclose(J_rev, J_fwd, rtol=1e-12, atol=1e-14)
    assert p_rev["forward_passes"] == 1 and p_rev["backward_passes"] == m
    assert p_fwd["forward_passes"] == n and p_fwd["backward_passes"] == 0


def test_example_maps_jacobians_stay_within_their_colour_limits():
    maps = jacobians.example_maps(n=4, m=3)
    x = np.linspace(-1, 1, 4)
    J_tanh = jacobians.jacobian_matrix(maps["elementwise tanh"][0], x)
    np.testing.assert_allclose(J_tanh, np.diag(np.diag(J_tanh)), atol=0)  # diagonal
    J_lin = jacobians.jacobian_matrix(maps["linear x @ W"][0], x)
    assert J_lin.shape == (3, 4)
    for name, (fn, _, lim) in maps.items():
        for shift in jacobians.SHIFTS:
            for scale in jacobians.SCALES:
                z = scale * x
                z[0] += shift
                J = jacobians.jacobian_matrix(fn, z)
                assert np.max(np.abs(J)) <= lim + 1e-12, name


def test_jacobian_explorer_within_budget():
    e = jacobians.jacobian_explorer()
    assert isinstance(e, Explorer) and e.n_views <= 40
    fig = jacobians.jacobian_figure("linear x @ W", 2.0, 4.0)
    assert len(fig.axes) == 3  # input/output, heatmap, colour bar
