"""Tracing, replay, fan-out, counters, memory accounting and hooks."""

from __future__ import annotations

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab import nn
from backprop_lab.instrument.counters import forward_flops
from backprop_lab.instrument.memory import saved_arrays
from backprop_lab.tensor import MODE, Node, Tensor


def small_graph():
    a = bl.tensor(2.0, requires_grad=True)
    b = bl.tensor(-3.0, requires_grad=True)
    a.name, b.name = "a", "b"
    with bl.trace() as t:
        e = a * b
        d = e + a  # a fans out to two ops
        f = bl.tanh(d) * d  # d fans out too
        f.backward()
    return t, a, b


def mlp_trace(seed=0):
    rng = np.random.default_rng(seed)
    x = bl.tensor(rng.normal(size=(8, 5)))
    y = rng.integers(0, 3, 8)
    model = nn.MLP([5, 7, 3], activation="tanh")
    with bl.trace() as t:
        loss = bl.cross_entropy(model(x), y)
        loss.backward()
    return t, model, loss


def test_listener_removed_after_block():
    with bl.trace():
        assert len(MODE.listeners) == 1
    assert MODE.listeners == ()


def test_forward_events_record_shapes_dtype_time_and_bytes():
    t, model, loss = mlp_trace()
    ops = [ev.op_name for ev in t.forward]
    assert ops == ["matmul", "add", "tanh", "matmul", "add", "cross_entropy"]
    first = t.forward[0]
    assert first.input_shapes == ((8, 5), (5, 7))
    assert first.output_shape == (8, 7)
    assert str(first.dtype) == "float64"
    assert first.seconds >= 0
    assert first.saved_bytes == 8 * 5 * 8 + 5 * 7 * 8  # x and W
    assert t.forward[1].saved_bytes == 0  # add saves shapes only
    assert first.label == "matmul#0"
    assert all(ev.backward is not None and ev.backward.seconds >= 0 for ev in t.forward)
    rows = t.rows()
    assert len(rows) == 6 and rows[2]["op"] == "tanh"
    assert "tanh#2" in t.table() and "<table>" in t._repr_html_()


def test_labels_use_tensor_names():
    x = bl.tensor([1.0, 2.0], requires_grad=True)
    with bl.trace() as t:
        h = x * x
        h.name = "h"
        h.sum().backward()
    assert t.forward[0].label == "h"
    assert t.label_of(x) == "leaf(2,)"
    assert t.replay()[1].input_labels == ("leaf(2,)", "leaf(2,)")


def test_unrecorded_forward_has_no_node():
    x = bl.tensor([1.0, 2.0])
    with bl.trace() as t:
        bl.exp(x)
    assert len(t.forward) == 1 and t.forward[0].node is None and t.backward == []


def test_backward_events_in_reverse_topological_order():
    t, model, loss = mlp_trace()
    order = [ev.node for ev in t.backward]
    position = {id(n): k for k, n in enumerate(order)}
    assert len(order) == 6
    for k, ev in enumerate(t.backward):
        for parent in ev.parents:
            if isinstance(parent, Node):
                # every consumer of a node is visited before the node itself
                assert position[id(parent)] > k
    seqs = [n.seq for n in order]
    assert seqs == sorted(seqs, reverse=True)


def test_fan_out_contributions_sum_to_accumulated_gradient():
    t, a, b = small_graph()
    upstream_of = {id(ev.node): ev.upstream for ev in t.backward}
    contributions = t.contributions()
    fan = t.fan_out()
    assert {row["target"] for row in fan} == {"add#1", "a"}
    for entry in contributions.values():
        target = entry["target"]
        total = sum(g for _, g in entry["parts"])
        if isinstance(target, Node):
            np.testing.assert_allclose(total, upstream_of[id(target)], rtol=0, atol=1e-15)
        else:
            np.testing.assert_allclose(total, target.grad, rtol=0, atol=1e-15)
    # the accumulate events the engine emitted carry the same parts
    acc = t.accumulations
    assert len(acc) == 2
    for ev in acc:
        parts = contributions[id(ev.target)]["parts"]
        assert ev.contribution is parts[1][1]
        np.testing.assert_allclose(ev.total, sum(g for _, g in parts))


