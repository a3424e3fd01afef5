"""Why reverse mode (chapter 6): the cost of a Jacobian, measured in passes, FLOPs and bytes.

* Chains of matrices. A chain ``M_1 M_2 ... M_N`` is described by its dimensions
  ``dims = (p_0, p_1, ..., p_N)``: factor ``i`` (counted from 1) has shape
  ``(p_{i-1}, p_i)``. In a Jacobian chain the leftmost factor is the loss side.
  :func:`flops_from_left` and :func:`flops_from_right` give the cost of the two fixed
  groupings, :func:`tree_flops` the cost of any grouping written as a nested tuple
  (``((0, 1), 2)`` is ``(M_1 M_2) M_3``), :func:`multiply_chain` multiplies real matrices in
  a given grouping with the engine so that ``bl.count`` can confirm the arithmetic.
* Full Jacobians of an MLP ``R^n -> R^m``: :func:`mlp_function` builds one,
  :func:`jacobian_cost` measures the engine's ``bl.jacobian`` in forward mode (one JVP per
  input) and in reverse mode (one VJP per output): passes, FLOPs, saved bytes.
  :func:`cost_grid` and :func:`crossover_figure` map the winner over ``(n, m)``.
* Memory: :func:`pass_memory` measures one JVP and one VJP of a deep MLP on a batch with
  ``tracemalloc`` (every byte NumPy allocates) and with ``bl.measure_memory`` (what the graph
  saves); :func:`memory_figure` plots both against depth.
* :func:`modes_figure` is the chapter's explorer view: passes, FLOPs and stored bytes of each
  mode for chosen ``n``, ``m`` and depth.

FLOPs follow ``bl.count``'s convention: ``2 m k n`` for an ``(m, k) @ (k, n)`` product.
matplotlib is imported inside the functions that draw.
"""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import backprop_lab as bl

__all__ = [
    "flops_from_left",
    "flops_from_right",
    "tree_flops",
    "tree_text",
    "multiply_chain",
    "mlp_function",
    "jacobian_cost",
    "cost_grid",
    "crossover_figure",
    "pass_memory",
    "memory_figure",
    "modes_figure",
    "EXPLORER_CONTROLS",
]


# --------------------------------------------------------------------------------------
# Chains of matrices
# --------------------------------------------------------------------------------------
def _check_dims(dims: Sequence[int]) -> list[int]:
    dims = [int(p) for p in dims]
    if len(dims) < 2 or min(dims) < 1:
        raise ValueError(f"dims must list at least two positive sizes (p_0, ..., p_N), got {dims}")
    return dims


def flops_from_left(dims: Sequence[int]) -> int:
    """FLOPs of ``((M_1 M_2) M_3) ...``: the running product starts at the left end.

    Every step multiplies a ``(p_0, p_{i-1})`` running product by ``M_i``, so the cost is
    ``sum_i 2 p_0 p_{i-1} p_i`` for ``i = 2..N``. With ``p_0 = 1`` (a scalar loss on the
    left) every step is a row vector times a matrix.
    """
    p = _check_dims(dims)
    return sum(2 * p[0] * p[i - 1] * p[i] for i in range(2, len(p)))


def flops_from_right(dims: Sequence[int]) -> int:
    """FLOPs of ``M_1 (M_2 (... M_N))``: the running product starts at the right end.

    Every step multiplies ``M_i`` by a ``(p_i, p_N)`` running product, costing
    ``2 p_{i-1} p_i p_N`` for ``i = 1..N-1``.
    """
    p = _check_dims(dims)
    n = len(p) - 1
    return sum(2 * p[i - 1] * p[i] * p[n] for i in range(1, n))


def _tree_span(tree: Any, n: int) -> tuple[int, int]:
    """(first, last) factor index covered by ``tree``; raises on a malformed tree."""
    if isinstance(tree, (int, np.integer)) and not isinstance(tree, bool):
        if not 0 <= int(tree) < n:
            raise ValueError(f"factor index {tree} is outside 0..{n - 1}")
        return int(tree), int(tree)
    if not isinstance(tree, (tuple, list)) or len(tree) != 2:
        raise ValueError(
            f"a grouping is a factor index or a pair (left, right) of groupings, got {tree!r}"
        )
    a0, a1 = _tree_span(tree[0], n)
    b0, b1 = _tree_span(tree[1], n)
    if b0 != a1 + 1:
        raise ValueError(
            f"the pair {tree!r} does not multiply adjacent blocks: the left block ends at "
            f"factor {a1} and the right one starts at {b0}"
        )
    return a0, b1


