"""backprop_lab.explore.batching (Chapter 14)."""

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab.explore import batching as bt

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def test_per_example_gradients_two_ways_agree_and_average_to_the_batch_gradient():
    X, y = bt.digits_batch(12, seed=1)
    params = bt.digits_mlp(hidden=8, seed=1)
    loop = bt.per_example_grads_loop(X, y, params)
    hooks = bt.per_example_grads_hooks(X, y, params)
    ts = [bl.tensor(p, requires_grad=True) for p in params]
    bl.cross_entropy(bt.forward_logits(bl.tensor(X), ts), y).backward()
    for a, b, t in zip(loop, hooks, ts):
        assert a.shape == (12, *t.shape)
        np.testing.assert_allclose(a, b, atol=1e-13)
        np.testing.assert_allclose(a.mean(axis=0), t.grad, atol=1e-13)


def test_sum_with_lr_over_b_equals_mean():
    X, y = bt.digits_batch(256)
    a = bt.sgd_run(X, y, batch=32, reduction="mean", lr=0.2, steps=10)
    b = bt.sgd_run(X, y, batch=32, reduction="sum", lr=0.2 / 32, steps=10)
    for p, q in zip(a["params"], b["params"]):
        np.testing.assert_allclose(p, q, atol=1e-13)
    assert a["loss"][-1] < a["loss"][0]


def test_sum_with_a_large_rate_stops_as_diverged():
    X, y = bt.digits_batch(256)
    run = bt.sgd_run(X, y, batch=128, reduction="sum", lr=1.0, steps=20)
    assert run["loss"][-1] == float("inf") and len(run["loss"]) < 21


def test_sgd_run_rejects_unknown_reduction():
    X, y = bt.digits_batch(16)
    with pytest.raises(ValueError, match="reduction must be"):
        bt.sgd_run(X, y, batch=4, reduction="avg")


def test_step_flops_follow_the_counter_convention():
    # forward: 2*B*(64*32 + 32*10) matmul + elementwise/reduction terms; backward: the first
    # product's input needs no gradient, so it is counted once
    B = 8
    sizes = (64, 32, 10)
    flops = bt.step_flops(sizes, B)
    matmul_fwd = 2 * B * (64 * 32 + 32 * 10)
    matmul_bwd = 2 * B * 64 * 32 + 2 * (2 * B * 32 * 10)
    assert flops > matmul_fwd + matmul_bwd
    assert flops < 1.2 * (matmul_fwd + matmul_bwd)


def test_step_intensity_grows_with_batch_and_starts_near_one_half():
    sizes = (256, 512, 512, 10)
    vals = [bt.step_intensity(sizes, b) for b in (1, 4, 16, 64, 256, 1024)]
    assert all(a < b for a, b in zip(vals, vals[1:]))
    assert 0.45 < vals[0] < 0.55


def test_time_step_and_clock_validation():
    assert bt.time_step(lambda: sum(range(1000)), repeats=2) >= 0
    with pytest.raises(ValueError, match="clock must be"):
        bt.time_step(lambda: None, clock="gpu")


def test_throughput_sweep_shapes():
    out = bt.throughput_sweep([1, 8], sizes=(16, 8, 4), repeats=1)
    assert len(out["gflops"]) == 2 and all(g > 0 for g in out["gflops"])


def test_cupy_sweep_without_gpu_says_why():
    ok = bl.backend_info().gpu_available
    if ok:
        pytest.skip("a GPU is present")
    with pytest.raises(bl.BackendError, match="cupy"):
        bt.throughput_sweep([1], sizes=(4, 4), backend="cupy")


def test_sgd_view_and_explorer():
    import itertools

    import matplotlib.pyplot as plt

    assert len(list(itertools.product(*bt.EXPLORER_CONTROLS.values()))) <= 40
    fig = bt.sgd_view(512, "sum", 1.0)  # a diverging run still draws
    assert len(fig.axes) == 2
    plt.close(fig)
    assert bt.sgd_explorer() is not None
