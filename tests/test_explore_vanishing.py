"""Helpers of Chapter 9 (backprop_lab.explore.vanishing)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab.explore import vanishing as va


def test_weight_std_names():
    assert va.weight_std("he", 50) == pytest.approx(math.sqrt(2 / 50))
    assert va.weight_std("xavier", 30, 70) == pytest.approx(math.sqrt(2 / 100))
    assert va.weight_std("small", 9) == 0.01 and va.weight_std("large", 9) == 1.0
    with pytest.raises(ValueError, match="initialisation"):
        va.weight_std("orthogonal", 9)


def test_layer_jacobians_multiply_to_the_engine_jacobian_of_the_stack():
    depth, width, std = 3, 5, 0.7
    jacs, Ws = va.layer_jacobians("tanh", std, depth=depth, width=width, seed=4,
                                  return_weights=True)  # fmt: skip
    h0 = np.random.default_rng(4).normal(size=(1, width))  # the generator's first draw

    def stack(h):
        for W in Ws:
            h = bl.tanh(h @ W)
        return h

    engine = np.asarray(bl.jacobian(stack)(h0)).reshape(width, width)  # d h_D / d h_0
    product = jacs[2] @ jacs[1] @ jacs[0]  # d h_3 / d h_0 = J_3 J_2 J_1 (rows: outputs)
    np.testing.assert_allclose(engine, product, atol=1e-12)


def test_product_singular_values_are_sorted_and_grow_in_number():
    jacs = va.layer_jacobians("relu", va.weight_std("he", 16), depth=4, width=16)
    sv = va.product_singular_values(jacs)
    assert len(sv) == 4 and all(np.all(np.diff(s) <= 1e-12) for s in sv)
    np.testing.assert_allclose(sv[0], np.linalg.svd(jacs[-1], compute_uv=False))


def test_stack_profile_he_relu_keeps_the_scale_and_sigmoid_vanishes():
    relu = va.stack_profile("relu", init="he", depth=30, width=64, batch=32)
    assert relu["act_rms"].shape == (30,) and relu["grad_norm"].shape == (30,)
    assert 0.1 < relu["grad_norm"][0] / relu["grad_norm"][-1] < 10
    sig = va.stack_profile("sigmoid", init="xavier", depth=30, width=64, batch=32)
    assert sig["grad_norm"][0] / sig["grad_norm"][-1] < 1e-10


def test_residual_stack_passes_the_gradient_where_the_plain_one_loses_it():
    std = va.weight_std("xavier", 64)
    plain = va.stack_profile("sigmoid", std=std, depth=30, width=64, batch=16)
    res = va.stack_profile("sigmoid", std=std, depth=30, width=64, batch=16, residual=True)
    assert plain["input_grad_norm"] < 1e-10 * plain["grad_norm"][-1]
    assert 0.1 < res["input_grad_norm"] / res["grad_norm"][-1] < 10


def test_clip_by_global_norm_caps_length_and_keeps_direction():
    grads = [np.array([3.0, 0.0]), np.array([[4.0]])]
    clipped, total = va.clip_by_global_norm(grads, 1.0)
    assert total == pytest.approx(5.0)
    np.testing.assert_allclose(clipped[0], [0.6, 0.0])
    np.testing.assert_allclose(clipped[1], [[0.8]])
    same, _ = va.clip_by_global_norm(grads, 10.0)
    assert all(np.array_equal(a, b) for a, b in zip(same, grads))


def test_train_deep_relu_records_every_step():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 8)), rng.integers(0, 3, size=32)
    r = va.train_deep_relu(X, y, gain=1.0, max_norm=1.0, steps=3, depth=3, width=8)
    assert r["loss"].shape == (3,) and r["grad_norm"].shape == (3,)
    assert np.all(np.isfinite(r["loss"]))


def test_layer_norm_makes_the_profile_independent_of_the_weight_scale():
    a = va.normalised_stack_norms(0.5, True, depth=10, width=32, batch=16)
    b = va.normalised_stack_norms(3.0, True, depth=10, width=32, batch=16)
    np.testing.assert_allclose(a / a[-1], b / b[-1], rtol=1e-2)
    c = va.normalised_stack_norms(0.5, False, depth=10, width=32, batch=16)
    d = va.normalised_stack_norms(3.0, False, depth=10, width=32, batch=16)
    assert abs(math.log10((c[0] / c[-1]) / (d[0] / d[-1]))) > 3


def test_one_layer_ratios_match_the_variance_argument():
    f, b = va.one_layer_ratios("relu", math.sqrt(2 / 256), 256, 256, batch=256)
    assert f == pytest.approx(1.0, abs=0.1) and b == pytest.approx(1.0, abs=0.1)
    f, b = va.one_layer_ratios("linear", math.sqrt(1 / 256), 256, 1024, batch=256)
    assert f == pytest.approx(1.0, abs=0.1) and b == pytest.approx(4.0, rel=0.1)


def test_heatmap_draws():
    grid = va.profile_grid(("relu",), ("he", "large"), depth=6, width=16, batch=8)
    fig = va.plot_profile_heatmap(grid)
    assert len(fig.axes) == 4  # two panels, two colour bars
    matplotlib.pyplot.close(fig)


@pytest.mark.parametrize(
    "values", [(10, "sigmoid", 1.0, "off"), (50, "relu", 2.0, "on"), (10, "tanh", 0.5, "on")]
)
def test_render_depth_draws(values):
    fig = va.render_depth(*values)
    assert "residual" in fig.axes[0].get_title()
    matplotlib.pyplot.close(fig)


def test_depth_explorer_fits_the_budget():
    assert va.depth_explorer().n_views <= 40
