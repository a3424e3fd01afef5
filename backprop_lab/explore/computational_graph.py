"""The computational graph (chapter 7): the network as a DAG, what each node stores, and why
backpropagation is dynamic programming over the graph.

* :func:`chapter4_trace` runs the two-layer network of chapter 4 under ``bl.trace`` with
  every intermediate tensor named after what its node keeps for the backward pass, so that
  ``bl.draw_graph`` and the replay show shapes and saved values on the nodes;
  :func:`saved_rows` lists, node by node, which arrays were saved and their bytes.
* :func:`consumers` and :func:`check_reverse_topological` read the graph structure from a
  trace: who uses each value, and whether backward visited every node after all of its
  consumers.
* :func:`diamond_chain` and :func:`path_sum_gradient`: a chain of ``depth`` diamonds has
  ``2**depth`` paths from input to output; summing the chain rule path by path costs
  exponential time, the backward pass linear time.
* :func:`mlp_memory` measures the bytes a tanh MLP's graph saves (``bl.measure_memory``),
  split into activations and weights, with the live-bytes timeline through forward and
  backward; :func:`growth_data` and :func:`growth_figure` measure and plot its growth with
  depth, batch and width, and :func:`memory_figure` is the chapter's explorer view.

matplotlib is imported inside the functions that draw.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

import backprop_lab as bl
from backprop_lab.instrument.memory import nbytes, saved_arrays

__all__ = [
    "chapter4_trace",
    "saved_rows",
    "consumers",
    "check_reverse_topological",
    "diamond_chain",
    "path_sum_gradient",
    "mlp_memory",
    "growth_data",
    "growth_figure",
    "memory_figure",
    "EXPLORER_CONTROLS",
]


# --------------------------------------------------------------------------------------
# The chapter 4 network as a graph
# --------------------------------------------------------------------------------------
def _named(value: Any, name: str, requires_grad: bool = True) -> Any:
    t = bl.tensor(value, requires_grad=requires_grad)
    t.name = name
    return t


def chapter4_trace(seed: int = 0, batch: int = 4) -> Any:
    """The two-layer network of chapter 4 (3 inputs, 5 hidden sigmoid units, 2 outputs,
    squared loss averaged over the batch), run forward and backward under ``bl.trace``.

    Each intermediate tensor is named ``value [what its node saved]``, so a drawing of the
    trace shows on every node what the backward pass will read there.
    """
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(batch, 3)), rng.normal(size=(batch, 2))
    W1, b1 = rng.normal(size=(3, 5)) * 0.5, rng.normal(size=5) * 0.1
    W2, b2 = rng.normal(size=(5, 2)) * 0.5, rng.normal(size=2) * 0.1
    with bl.trace() as tr:
        Xt, Yt = _named(X, "X", False), _named(Y, "Y", False)
        W1t, b1t, W2t, b2t = (_named(v, n) for v, n in [(W1, "W1"), (b1, "b1"), (W2, "W2"),
                                                         (b2, "b2")])  # fmt: skip
        A = Xt @ W1t
        A.name = "XW1 [X, W1]"
        Z = A + b1t
        Z.name = "Z [nothing]"
        H = bl.sigmoid(Z)
        H.name = "H [H]"
        P = H @ W2t
        P.name = "HW2 [H, W2]"
        Yhat = P + b2t
        Yhat.name = "Yhat [nothing]"
        D = Yhat - Yt
        D.name = "D [nothing]"
        S = D**2
        S.name = "D^2 [D, D^2]"
        T = bl.sum(S)
        T.name = "sum [nothing]"
        L = T / batch
        L.name = "L [sum]"
        L.backward()
    return tr


def _role(ev: Any, arr: Any) -> str:
    """Which value of the node ``arr`` is: 'output', 'input k' (by label) or 'other'."""
    if arr is ev.output.data:
        return "its output"
    for a in ev.args:
        if isinstance(a, bl.Tensor) and arr is a.data:
            return a.name.split(" [")[0] if a.name else "an input"
        if arr is a:
            return "an input"
    return "a value it computed"


def saved_rows(tr: Any) -> list[dict[str, Any]]:
    """One row per recorded node: label, op, output shape, what it saved, bytes saved.

    Bytes count each distinct array once within the node (as ``bl.measure_memory`` does
    across the whole graph).
    """
    rows = []
    for ev in tr.forward:
        if ev.node is None:
            continue
        arrays = saved_arrays(ev.saved)
        distinct = {id(a): a for a in arrays}
        rows.append(
            {
                "node": ev.label.split(" [")[0],
                "op": ev.op.name,
                "output": ev.output_shape,
                "saved": [(_role(ev, a), tuple(a.shape)) for a in distinct.values()],
                "bytes": sum(nbytes(a) for a in distinct.values()),
            }
        )
    return rows


def consumers(tr: Any) -> dict[int, list[Any]]:
    """For each node or leaf (by ``id``), the backward events of the nodes that used it,
    once per use (``x * x`` uses ``x`` twice). Read from the backward pass, which keeps
    every node's inputs (the graph itself drops them once it is freed)."""
    out: dict[int, list[Any]] = {}
    for ev in tr.backward:
        for parent in ev.parents:
            if parent is not None:
                out.setdefault(id(parent), []).append(ev)
    return out


