"""Gradient checkpointing: same gradients, less saved memory."""

from __future__ import annotations

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab import nn
from backprop_lab.instrument.checkpoint import CheckpointOp
from backprop_lab.ops import REGISTRY


def deep_mlp(depth=8, width=16, dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    layers = []
    for _ in range(depth):
        layers.append(nn.Linear(width, width, init="he_normal", seed=rng, dtype=dtype))
        layers.append(nn.ReLU())
    return layers


def run(layers, x, y, segments=None):
    for layer in layers:
        for p in layer.parameters():
            p.grad = None
    with bl.measure_memory() as m:
        if segments is None:
            h = x
            for layer in layers:
                h = layer(h)
        else:
            h = bl.checkpoint_sequential(layers, segments, x)
        loss = bl.cross_entropy(h, y)
        loss.backward()
    grads = [np.array(p.grad) for layer in layers for p in layer.parameters()]
    return loss.item(), grads, m.peak


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("segments", [1, 2, 4, 16])
def test_checkpoint_sequential_gradients_exact(dtype, segments):
    layers = deep_mlp(dtype=dtype)
    rng = np.random.default_rng(1)
    x = bl.tensor(rng.normal(size=(12, 16)), dtype=dtype)
    y = rng.integers(0, 16, 12)
    loss0, g0, peak0 = run(layers, x, y)
    loss1, g1, peak1 = run(layers, x, y, segments)
    assert loss0 == loss1
    for a, b in zip(g0, g1):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    if segments > 1:
        assert peak1 < peak0


def test_checkpoint_input_gradient_and_leaf_inputs():
    rng = np.random.default_rng(2)
    w = bl.tensor(rng.normal(size=(4, 4)), requires_grad=True)
    xv = rng.normal(size=(3, 4))

    def block(h, scale):
        return bl.tanh(h @ w) * scale

    x0 = bl.tensor(xv, requires_grad=True)
    (block(x0, 2.0) ** 2).sum().backward()
    gx0, gw0 = np.array(x0.grad), np.array(w.grad)
    w.grad = None
    x1 = bl.tensor(xv, requires_grad=True)
    out = bl.checkpoint(block, x1, 2.0)
    assert isinstance(out.node.op, CheckpointOp)
    assert out.node.op.name not in REGISTRY
    (out**2).sum().backward()
    np.testing.assert_array_equal(x1.grad, gx0)
    np.testing.assert_array_equal(w.grad, gw0)


def test_checkpoint_saves_only_inputs():
    rng = np.random.default_rng(3)
    w = bl.tensor(rng.normal(size=(50, 50)), requires_grad=True)
    x = bl.tensor(rng.normal(size=(20, 50)))

    def block(h):
        for _ in range(5):
            h = bl.relu(h @ w)
        return h

    with bl.measure_memory() as m:
        out = bl.checkpoint(block, x)
    # the first segment gets a zero-size dummy input so that w still receives a gradient
    assert m.peak == x.data.nbytes
    out.sum().backward()
    assert w.grad is not None and np.any(w.grad != 0)


def test_checkpoint_under_no_grad_just_calls():
    x = bl.tensor([1.0, 2.0], requires_grad=True)
    with bl.no_grad():
        out = bl.checkpoint(lambda h: h * 2.0, x)
    assert out.node is None


def test_checkpoint_counts_recompute():
    layers = deep_mlp(depth=4)
    x = bl.tensor(np.ones((2, 16)))
    with bl.count() as c:
        bl.checkpoint_sequential(layers, 2, x).sum().backward()
    # 4 layers x 3 ops (matmul, add, relu); the first segment (2 layers) runs twice;
    # the checkpoint node itself is one more op (0 FLOPs), the sum another
    assert c.recompute_ops == 6
    assert c.forward_ops == 12 + 6 + 1 + 1
    assert c.per_op["checkpoint(segment)"] == [1, 0]
    assert c.backward_passes == 1


def test_checkpoint_is_not_replayed_but_traced():
    w = bl.tensor(np.eye(3), requires_grad=True)
    x = bl.tensor(np.ones((1, 3)), requires_grad=True)
    with bl.trace() as t:
        bl.checkpoint(lambda h: bl.tanh(h @ w), x).sum().backward()
    ck = [s for s in t.replay() if isinstance(s.op, CheckpointOp)]
    assert len(ck) == 1 and not ck[0].replayable
    with pytest.raises(RuntimeError):
        ck[0].vjp()
    assert any(ev.recompute for ev in t.forward)


def test_checkpoint_with_integer_tensor_and_constant_arguments():
    rng = np.random.default_rng(4)
    w = bl.tensor(rng.normal(size=(4, 3)), requires_grad=True)
    x = bl.tensor(rng.normal(size=(5, 4)))
    labels = bl.tensor(rng.integers(0, 3, 5))

    def head(h, y, scale):
        return bl.cross_entropy((h @ w) * scale, y)

    head(x, labels, 0.5).backward()
    g0 = np.array(w.grad)
    w.grad = None
    loss = bl.checkpoint(head, x, labels, 0.5)
    loss.backward()
    np.testing.assert_array_equal(w.grad, g0)