def tree_flops(dims: Sequence[int], tree: Any) -> int:
    """FLOPs of multiplying the chain in the grouping ``tree`` (factor indices from 0).

    ``tree`` is a nested pair: ``((0, 1), 2)`` means ``(M_1 M_2) M_3``. It must cover every
    factor exactly once, in order.
    """
    p = _check_dims(dims)
    n = len(p) - 1
    first, last = _tree_span(tree, n)
    if (first, last) != (0, n - 1):
        raise ValueError(f"the grouping covers factors {first}..{last}, not all of 0..{n - 1}")

    def cost(t: Any) -> tuple[int, int, int]:  # (flops, rows, cols)
        if not isinstance(t, (tuple, list)):
            return 0, p[int(t)], p[int(t) + 1]
        fa, ra, ca = cost(t[0])
        fb, rb, cb = cost(t[1])
        return fa + fb + 2 * ra * ca * cb, ra, cb

    return cost(tree)[0]


def tree_text(tree: Any, names: Sequence[str] | None = None) -> str:
    """The grouping written with parentheses, e.g. ``(J1 J2) J3``."""

    def name(i: int) -> str:
        return names[i] if names is not None else f"M{i + 1}"

    def text(t: Any, top: bool) -> str:
        if not isinstance(t, (tuple, list)):
            return name(int(t))
        inner = f"{text(t[0], False)} {text(t[1], False)}"
        return inner if top else f"({inner})"

    return text(tree, True)


def left_tree(n: int) -> Any:
    """The grouping ``((0, 1), 2) ...`` of n factors."""
    t: Any = 0
    for i in range(1, n):
        t = (t, i)
    return t


def right_tree(n: int) -> Any:
    """The grouping ``0, (1, (2, ...))`` of n factors."""
    t: Any = n - 1
    for i in range(n - 2, -1, -1):
        t = (i, t)
    return t


def multiply_chain(mats: Sequence[Any], tree: Any) -> Any:
    """Multiply engine tensors (or arrays) in the grouping ``tree`` with ``bl.matmul``."""

    def mul(t: Any) -> Any:
        if not isinstance(t, (tuple, list)):
            m = mats[int(t)]
            return m if isinstance(m, bl.Tensor) else bl.tensor(m)
        return bl.matmul(mul(t[0]), mul(t[1]))

    return mul(tree)


