"""Chapter 7 helpers (backprop_lab.explore.computational_graph): the traced chapter 4
network, graph structure read from a trace, paths against the backward pass, memory."""

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab.explore import computational_graph as cg

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def test_chapter4_trace_names_what_each_node_saved():
    tr = cg.chapter4_trace()
    rows = {r["node"]: r for r in cg.saved_rows(tr)}
    assert [who for who, _ in rows["XW1"]["saved"]] == ["X", "W1"]
    assert rows["H"]["saved"] == [("its output", (4, 5))]
    assert rows["Z"]["saved"] == [] and rows["Z"]["bytes"] == 0
    # the name in brackets on every node agrees with what the node really saved
    for ev in tr.forward:
        bracket = ev.label.split(" [")[1].rstrip("]")
        assert (bracket == "nothing") == (rows[ev.label.split(" [")[0]]["bytes"] == 0)
    assert cg.check_reverse_topological(tr)
    assert "XW1 [X, W1]" in bl.draw_graph(tr).svg


def test_consumers_count_every_use():
    with bl.trace() as tr:
        x = bl.tensor(0.3, requires_grad=True)
        y = x * x + bl.sin(x)
        y.backward()
    uses = cg.consumers(tr)
    assert len(uses[id(x)]) == 3  # twice in x * x, once in sin


def test_reverse_topological_check_catches_a_bad_order():
    tr = cg.chapter4_trace()
    tr._bwd = [tr._bwd[1], tr._bwd[0], *tr._bwd[2:]]  # visit sum before the loss node
    assert not cg.check_reverse_topological(tr)


@pytest.mark.parametrize("depth", [1, 3, 7])
def test_path_sum_equals_backward_and_counts_paths(depth):
    x = bl.tensor(0.9, requires_grad=True)
    with bl.count() as c:
        cg.diamond_chain(x, depth).backward()
    grad, paths, mults = cg.path_sum_gradient(0.9, depth)
    assert np.isclose(grad, float(x.grad), rtol=1e-12)
    assert paths == 2**depth and mults == depth * 2**depth
    assert c.backward_ops == 3 * depth
    assert np.isclose(cg.diamond_chain(0.9, depth), float(cg.diamond_chain(bl.tensor(0.9), depth)))


def test_mlp_memory_splits_the_peak_and_grows_linearly_with_depth():
    r4 = cg.mlp_memory(4, batch=8, width=16)
    r6 = cg.mlp_memory(6, batch=8, width=16)
    assert r4["activations"] + r4["weights"] == r4["peak"]
    assert r6["activations"] - r4["activations"] == 2 * 8 * 16 * 8
    assert r6["weights"] - r4["weights"] == 2 * 16 * 16 * 8
    assert r4["timeline"][-1] == 0 and max(r4["timeline"]) == r4["peak"]
    assert sum(a + w for _, a, w in r4["per_node"]) == r4["peak"]


def test_memory_figure_and_growth_figure_render():
    n_views = np.prod([len(v) for v in cg.EXPLORER_CONTROLS.values()])
    assert n_views <= 40
    fig = cg.memory_figure(2, 1, 16)
    assert len(fig.axes) == 2
    data = cg.growth_data(
        {"depth": 2, "batch": 4, "width": 8}, {"depth": [2, 3], "batch": [1, 2], "width": [4, 8]}
    )
    assert data["depth"][3][0] - data["depth"][2][0] == 4 * 8 * 8  # one more activation
    assert data["batch"][1][1] < data["batch"][2][1]  # the input batch is a leaf array
    fig = cg.growth_figure(data)
    assert len(fig.axes) == 3
