"""bl.compile: a recorded step replays its array calls, bit-identical to eager mode, and
never replays when it would not compute what eager mode computes."""

from __future__ import annotations

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab import nn, optim


def chain(x, c):
    h = x
    for _ in range(5):
        h = bl.sin(bl.tanh(h * c) + c)
    h.sum().backward()
    g = x.grad
    x.grad = None
    return g


def mlp_step(model, x, y):
    loss = bl.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    return loss, grads


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(4, 3)), rng.normal(size=(4, 3))


def test_chain_replay_is_bit_identical(data):
    xv, cv = data
    x, c = bl.tensor(xv, requires_grad=True), bl.tensor(cv)
    step = bl.compile(chain, fallback=False)
    expected = chain(x, c)
    for _ in range(3):
        np.testing.assert_array_equal(step(x, c), expected)
    assert step.stats == {"recordings": 1, "replays": 2, "eager": 0}
    assert "tanh" in step.source() and "def program" in step.source()
    assert x.grad is None


def test_mlp_step_with_parameter_updates_between_calls():
    rng = np.random.default_rng(1)
    x, y = bl.tensor(rng.normal(size=(8, 5))), rng.integers(0, 3, 8)
    eager_model, model = nn.MLP([5, 7, 3], seed=2), nn.MLP([5, 7, 3], seed=2)
    step = bl.compile(mlp_step, fallback=False)
    opts = [optim.SGD(m.parameters(), lr=0.1) for m in (eager_model, model)]
    for _ in range(4):
        l0, g0 = mlp_step(eager_model, x, y)
        l1, g1 = step(model, x, y)
        assert l0.item() == l1.item()
        for a, b in zip(g0, g1):
            np.testing.assert_array_equal(a, b)
        for opt, grads, m in zip(opts, (g0, g1), (eager_model, model)):
            for p, g in zip(m.parameters(), grads):
                p.grad = g
            opt.step()  # outside the compiled function: its program reads the new values
            opt.zero_grad()
    assert step.stats["replays"] == 3


def test_rnn_with_a_list_of_steps():
    rng = np.random.default_rng(3)
    steps = [bl.tensor(rng.normal(size=(2, 3))) for _ in range(6)]
    wx, wh = (bl.tensor(rng.normal(size=s) * 0.5, requires_grad=True) for s in ((3, 4), (4, 4)))

    def bptt(steps, wx, wh):
        h = bl.tensor(np.zeros((2, 4)))
        for xt in steps:
            h = bl.tanh(xt @ wx + h @ wh)
        (h * h).mean().backward()
        out = (wx.grad, wh.grad)
        wx.grad = wh.grad = None
        return out

    step = bl.compile(bptt, fallback=False)
    expected = bptt(steps, wx, wh)
    for _ in range(2):
        for a, b in zip(step(steps, wx, wh), expected):
            np.testing.assert_array_equal(a, b)


def test_a_new_shape_records_again(data):
    xv, cv = data
    step = bl.compile(chain, fallback=False)
    for shape in [(4, 3), (4, 3), (2, 3), (2, 3)]:
        x = bl.tensor(np.ones(shape) * 0.3, requires_grad=True)
        c = bl.tensor(np.full(shape, 0.7))
        np.testing.assert_array_equal(step(x, c), chain(x, c))
    assert step.stats == {"recordings": 2, "replays": 2, "eager": 0}


def test_a_python_branch_on_a_value_is_guarded():
    def f(x):
        s = (x * x).sum()
        y = s * 2.0 if s.item() > 1.0 else s * 3.0
        y.backward()
        g = x.grad
        x.grad = None
        return g

    step = bl.compile(f, fallback=False)
    big, small = np.array([1.0, 2.0]), np.array([0.1, 0.2])
    for v in [big, big, small, small, big]:
        x = bl.tensor(v, requires_grad=True)
        np.testing.assert_array_equal(step(x), f(bl.tensor(v, requires_grad=True)))
    assert step.stats["replays"] >= 2 and step.stats["recordings"] >= 2


def test_data_access_inside_runs_eagerly_and_says_why(data):
    xv, _ = data

    def update_inside(x):
        (x * x).sum().backward()
        x.data -= 0.1 * x.grad
        x.grad = None
        return x

    step = bl.compile(update_inside)
    x = bl.tensor(xv, requires_grad=True)
    with pytest.warns(UserWarning, match=r"\.data"):
        step(x)
    step(x)
    np.testing.assert_allclose(x.data, 0.8 * 0.8 * xv)  # x <- x - 0.1 * 2x, twice
    assert step.stats["eager"] == 1 and step.stats["recordings"] == 1
    assert "runs eagerly" in step.explain()
    strict = bl.compile(update_inside, fallback=False)
    with pytest.raises(bl.CompileError, match="data"):
        strict(bl.tensor(xv, requires_grad=True))


def test_hooks_and_returned_graphs_are_not_compiled(data):
    xv, _ = data

    def with_hook(x):
        y = x * 2.0
        y.register_hook(lambda g: g * 3.0)
        y.sum().backward()
        g = x.grad
        x.grad = None
        return g

    with pytest.raises(bl.CompileError, match="hooks"):
        bl.compile(with_hook, fallback=False)(bl.tensor(xv, requires_grad=True))
    with pytest.raises(bl.CompileError, match="graph"):
        bl.compile(lambda x: x * 2.0, fallback=False)(bl.tensor(xv, requires_grad=True))


def test_listeners_see_every_op_of_a_compiled_function(data):
    xv, cv = data
    x, c = bl.tensor(xv, requires_grad=True), bl.tensor(cv)
    step = bl.compile(chain, fallback=False)
    step(x, c)
    with bl.count() as counted:
        step(x, c)
    assert counted.forward_ops == 21 and counted.backward_ops == 21
    assert step.stats["eager"] == 1


def test_accumulating_into_an_existing_grad_runs_eagerly(data):
    xv, cv = data
    x, c = bl.tensor(xv, requires_grad=True), bl.tensor(cv)

    def accumulate(x, c):
        (x * c).sum().backward()
        return x.grad

    step = bl.compile(accumulate)
    step(x, c)  # x.grad was None: compiled
    with pytest.warns(UserWarning, match="not None"):
        g = step(x, c)  # a new signature (x.grad set): eager, and it adds up
    np.testing.assert_array_equal(g, 2 * cv)


def test_programs_per_function_are_bounded():
    step = bl.compile(lambda x: (x * 2.0).sum(), fallback=False)
    for n in range(1, 45):
        step(bl.tensor(np.ones(n)))
    assert len(step.entries) <= step.MAX_SIGNATURES
