"""Chapter 11's helpers (backprop_lab.explore.checkpointing): memory timeline, checkpointed
steps, the NumPy stack of Exercise 11.1, and the explorer's figures."""

import math

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab import numdiff
from backprop_lab.explore import checkpointing as ck

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


@pytest.mark.parametrize("L,B,w", [(1, 3, 2), (5, 4, 3), (12, 2, 6)])
def test_timeline_counts_activations_only(L, B, w):
    """The meter counts inputs and weights too; the timeline exactly 8 L B w bytes."""
    _, layers = ck.relu_stack(L, w)
    X = bl.tensor(np.random.default_rng(0).normal(size=(B, w)))
    with bl.measure_memory() as meter, ck.MemoryTimeline() as tl:
        ck.run_step(layers, X)
    assert meter.peak == 8 * ((L + 1) * B * w + L * w * w)
    assert tl.peak == 8 * L * B * w
    assert tl.timeline[-1] == 0  # everything freed after backward
    assert len(tl.phases) == len(tl.timeline)
    assert set(tl.phases) == {"forward", "backward"}


def test_timeline_counts_plain_arrays_passed_to_ops_as_inputs():
    W = bl.tensor(np.ones((3, 3)), requires_grad=True)
    R = np.ones((2, 3))  # a constant array operand: not an activation
    with ck.MemoryTimeline() as tl:
        h = bl.tanh(bl.tensor(np.ones((2, 3))) @ W)
        bl.sum(h * R).backward()
    assert tl.peak == h.data.nbytes
    with ck.MemoryTimeline(count_inputs=True) as all_:
        h = bl.tanh(bl.tensor(np.ones((2, 3))) @ W)
        bl.sum(h * R).backward()
    assert all_.peak > tl.peak


@pytest.mark.parametrize("L,segments", [(8, 2), (10, 3), (16, 5), (9, 9), (6, 20)])
def test_checkpointed_step_same_gradients_less_memory(L, segments):
    plain = ck.measure(L, width=3, batch=2)
    ckpt = ck.measure(L, width=3, batch=2, segments=segments)
    for g, h in zip(plain.grads, ckpt.grads):
        assert np.array_equal(g, h)
    assert ckpt.peak_activations <= plain.peak_activations
    chunks = ck.chunk_sizes(L, segments)
    assert sum(chunks) == L
    # every chunk but the last is recomputed exactly once (a layer: matmul 2Bw^2, relu Bw)
    layer_flops = 2 * 2 * 3 * 3 + 2 * 3
    expected = (L - chunks[-1]) * layer_flops if len(chunks) > 1 else 0
    assert ckpt.recompute_flops == expected
    assert ckpt.forward_flops == plain.forward_flops
    assert ckpt.backward_flops == plain.backward_flops
    if len(chunks) > 1:
        assert "recompute" in ckpt.phases
        first = ckpt.phases.index("recompute")
        assert "backward" in ckpt.phases[:first]  # recomputation happens inside backward


def test_chunk_sizes_follow_checkpoint_sequential():
    assert ck.chunk_sizes(16, 5) == [4, 4, 4, 4]  # fewer chunks than segments
    assert ck.chunk_sizes(10, 3) == [4, 4, 2]
    assert ck.chunk_sizes(7, 1) == [7]
    assert ck.chunk_sizes(3, 10) == [1, 1, 1]


@pytest.mark.parametrize("L", [2, 7, 16, 64])
def test_recursive_checkpointing_log_memory(L):
    plain = ck.measure(L, width=2, batch=2)
    rec = ck.measure(L, width=2, batch=2, recursive=True)
    for g, h in zip(plain.grads, rec.grads):
        assert np.array_equal(g, h)
    assert rec.peak_activations <= math.ceil(math.log2(L)) + 1
    assert rec.recompute_passes <= math.log2(L) / 2 + 1e-9


def test_saved_table_shows_what_each_node_keeps():
    rows = ck.saved_table(depth=2, width=3, batch=2)
    assert [op for op, _ in rows] == ["matmul", "relu", "matmul", "relu", "mul", "sum"]
    assert "the input batch" in rows[0][1] and "a weight" in rows[0][1]
    assert rows[1][1] == "2x3 (new activation)"
    assert "already kept" in rows[2][1]
    assert rows[-1][1] == "nothing"


def test_numpy_stack_backward_is_the_layer_gradient():
    net = ck.numpy_stack(depth=1, width=3, batch=4, seed=1)
    x, W, g = net.x, net.weights[0], net.upstream
    h = net.forward(0, x)
    gx, gW = net.backward(0, g, x, h)
    want_x = numdiff.numerical_vjp(lambda a: np.maximum(a @ W, 0.0), [x], g)[0]
    want_W = numdiff.numerical_vjp(lambda a: np.maximum(x @ a, 0.0), [W.copy()], g)[0]
    np.testing.assert_allclose(gx, want_x, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gW, want_W, rtol=1e-6, atol=1e-8)
    assert net.forward_calls == 1 and net.backward_calls == 1


def test_plain_backward_matches_engine():
    net = ck.numpy_stack(depth=5, width=4, batch=3, seed=2)
    dx, dWs = ck.plain_backward(net.x, net.n_layers, net.forward, net.backward, net.upstream)
    xt = bl.tensor(net.x, requires_grad=True)
    Ws = [bl.tensor(W, requires_grad=True) for W in net.weights]
    h = xt
    for W in Ws:
        h = bl.relu(h @ W)
    bl.sum(h * net.upstream).backward()
    np.testing.assert_allclose(dx, xt.grad, rtol=1e-12, atol=1e-12)
    for got, W in zip(dWs, Ws):
        np.testing.assert_allclose(got, W.grad, rtol=1e-12, atol=1e-12)
    assert net.forward_calls == 5


def test_time_steps_reports_every_config():
    t = ck.time_steps(4, 8, 4, ["forward", None, 2, "recursive"], repeats=2)
    assert set(t) == {"forward", None, 2, "recursive"}
    assert all(v > 0 for v in t.values())


@pytest.mark.parametrize("depth,segments", [(8, 16), (16, 4), (64, 1), (64, 16)])
def test_timeline_figure_renders(depth, segments):
    import matplotlib.pyplot as plt

    fig = ck.timeline_figure(depth=depth, segments=segments)
    title = fig.axes[0].get_title()
    assert f"{depth} layers" in title and "peak" in title
    plt.close(fig)


def test_sweep_figure_renders():
    import matplotlib.pyplot as plt

    rows = [{"k": k, "peak": 8 / k + k, "flops": 1.2, "seconds": 1.3} for k in (1, 2, 4, 8)]
    fig = ck.sweep_figure(rows, depth=8)
    assert len(fig.axes) == 2
    plt.close(fig)