def test_replay_products_equal_engine_gradients():
    t, model, loss = mlp_trace()
    steps = t.replay()
    assert [s.label for s in steps] == [ev.label for ev in reversed(t.forward)]
    for s in steps:
        again = s.vjp()
        for i, g in enumerate(s.downstream):
            if g is None:
                assert again[i] is None
                continue
            np.testing.assert_array_equal(again[i], g)
            j = s.local_jacobian(i)
            assert j.shape == (s.upstream.size, g.size)
            np.testing.assert_allclose(s.product(i), g, rtol=1e-12, atol=1e-14)
    # the gradients leaving the first matmul are the parameter gradients the engine stored
    first = steps[-1]
    np.testing.assert_array_equal(first.downstream[1], model.layers[0].W.grad)
    assert "downstream" in first.text() and "<table>" in first._repr_html_()


def test_replay_scalar_chain_numbers():
    x = bl.tensor(0.5, requires_grad=True)
    with bl.trace() as t:
        y = bl.sin(x * x)
        y.backward()
    s0, s1 = t.replay()
    assert float(s0.upstream) == 1.0
    np.testing.assert_allclose(float(s0.local_jacobian(0)[0, 0]), np.cos(0.25))
    np.testing.assert_allclose(float(s1.upstream), np.cos(0.25))
    np.testing.assert_allclose(float(s1.downstream[0]) + float(s1.downstream[1]), x.grad)


def test_leaf_values_survive_in_place_updates_and_grads_are_actual():
    t, model, loss = mlp_trace()
    w = model.layers[0].W
    w_before = np.array(t.forward[0].inputs[1])
    grad_before = np.array(w.grad)
    w.data -= 0.5 * w.grad  # an SGD step in place
    np.testing.assert_array_equal(t.forward[0].inputs[1], w_before)
    leaf = [ev for ev in t.leaf_grads if ev.leaf is w][0]
    np.testing.assert_array_equal(leaf.grad, grad_before)


def test_memory_peak_matches_independent_count():
    rng = np.random.default_rng(1)
    x = bl.tensor(rng.normal(size=(16, 10)))
    model = nn.MLP([10, 20, 20, 4], activation="relu")
    with bl.measure_memory() as m, bl.trace() as t:
        out = model(x)
        loss = (out * out).mean()
        # independent count: walk the graph, distinct saved arrays by id
        seen, stack, arrays = set(), [loss.node], {}
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            for a in saved_arrays(n.saved):
                arrays[id(a)] = a.nbytes
            stack.extend(p for p in n.parents if isinstance(p, Node))
        expected = sum(arrays.values())
        assert m.bytes == expected
        loss.backward()
    assert m.peak == expected
    assert m.bytes == 0  # every saved array released by backward
    tm = t.memory()
    assert tm.peak == expected and tm.timeline[-1] == 0
    assert max(m.timeline) == expected


def test_memory_counts_shared_array_once():
    x = bl.tensor(np.ones((100,)), requires_grad=True)
    with bl.measure_memory() as m:
        y = x * x  # mul saves (x, x): one array
    assert m.peak == 800
    del y


def test_counter_flops_convention():
    rng = np.random.default_rng(0)
    x = bl.tensor(rng.normal(size=(4, 3)))
    w = bl.tensor(rng.normal(size=(3, 5)), requires_grad=True)
    with bl.count() as c:
        h = x @ w  # 2*4*3*5 = 120
        r = bl.relu(h)  # 20
        loss = r.sum()  # 20
        loss.backward()
    assert c.forward_ops == 3 and c.backward_ops == 3
    assert c.forward_flops == 120 + 20 + 20
    # backward: matmul needs only w's gradient (120), relu 20, sum 20
    assert c.backward_flops == 120 + 20 + 20
    assert c.flops == 320
    assert c.backward_passes == 1
    assert c.per_op["matmul"] == [1, 120]
    assert forward_flops(bl.REGISTRY["reshape"], (x,), x) == 0


def test_counter_forward_vs_reverse_mode_jacobian():
    def f(x):
        return bl.tanh(x * 2.0).sum()

    x = np.linspace(-1, 1, 6)
    with bl.count() as rev:
        bl.jacobian(f, mode="reverse")(x)
    with bl.count() as fwd:
        bl.jacobian(f, mode="forward")(x)
    assert rev.backward_passes == 1 and rev.tangent_ops == 0
    assert fwd.backward_passes == 0 and fwd.tangent_ops == 3 * 6
    assert fwd.tangent_flops > 0 and fwd.backward_flops == 0


