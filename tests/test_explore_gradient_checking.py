"""Helpers of Chapter 10 (backprop_lab.explore.gradient_checking)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from backprop_lab import numdiff
from backprop_lab.explore import gradient_checking as gc


def test_flat_gradient_matches_finite_differences():
    theta, shapes, X, Y = gc.mlp_problem((3, 4, 2), batch=5)
    assert theta.size == 3 * 4 + 4 + 4 * 2 + 2
    g = gc.flat_gradient(theta, shapes, X, Y)
    n = numdiff.numerical_gradient(lambda t: float(gc.mlp_loss(t, shapes, X, Y).data), theta)
    assert gc.relative_errors(g, n).max() < 1e-7


def test_costs_in_forward_passes():
    c = gc.cost_in_forward_passes((8, 32, 32, 32, 1))
    assert c["centered"] == 2 * c["N"] and c["one_sided"] == c["N"] + 1
    assert 2.5 < c["backprop"] < 3.0 and c["backward"] == pytest.approx(c["backprop"] - 1)
    assert c["directional"] == 2 and 2.0 < c["jvp"] < 3.0


def test_time_gradients_reports_seconds():
    t = gc.time_gradients((4, 4, 1), batch=8)
    assert t["N"] == 4 * 4 + 4 + 4 + 1
    assert t["forward_s"] > 0 and t["backprop_s"] > 0 and t["centered_s"] > t["forward_s"]


@pytest.mark.parametrize("scheme,power", [("centered", 1 / 3), ("forward", 1 / 2)])
def test_best_step_is_near_the_theory(scheme, power):
    hs, errs = gc.step_error_curve("x^3 - 2x", scheme, "float64", points=16)
    h, e = gc.best_step(hs, errs)
    eps = np.finfo(np.float64).eps
    assert eps**power / 10 <= h <= eps**power * 10
    assert e < 10 * eps ** (1 - power)


def test_a_planted_bug_sets_a_floor():
    hs, errs = gc.step_error_curve("softplus(x)", "centered", "float64", points=8, bug=1e-4)
    at_theory = errs[np.argmin(np.abs(np.log(hs / 6e-6)))]
    assert at_theory == pytest.approx(1e-4, rel=0.01)  # round-off and truncation are far below


def test_relative_errors_floor():
    r = gc.relative_errors([1e-14, 2.0, 0.0], [3e-15, 2.0 + 2e-9, 0.0])
    assert r[0] < 1e-3 and r[1] == pytest.approx(5e-10, rel=1e-3) and r[2] == 0.0


def test_layer_pool_bugs_are_where_their_names_say():
    rng = np.random.default_rng(3)
    for kind, variants in gc.layer_kinds().items():
        inputs = gc.draw_inputs(kind, rng)
        for variant in variants:
            layer = gc.make_layer(kind, variant, inputs)
            out = np.asarray(layer.forward(*layer.inputs))
            u = rng.normal(size=out.shape)
            numeric = numdiff.numerical_vjp(layer.forward, layer.inputs, u)
            claimed = layer.backward(u, *layer.inputs)
            errs = [gc.relative_errors(a, n).max() for a, n in zip(claimed, numeric)]
            if variant == "ok":
                assert max(errs) < 1e-7, (kind, errs)
            else:
                wrong = int(variant[0])
                assert errs[wrong] > 1e-6, (kind, variant, errs)
                assert all(e < 1e-7 for j, e in enumerate(errs) if j != wrong), (kind, variant)


@pytest.mark.parametrize(
    "values",
    [("sin(x) exp(x)", "float64", 0.0, "centered"), ("x^3 - 2x", "float32", 1e-3, "forward")],
)
def test_render_steps_draws(values):
    fig = gc.render_steps(*values)
    assert "error" in fig.axes[0].get_title()
    matplotlib.pyplot.close(fig)


def test_step_explorer_fits_the_budget():
    assert gc.step_explorer().n_views <= 40


def test_mystery_layers_hold_one_wrong_rule():
    """Exercise 10.2's practice triple: exactly one layer disagrees with finite differences,
    in one input (the notebook no longer names it in a worked cell)."""
    rng = np.random.default_rng(0)
    wrong = []
    for i, layer in enumerate(gc.mystery_layers()):
        out = np.asarray(layer.forward(*layer.inputs))
        u = rng.normal(size=out.shape)
        claimed = layer.backward(u, *layer.inputs)
        numeric = numdiff.numerical_vjp(layer.forward, layer.inputs, u)
        for j, (a, n) in enumerate(zip(claimed, numeric)):
            if not np.allclose(a, n, rtol=1e-8, atol=1e-12):
                wrong.append((i, j))
    assert wrong == [(1, 0)]