# --------------------------------------------------------------------------------------
# Full Jacobians of an MLP, measured
# --------------------------------------------------------------------------------------
def mlp_function(
    n: int, m: int, depth: int = 3, width: int = 32, seed: int = 0
) -> Callable[[Any], Any]:
    """A tanh MLP ``R^n -> R^m`` with ``depth`` linear layers of hidden width ``width``.

    The weights are fixed constants (no gradient is asked of them), scaled by
    ``1/sqrt(fan_in)``; the returned function takes a Tensor of shape ``(n,)`` (or a batch
    ``(B, n)``) and returns shape ``(m,)`` (or ``(B, m)``).
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    rng = np.random.default_rng(seed)
    dims = [n] + [width] * (depth - 1) + [m]
    weights = [bl.tensor(rng.normal(size=(a, b)) / np.sqrt(a)) for a, b in zip(dims, dims[1:])]
    biases = [bl.tensor(0.1 * rng.normal(size=b)) for b in dims[1:]]

    def f(x: Any) -> Any:
        h = x
        for i, (w, b) in enumerate(zip(weights, biases)):
            h = h @ w + b
            if i < depth - 1:
                h = bl.tanh(h)
        return h

    f.__name__ = f"mlp_{n}_to_{m}_depth{depth}"
    return f


def _leaf_array_ids(tr: Any) -> set[int]:
    """ids of the arrays held by leaf tensors (inputs, weights) that the trace saw."""
    ids = set()
    for ev in tr.forward:
        for a in ev.args:
            if isinstance(a, bl.Tensor) and a.is_leaf:
                ids.add(id(a.data))
    return ids


def _saved_split(tr: Any) -> tuple[int, int]:
    """(bytes of arrays the forward pass created and saved, bytes of leaf arrays saved)."""
    from backprop_lab.instrument.memory import nbytes, saved_arrays

    leaves = _leaf_array_ids(tr)
    seen: dict[int, tuple[bool, int]] = {}
    for ev in tr.forward:
        if ev.node is None:
            continue
        for a in saved_arrays(ev.saved):
            seen[id(a)] = (id(a) in leaves, nbytes(a))
    made = sum(b for leaf, b in seen.values() if not leaf)
    held = sum(b for leaf, b in seen.values() if leaf)
    return made, held


def jacobian_cost(
    f: Callable[[Any], Any], x: Any, mode: str, memory: bool = True
) -> dict[str, Any]:
    """Build the full Jacobian of ``f`` at ``x`` with ``bl.jacobian(f, mode)`` and measure it.

    Returns ``jacobian`` (the matrix), ``calls`` (how often ``f`` ran: each call is one pass
    forward, carrying a tangent in forward mode), ``backward_passes``, ``flops`` (all of
    them: forward, backward and tangent) and its parts. With ``memory=True`` (the default)
    also ``saved_peak`` (bytes the recorded graph held at its peak, ``bl.measure_memory``)
    and ``saved_activations`` (the part of it that the forward pass created, as opposed to
    inputs and weights it merely points to).
    """
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        c = stack.enter_context(bl.count())
        if memory:
            mem = stack.enter_context(bl.measure_memory())
            tr = stack.enter_context(bl.trace())
        jac = bl.jacobian(c.track(f), mode=mode)(x)
    if memory:
        out["saved_peak"] = mem.peak
        out["saved_activations"] = _saved_split(tr)[0]
    out.update(
        jacobian=np.asarray(jac),
        calls=c.forward_passes,
        backward_passes=c.backward_passes,
        flops=c.flops,
        forward_flops=c.forward_flops,
        backward_flops=c.backward_flops,
        tangent_flops=c.tangent_flops,
    )
    return out


def cost_grid(
    sizes: Sequence[int], depth: int = 3, width: int = 32, seed: int = 0
) -> dict[str, np.ndarray]:
    """FLOPs of the full Jacobian in each mode for every ``(n, m)`` in ``sizes x sizes``.

    Returns ``sizes`` and the arrays ``forward`` and ``reverse`` indexed ``[i_n, i_m]``.
    """
    sizes = [int(s) for s in sizes]
    fwd = np.zeros((len(sizes), len(sizes)), dtype=np.int64)
    rev = np.zeros_like(fwd)
    rng = np.random.default_rng(seed)
    for i, n in enumerate(sizes):
        x = rng.normal(size=n)
        for j, m in enumerate(sizes):
            f = mlp_function(n, m, depth, width, seed)
            fwd[i, j] = jacobian_cost(f, x, "forward", memory=False)["flops"]
            rev[i, j] = jacobian_cost(f, x, "reverse", memory=False)["flops"]
    return {"sizes": np.array(sizes), "forward": fwd, "reverse": rev}


def crossover_figure(grid: dict[str, np.ndarray], n_fixed: int) -> Any:
    """Left: FLOPs against m for inputs ``n_fixed``; right: which mode wins over (n, m)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    sizes = grid["sizes"]
    fwd, rev = grid["forward"].astype(float), grid["reverse"].astype(float)
    i = int(np.flatnonzero(sizes == n_fixed)[0])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(7.0, 3.4))
    ax.loglog(sizes, fwd[i], "o-", color="#4c78a8", label=f"forward mode ({n_fixed} JVPs)")
    ax.loglog(sizes, rev[i], "s-", color="#e45756", label="reverse mode (m VJPs)")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlabel("outputs m")
    ax.set_ylabel("FLOPs for the full Jacobian")
    ax.set_title(f"n = {n_fixed} inputs", fontsize=10)
    ax.legend(fontsize=8)
    ratio = np.log2(fwd / rev)
    lim = float(np.max(np.abs(ratio)))
    im = ax2.imshow(
        ratio.T, origin="lower", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim), aspect="auto"
    )
    ax2.contour(ratio.T, levels=[0.0], colors="k", linewidths=1.2)
    ax2.plot([0, len(sizes) - 1], [0, len(sizes) - 1], "--", color="gray", lw=0.8)
    ax2.text(len(sizes) - 1.2, 0.3, "reverse\ncheaper", ha="right", va="bottom", fontsize=8)
    ax2.text(0.2, len(sizes) - 1.3, "forward\ncheaper", ha="left", va="top", fontsize=8)
    ax2.set_xticks(range(len(sizes)))
    ax2.set_xticklabels([str(s) for s in sizes])
    ax2.set_yticks(range(len(sizes)))
    ax2.set_yticklabels([str(s) for s in sizes])
    ax2.set_xlabel("inputs n")
    ax2.set_ylabel("outputs m")
    ax2.set_title("log2(forward FLOPs / reverse FLOPs)", fontsize=10)
    fig.colorbar(im, ax=ax2, fraction=0.05)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# Memory of one pass