def check_reverse_topological(tr: Any) -> bool:
    """True when backward visited every node only after all the nodes that consume it."""
    visited_at = {id(ev.node): k for k, ev in enumerate(tr.backward)}
    users = consumers(tr)
    for ev in tr.backward:
        for user in users.get(id(ev.node), []):
            if visited_at[id(user.node)] > visited_at[id(ev.node)]:
                return False
    return True


# --------------------------------------------------------------------------------------
# Paths against dynamic programming
# --------------------------------------------------------------------------------------
def diamond_chain(x: Any, depth: int) -> Any:
    """``depth`` diamonds, each ``x <- sin(x) * cos(x)``: the value ``x`` feeds two nodes
    (``sin`` and ``cos``) whose results meet again in the product, so ``x`` reaches the
    next step along two paths. Works on engine Tensors and on floats."""
    for _ in range(depth):
        if isinstance(x, bl.Tensor):
            a, b = bl.sin(x), bl.cos(x)
        else:
            a, b = np.sin(x), np.cos(x)
        x = a * b
    return x


def path_sum_gradient(x: float, depth: int) -> tuple[float, int, int]:
    """d diamond_chain(x, depth) / dx by summing, over every input-output path, the product
    of the local derivatives along it. Returns ``(gradient, paths, multiplications)``.

    Each diamond ``x -> (sin x, cos x) -> sin x cos x`` offers two routes: through ``sin``
    (local factors ``cos x`` then ``cos x``) and through ``cos`` (``-sin x`` then
    ``sin x``). A path picks one route per diamond, so there are ``2**depth`` of them.
    """
    xs = [float(x)]
    for _ in range(depth):
        xs.append(float(np.sin(xs[-1]) * np.cos(xs[-1])))
    # the two routes' products of local derivatives, per diamond
    route = [(np.cos(v) * np.cos(v), -np.sin(v) * np.sin(v)) for v in xs[:-1]]
    total = 0.0
    mults = 0
    paths = 0
    for choice in itertools.product((0, 1), repeat=depth):
        prod = 1.0
        for i, c in enumerate(choice):
            prod *= route[i][c]
            mults += 1
        total += prod
        paths += 1
    return float(total), paths, mults


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------
def mlp_memory(depth: int, batch: int, width: int, n_in: int | None = None,
               n_out: int = 10, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Run a tanh MLP (``depth`` linear layers, hidden ``width``, mse loss, trainable
    weights) forward and backward under ``bl.measure_memory`` and ``bl.trace``.

    Returns ``peak`` (saved bytes at the end of the forward pass, the maximum),
    ``activations`` and ``weights`` (the part of ``peak`` that the forward pass created,
    and the part that belongs to leaf tensors: the input batch and the weights),
    ``timeline`` (live saved bytes after every node recorded or freed) and ``per_node``
    (``(label, bytes of arrays first saved by this node, kind)`` in forward order).
    """
    n_in = width if n_in is None else n_in
    rng = np.random.default_rng(seed)
    dims = [n_in] + [width] * (depth - 1) + [n_out]
    weights = [bl.tensor(rng.normal(size=(a, b)) / np.sqrt(a), requires_grad=True)
               for a, b in zip(dims, dims[1:])]  # fmt: skip
    biases = [bl.tensor(np.zeros(b), requires_grad=True) for b in dims[1:]]
    X = bl.tensor(rng.normal(size=(batch, n_in)))
    target = np.zeros((batch, n_out))
    with bl.measure_memory() as mem, bl.trace() as tr:
        h = X
        for i, (W, b) in enumerate(zip(weights, biases)):
            h = h @ W + b
            if i < depth - 1:
                h = bl.tanh(h)
        loss = bl.mse(h, target)
        loss.backward()
    leaves = {id(t.data) for t in [X, *weights, *biases]}
    seen: set[int] = set()
    per_node = []
    act = wts = 0
    for ev in tr.forward:
        if ev.node is None:
            continue
        new_act = new_w = 0
        for a in saved_arrays(ev.saved):
            if id(a) in seen:
                continue
            seen.add(id(a))
            if id(a) in leaves:
                new_w += nbytes(a)
            else:
                new_act += nbytes(a)
        act += new_act
        wts += new_w
        per_node.append((ev.op.name, new_act, new_w))
    return {
        "peak": mem.peak,
        "activations": act,
        "weights": wts,
        "timeline": list(mem.timeline),
        "per_node": per_node,
        "dims": dims,
    }


def growth_data(base: dict[str, int], grids: dict[str, Sequence[int]]) -> dict[str, Any]:
    """:func:`mlp_memory`'s ``(activations, weights)`` bytes when one of depth, batch and width
    runs over its grid and the other two stay at ``base``: ``{key: {value: (a, w)}}``."""
    out: dict[str, Any] = {"base": dict(base), "grids": {k: list(v) for k, v in grids.items()}}
    for key in ("depth", "batch", "width"):
        out[key] = {}
        for v in grids[key]:
            kw = dict(base, **{key: v})
            r = mlp_memory(kw["depth"], kw["batch"], kw["width"])
            out[key][v] = (r["activations"], r["weights"])
    return out


def growth_figure(data: dict[str, Any]) -> Any:
    """Three panels from :func:`growth_data`: saved bytes against depth, batch and width,
    stacked into activations and leaf arrays (input batch and weights)."""
    import matplotlib.pyplot as plt

    base = data["base"]
    fig, axes = plt.subplots(1, 3, figsize=(7.0, 3.0), sharey=False)
    for ax, key in zip(axes, ("depth", "batch", "width")):
        vals = data["grids"][key]
        acts = [data[key][v][0] / 2**20 for v in vals]
        wts = [data[key][v][1] / 2**20 for v in vals]
        pos = np.arange(len(vals))
        ax.bar(pos, acts, color="#e45756", label="activations")
        ax.bar(pos, wts, bottom=acts, color="#9ecae9", label="input and weights")
        ax.set_xticks(pos)
        ax.set_xticklabels([str(v) for v in vals], fontsize=8)
        ax.set_xlabel(key)
        others = ", ".join(f"{k} {base[k]}" for k in ("depth", "batch", "width") if k != key)
        ax.set_title(others, fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    axes[0].set_ylabel("saved for backward (MiB)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


EXPLORER_CONTROLS = {"depth": [2, 4, 8], "batch": [1, 16, 256], "width": [16, 64, 256]}


def memory_figure(depth: int, batch: int, width: int) -> Any:
    """The explorer view: left, the bytes each node adds to what is saved (activations in
    red, leaf arrays in blue); right, the live saved bytes through forward and backward."""
    from matplotlib.figure import Figure

    r = mlp_memory(depth, batch, width)
    fig = Figure(figsize=(6.5, 3.4))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
    kb = 1 / 1024
    labels = [p[0] for p in r["per_node"]]
    pos = np.arange(len(labels))
    acts = np.array([p[1] for p in r["per_node"]]) * kb
    wts = np.array([p[2] for p in r["per_node"]]) * kb
    ax.bar(pos, acts, color="#e45756", label="activations")
    ax.bar(pos, wts, bottom=acts, color="#9ecae9", label="input, weights")
    ax.set_xticks(pos)
    ax.set_xticklabels(labels, rotation=90, fontsize=7.5)
    ax.set_ylabel("KiB first saved by the node", fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(fontsize=7.5)
    ax.set_title("added by each node, forward order", fontsize=9)
    t = np.array(r["timeline"]) * kb
    n_fwd = len(r["per_node"])
    ax2.plot(np.arange(len(t)), t, color="#333333")
    ax2.axvline(n_fwd - 0.5, color="gray", ls=":", lw=1)
    ax2.text(n_fwd * 0.5, t.max() * 0.05, "forward", ha="center", fontsize=8)
    ax2.text(n_fwd + (len(t) - n_fwd) * 0.5, t.max() * 0.05, "backward", ha="center",
             fontsize=8)  # fmt: skip
    ax2.set_xlabel("event (node recorded, then node freed)", fontsize=8)
    ax2.set_ylabel("live saved KiB", fontsize=9)
    ax2.tick_params(labelsize=8)
    ax2.set_title("live total over time", fontsize=9)
    fig.suptitle(
        f"depth {depth}, batch {batch}, width {width}: peak {r['peak'] * kb:,.0f} KiB "
        f"({r['activations'] / max(r['peak'], 1):.0%} activations)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
