"""Property tests: on random graphs with fan-out, the trace's bookkeeping is exact."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import backprop_lab as bl
from backprop_lab.instrument.memory import saved_arrays
from backprop_lab.tensor import Node

UNARY = [bl.tanh, bl.sin, bl.sigmoid, bl.exp]
BINARY = [lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a - b]

program = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 100), st.integers(0, 100)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(program, st.integers(0, 2**16))
def test_random_graph_trace_invariants(prog, seed):
    rng = np.random.default_rng(seed)
    leaves = [bl.tensor(rng.normal(size=(3,)) * 0.5, requires_grad=True) for _ in range(3)]
    with bl.trace() as t, bl.measure_memory() as m:
        values = list(leaves)
        for kind, i, j in prog:
            a = values[i % len(values)]
            b = values[j % len(values)]
            if kind < 4:
                values.append(UNARY[kind](a))
            else:
                values.append(BINARY[kind - 4](a, b))
        out = values[-1]
        if out.node is None:  # the program only read a leaf
            return
        root = out.sum()
        peak_expected = m.bytes
        root.backward()
    # reverse topological order: strictly decreasing creation order
    seqs = [ev.node.seq for ev in t.backward]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
    # fan-out: the contributions to each target sum to what it received
    upstream = {id(ev.node): ev.upstream for ev in t.backward}
    for entry in t.contributions().values():
        total = entry["parts"][0][1]
        for _, g in entry["parts"][1:]:
            total = total + g
        target = entry["target"]
        got = upstream[id(target)] if isinstance(target, Node) else target.grad
        np.testing.assert_allclose(total, got, rtol=1e-12, atol=1e-12)
    # replay: the VJP rule on the recorded upstream reproduces the engine's gradients
    for step in t.replay():
        for i, g in enumerate(step.downstream):
            if g is not None:
                np.testing.assert_array_equal(step.vjp()[i], g)
                np.testing.assert_allclose(step.product(i), g, rtol=1e-10, atol=1e-12)
    # memory: everything recorded was saved; backward releases what it visited, and nodes
    # off the path to the output (still alive in ``values``) keep their arrays
    assert m.peak == peak_expected
    left = {}
    for ev in t.forward:
        if ev.node is not None and ev.backward is None:
            left.update({id(a): a.nbytes for a in saved_arrays(ev.saved)})
    assert m.bytes == sum(left.values())
    assert t.memory().peak == m.peak