# --------------------------------------------------------------------------------------
def pass_memory(depth: int, batch: int = 64, width: int = 128, seed: int = 0) -> dict[str, int]:
    """Memory of one JVP and one VJP of a scalar-valued tanh MLP on a batch.

    ``*_peak`` is the peak of NumPy allocations during the pass beyond what existed before
    (``tracemalloc``, so every temporary counts); ``*_saved`` is the peak of what the
    recorded graph saved for backward (``bl.measure_memory``; weights it points to count).
    """
    f_vec = mlp_function(width, width, depth, width, seed)

    def f(x: Any) -> Any:
        return bl.sum(f_vec(x))

    x = np.random.default_rng(seed + 1).normal(size=(batch, width))
    tangent = np.ones_like(x)
    out: dict[str, int] = {}
    for mode in ("forward", "reverse"):
        was_tracing = tracemalloc.is_tracing()
        if not was_tracing:
            tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with bl.measure_memory() as mem:
            if mode == "forward":
                result = bl.jvp(f, (x,), (tangent,))
            else:
                value, pullback = bl.vjp(f, x)
                result = pullback(np.ones(()))
        peak = tracemalloc.get_traced_memory()[1] - base
        if not was_tracing:
            tracemalloc.stop()
        del result
        out[f"{mode}_peak"] = int(peak)
        out[f"{mode}_saved"] = int(mem.peak)
    return out


def memory_figure(depths: Sequence[int], rows: Sequence[dict[str, int]], batch: int,
                  width: int) -> Any:  # fmt: skip
    """Peak bytes of one JVP and one VJP against depth (from :func:`pass_memory` rows)."""
    import matplotlib.pyplot as plt

    kb = 1 / 1024
    fig, ax = plt.subplots(figsize=(6.5, 3.3))
    fwd = [r["forward_peak"] * kb for r in rows]
    rev = [r["reverse_peak"] * kb for r in rows]
    ax.plot(depths, fwd, "o-", color="#4c78a8", label="forward mode: one JVP")
    ax.plot(depths, rev, "s-", color="#e45756", label="reverse mode: one VJP")
    act = batch * width * 8 * kb
    ax.plot(
        depths,
        [rev[0] + act * (d - depths[0]) for d in depths],
        ":",
        color="gray",
        label=f"+ one {batch}x{width} float64 activation per layer",
    )
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("peak memory allocated (KiB)")
    ax.set_title(f"batch {batch}, width {width}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# The explorer
# --------------------------------------------------------------------------------------
EXPLORER_CONTROLS = {"n": [1, 4, 16, 64], "m": [1, 4, 16, 64], "depth": [2, 8]}


def modes_figure(n: int, m: int, depth: int, width: int = 32) -> Any:
    """Passes, FLOPs and bytes kept for backward, forward mode against reverse mode, for
    the full Jacobian of a tanh MLP ``R^n -> R^m`` of the given depth (hidden width 32)."""
    from matplotlib.figure import Figure

    f = mlp_function(n, m, depth, width)
    x = np.random.default_rng(1).normal(size=n)
    fw = jacobian_cost(f, x, "forward")
    rv = jacobian_cost(f, x, "reverse")
    assert np.allclose(fw["jacobian"], rv["jacobian"], atol=1e-10)
    fig = Figure(figsize=(6.5, 3.4))
    axes = fig.subplots(1, 3)
    colors = ("#4c78a8", "#e45756")
    labels = ("forward", "reverse")

    ax = axes[0]
    ax.bar([0], [fw["calls"]], color=colors[0], label="forward passes")
    ax.bar([1], [rv["calls"]], color=colors[1], alpha=0.45, label="forward passes")
    ax.bar([1], [rv["backward_passes"]], bottom=[rv["calls"]], color=colors[1],
           label="backward passes")  # fmt: skip
    for xpos, total in ((0, fw["calls"]), (1, rv["calls"] + rv["backward_passes"])):
        ax.text(xpos, total, str(total), ha="center", va="bottom", fontsize=9)
    ax.set_title("passes", fontsize=10)
    ax.set_ylim(0, 1.25 * max(fw["calls"], rv["calls"] + rv["backward_passes"]))

    ax = axes[1]
    vals = [fw["flops"], rv["flops"]]
    ax.bar([0, 1], vals, color=colors)
    for xpos, v in enumerate(vals):
        ax.text(xpos, v, f"{v:,}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.25 * max(vals))
    ax.set_title("FLOPs", fontsize=10)

    ax = axes[2]
    vals = [fw["saved_activations"], rv["saved_activations"]]
    ax.bar([0, 1], vals, color=colors)
    for xpos, v in enumerate(vals):
        ax.text(xpos, v, f"{v:,} B", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.3 * max(max(vals), 1))
    ax.set_title("activations kept", fontsize=10)

    for ax in axes:
        ax.set_xticks([0, 1])
        ax.set_xticklabels(labels, fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    winner = "reverse" if rv["flops"] < fw["flops"] else "forward"
    ratio = max(fw["flops"], rv["flops"]) / min(fw["flops"], rv["flops"])
    fig.suptitle(
        f"n = {n} inputs, m = {m} outputs, depth {depth}: {winner} mode needs "
        f"{ratio:.1f}x fewer FLOPs",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