def test_counter_counts_passes_and_tracked_calls():
    def f(x):
        return (x * x).sum()

    with bl.count() as c:
        tracked = c.track(f)
        g = bl.grad(tracked)
        for _ in range(3):
            g(np.ones(4))
        xs = np.ones(4)
        for k in range(4):  # central differences: 2 evaluations per input
            for s in (1, -1):
                e = xs.copy()
                e[k] += s * 1e-6
                tracked(bl.tensor(e))
    assert c.backward_passes == 3
    assert c.forward_passes == 3 + 8


def test_counter_counts_repeated_backward_on_retained_graph():
    x = bl.tensor([1.0, 2.0], requires_grad=True)
    with bl.count() as c:
        y = (x * x).sum()
        y.backward(retain_graph=True)
        y.backward()
    assert c.backward_passes == 2 and c.backward_ops == 4


def test_tensor_register_hook_sees_and_replaces_gradient():
    x = bl.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    h = x * 3.0
    remove = h.register_hook(lambda g: seen.append(np.array(g)) or g * 10)
    (h * h).sum().backward()
    np.testing.assert_allclose(seen[0], [6.0, 12.0])
    np.testing.assert_allclose(x.grad, [180.0, 360.0])
    remove()
    x.grad = None
    h2 = x * 3.0
    (h2 * h2).sum().backward()
    np.testing.assert_allclose(x.grad, [18.0, 36.0])
    leaf_seen = []
    x.register_hook(lambda g: leaf_seen.append(np.array(g)))
    x.grad = None
    (x * x).sum().backward()
    np.testing.assert_allclose(leaf_seen[0], [2.0, 4.0])
    with pytest.raises(RuntimeError):
        bl.tensor(1.0).register_hook(lambda g: g)


def test_module_forward_and_backward_hooks():
    model = nn.MLP([3, 4, 2], activation="relu")
    x = bl.tensor(np.arange(6.0).reshape(2, 3))
    fwd, bwd = [], []
    first = model.layers[0]
    r1 = first.register_forward_hook(lambda m, inputs, out: fwd.append((m, inputs, out)))
    r2 = first.register_full_backward_hook(lambda m, g: bwd.append((m, np.array(g))))
    with bl.trace() as t:
        out = model(x)
        out.sum().backward()
    assert len(fwd) == 1 and fwd[0][0] is first and fwd[0][1][0] is x
    assert isinstance(fwd[0][2], Tensor) and fwd[0][2].shape == (2, 4)
    assert len(bwd) == 1 and bwd[0][1].shape == (2, 4)
    # the hook saw the upstream gradient that reached the first layer's output (its add)
    add_ev = [ev for ev in t.backward if ev.forward is t.forward[1]][0]
    np.testing.assert_array_equal(bwd[0][1], add_ev.upstream)
    r1()
    r2()
    model(x).sum().backward()
    assert len(fwd) == 1 and len(bwd) == 1


def test_counter_and_trace_cost_nothing_when_inactive():
    assert MODE.listeners == ()
    with bl.count():
        pass
    with bl.measure_memory():
        pass
    assert MODE.listeners == ()


def test_instruments_on_array_api_strict_backend():
    pytest.importorskip("array_api_strict")
    with bl.use_backend("array_api_strict"):
        x = bl.tensor([0.5, -0.3], requires_grad=True)
        w = bl.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
        with bl.trace() as t, bl.count() as c, bl.measure_memory() as m, bl.detect_anomaly():
            y = bl.checkpoint(lambda h: bl.tanh(h @ w), x)
            (y * y).sum().backward()
        assert m.peak == 16 + 32 + 16 and m.bytes == 0  # x, w, tanh output (recomputed)
        assert c.backward_passes == 1
        for s in t.replay():
            for i, g in enumerate(s.downstream):
                if g is not None and s.replayable:
                    np.testing.assert_allclose(bl.to_numpy(s.product(i)), bl.to_numpy(g))
        assert "mul#" in t.draw().svg
