"""Chapter 6 helpers (backprop_lab.explore.reverse_mode): chain costs, measured Jacobian
costs of both modes, the memory of one pass, and the explorer's view."""

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab.explore import reverse_mode as rm

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def all_trees(i, j):
    if i == j:
        yield i
        return
    for k in range(i, j):
        for a in all_trees(i, k):
            for b in all_trees(k + 1, j):
                yield (a, b)


@pytest.mark.parametrize("dims", [[1, 10, 256, 256, 784], [3, 5, 2], [7, 1, 9, 4, 4, 2]])
def test_fixed_groupings_price_like_their_trees(dims):
    n = len(dims) - 1
    assert rm.flops_from_left(dims) == rm.tree_flops(dims, rm.left_tree(n))
    assert rm.flops_from_right(dims) == rm.tree_flops(dims, rm.right_tree(n))


def test_tree_flops_is_what_bl_count_counts():
    dims = [4, 6, 3, 5, 2]
    rng = np.random.default_rng(0)
    mats = [rng.normal(size=(a, b)) for a, b in zip(dims, dims[1:])]
    products = []
    for tree in all_trees(0, 3):
        with bl.count() as c:
            products.append(rm.multiply_chain(mats, tree).numpy())
        assert c.flops == rm.tree_flops(dims, tree)
    assert all(np.allclose(p, products[0]) for p in products)
    assert rm.tree_text(((0, 1), (2, 3))) == "(M1 M2) (M3 M4)"


@pytest.mark.parametrize(
    "tree, phrase",
    [((0, 2), "adjacent"), ((0, 1), "covers factors 0..1"), (5, "outside"), ((0, 1, 2), "pair")],
)
def test_tree_flops_names_a_malformed_tree(tree, phrase):
    with pytest.raises(ValueError, match=phrase):
        rm.tree_flops([2, 3, 4, 5], tree)


def test_jacobian_cost_counts_passes_and_flops_of_each_mode():
    n, m = 6, 3
    f = rm.mlp_function(n, m, depth=3, width=8, seed=1)
    x = np.random.default_rng(2).normal(size=n)
    fw = rm.jacobian_cost(f, x, "forward")
    rv = rm.jacobian_cost(f, x, "reverse")
    assert fw["jacobian"].shape == (m, n)
    assert np.allclose(fw["jacobian"], rv["jacobian"], atol=1e-12)
    assert (fw["calls"], fw["backward_passes"]) == (n, 0)
    assert (rv["calls"], rv["backward_passes"]) == (1, m)
    assert fw["flops"] * (m + 1) == rv["flops"] * 2 * n
    assert fw["saved_peak"] == 0 and fw["saved_activations"] == 0
    # reverse mode keeps one hidden vector per tanh layer (and the output of the last is
    # not saved): 2 tanh outputs of width 8
    assert rv["saved_activations"] == 2 * 8 * 8


def test_cost_grid_crossover_follows_2n_over_m_plus_1():
    grid = rm.cost_grid([1, 4, 16], depth=2, width=8)
    n, m = np.meshgrid(grid["sizes"], grid["sizes"], indexing="ij")
    assert np.allclose(grid["forward"] / grid["reverse"], 2 * n / (m + 1))
    fig = rm.crossover_figure(grid, n_fixed=4)
    assert len(fig.axes) == 3  # two panels and a colour bar


def test_pass_memory_forward_mode_is_flat_and_reverse_mode_grows():
    shallow = rm.pass_memory(2, batch=8, width=16)
    deep = rm.pass_memory(12, batch=8, width=16)
    assert shallow["forward_saved"] == deep["forward_saved"] == 0
    assert deep["reverse_saved"] > shallow["reverse_saved"]
    assert deep["forward_peak"] < 1.1 * shallow["forward_peak"]
    assert deep["reverse_peak"] - shallow["reverse_peak"] >= 10 * 8 * 16 * 8


def test_modes_figure_renders_every_explorer_view_quickly_enough():
    controls = rm.EXPLORER_CONTROLS
    n_views = np.prod([len(v) for v in controls.values()])
    assert n_views <= 40
    for n, m, depth in [(1, 64, 2), (64, 1, 8), (16, 16, 2)]:
        fig = rm.modes_figure(n, m, depth)
        assert len(fig.axes) == 3
        assert "forward" in fig.axes[0].get_xticklabels()[0].get_text()


def test_explorer_builds():
    from backprop_lab.explorer import Explorer

    ex = Explorer(rm.modes_figure, controls=rm.EXPLORER_CONTROLS, value={"n": 16, "m": 4})
    assert ex.value["depth"] == 2
