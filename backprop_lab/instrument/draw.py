"""Draw a computation graph as self-contained SVG (no Graphviz, no fonts, no scripts).

``draw_graph(trace)`` shows the graph a :class:`~backprop_lab.instrument.trace.Trace` recorded: each
op with its output value and the gradient that reached it, each leaf with its value and
gradient, and every edge shaded by the magnitude of the gradient that flowed along it
(darker and thicker = larger, on a log scale). ``draw_graph(tensor)`` draws the graph
behind a tensor without values on the op nodes.

The result displays itself in JupyterLab (``_repr_svg_``) and in the book's static HTML;
``.svg`` is the markup and ``.save(path)`` writes it. The layout is a small layered
(Sugiyama-style) one: ranks by longest path from the inputs, order within a rank by a few
barycentre sweeps, long edges routed through invisible waypoints.
"""

from __future__ import annotations

import math
from typing import Any
from xml.sax.saxutils import escape

from ..backend import to_numpy
from ..tensor import Node, Tensor

__all__ = ["draw_graph", "Drawing", "GraphModel"]

_NODE_W, _NODE_H = 150, 54
_GAP_X, _GAP_Y = 56, 18
_COLORS = {"op": "#dbe9f6", "param": "#e2f0d9", "const": "#eeeeee"}


def _fmt_value(a: Any) -> str:
    if a is None:
        return ""
    if not hasattr(a, "shape"):
        return f"{a!r}"[:18]
    arr = to_numpy(a)
    if arr.size == 1:
        return f"{arr.reshape(()).item():.4g}"
    if arr.size <= 3 and arr.ndim == 1:
        return "[" + ", ".join(f"{v:.3g}" for v in arr.tolist()) + "]"
    return "x".join(str(s) for s in arr.shape)


def _norm(a: Any) -> float | None:
    if a is None or not hasattr(a, "shape"):
        return None
    arr = to_numpy(a).astype(float, copy=False)
    return float(math.sqrt(float((arr * arr).sum()))) if arr.size else 0.0


def _fmt_grad(a: Any) -> str:
    if a is None:
        return ""
    arr = to_numpy(a)
    if arr.size == 1:
        return f"grad {arr.reshape(()).item():.4g}"
    return f"|grad| {_norm(a):.3g}"


class GraphModel:
    """Nodes (dicts with key, title, kind, value, grad, tip) and edges (src, dst, norm)."""

    def __init__(self) -> None:
        self.nodes: dict[Any, dict[str, Any]] = {}
        self.edges: list[tuple[Any, Any, float | None]] = []

    def add(self, key: Any, title: str, kind: str, value: str = "", grad: str = "",
            tip: str = "") -> None:  # fmt: skip
        if key not in self.nodes:
            self.nodes[key] = {"title": title, "kind": kind, "value": value, "grad": grad,
                               "tip": tip or title}  # fmt: skip


def _leaf_grads_until(tr: Any, until: int) -> dict[int, Any]:
    """Each leaf's gradient as far as backward steps 0..until had sent it (the sum of the
    contributions so far), keyed by ``id(leaf)``."""
    grads: dict[int, Any] = {}
    for ev in tr.backward[: until + 1]:
        for parent, gi in zip(ev.parents, ev.input_grads):
            if gi is None or type(parent) is not Tensor:
                continue
            prev = grads.get(id(parent))
            grads[id(parent)] = gi if prev is None else prev + gi
    return grads


def _from_trace(tr: Any, include_unrecorded: bool, until: int | None = None) -> GraphModel:
    """The graph of a trace; with ``until`` = k only what backward steps 0..k computed
    (the gradients of later steps are left blank and their edges dashed)."""
    g = GraphModel()
    leaf_grads: dict[int, Any] = {}
    if until is not None:
        leaf_grads = _leaf_grads_until(tr, until)
    else:
        for ev in tr.leaf_grads:
            prev = leaf_grads.get(id(ev.leaf))
            leaf_grads[id(ev.leaf)] = ev.grad if prev is None else prev + ev.grad
    n_const = 0
    for ev in tr.forward:
        if ev.recompute or (ev.node is None and not include_unrecorded):
            continue
        key = ("ev", ev.index)
        bwd = ev.backward
        if bwd is not None and until is not None and bwd.index > until:
            bwd = None  # backward has not reached this node yet
        up = bwd.upstream if bwd is not None else None
        tip = (f"{ev.label}: {ev.op.name} {ev.input_shapes} -> {ev.output_shape} "
               f"{ev.dtype}; saved {ev.saved_bytes} B")  # fmt: skip
        g.add(key, ev.label, "op", _fmt_value(ev.value), _fmt_grad(up), tip)
        sent = bwd.input_grads if bwd is not None else ()
        for i, a in enumerate(ev.args):
            src_ev = tr.event_for(a) if type(a) is Tensor else None
            if src_ev is not None and (src_ev.node is not None or include_unrecorded):
                src = ("ev", src_ev.index)
            elif type(a) is Tensor:
                src = ("leaf", id(a))
                kind = "param" if a.requires_grad else "const"
                title = a.name or ("leaf" if a.requires_grad else "const")
                val = ev.inputs[i]
                lg = leaf_grads.get(id(a))
                g.add(src, title, kind, _fmt_value(val), _fmt_grad(lg),
                      f"{title}: {kind} {tuple(a.shape)}")  # fmt: skip
            elif isinstance(a, (int, float)) or hasattr(a, "shape"):
                src = ("c", n_const)
                n_const += 1
                g.add(src, "const", "const", _fmt_value(a))
            else:
                continue  # not a value (None, an index, ...)
            gi = sent[i] if i < len(sent) else None
            g.edges.append((src, key, _norm(gi)))
    return g


def _from_tensor(t: Tensor) -> GraphModel:
    g = GraphModel()
    if t._node is None:
        g.add(("leaf", id(t)), t.name or "leaf", "param", _fmt_value(t.data), _fmt_grad(t.grad))
        return g
    stack: list[Node] = [t._node]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        key = ("node", id(node))
        title = t.name if node is t._node and t.name else f"{node.op.name}#{node.seq}"
        value = _fmt_value(t.data) if node is t._node else ""
        g.add(key, title, "op", value)
        for p in node.parents or ():
            if p is None:
                continue
            if isinstance(p, Node):
                stack.append(p)
                src = ("node", id(p))
            else:
                src = ("leaf", id(p))
                g.add(src, p.name or "leaf", "param", _fmt_value(p.data), _fmt_grad(p.grad))
            g.edges.append((src, key, _norm(p.grad) if isinstance(p, Tensor) else None))
    return g


def _layout(g: GraphModel) -> tuple[dict[Any, tuple[int, int]], dict[int, list[Any]], list]:
    """Ranks by longest path, order by barycentre sweeps; long edges get waypoints."""
    preds: dict[Any, list[Any]] = {k: [] for k in g.nodes}
    for s, d, _ in g.edges:
        preds[d].append(s)
    rank: dict[Any, int] = {}

    def rank_of(k: Any) -> int:
        if k in rank:
            return rank[k]
        todo = [k]
        while todo:
            cur = todo[-1]
            missing = [p for p in preds[cur] if p not in rank]
            if missing:
                todo.extend(missing)
                continue
            todo.pop()
            rank[cur] = 1 + max((rank[p] for p in preds[cur]), default=-1)
        return rank[k]

    for k in g.nodes:
        rank_of(k)
    # leaves sit just before their first consumer, not all in column 0
    succ_rank: dict[Any, int] = {}
    for s, d, _ in g.edges:
        succ_rank[s] = min(succ_rank.get(s, 10**9), rank[d])
    for k in g.nodes:
        if not preds[k] and k in succ_rank:
            rank[k] = max(0, succ_rank[k] - 1)
    # virtual waypoints for edges spanning several ranks
    vedges: list[tuple[Any, Any]] = []
    paths = []
    vid = 0
    layers: dict[int, list[Any]] = {}
    for k in g.nodes:
        layers.setdefault(rank[k], []).append(k)
    for s, d, _ in g.edges:
        chain = [s]
        for r in range(rank[s] + 1, rank[d]):
            v = ("virtual", vid)
            vid += 1
            rank[v] = r
            layers.setdefault(r, []).append(v)
            chain.append(v)
        chain.append(d)
        for a, b in zip(chain, chain[1:]):
            vedges.append((a, b))
        paths.append(chain)
    up: dict[Any, list[Any]] = {}
    down: dict[Any, list[Any]] = {}
    for a, b in vedges:
        down.setdefault(a, []).append(b)
        up.setdefault(b, []).append(a)
    order = {k: i for r in layers for i, k in enumerate(layers[r])}
    ranks = sorted(layers)
    for sweep in range(8):
        seq = ranks if sweep % 2 == 0 else list(reversed(ranks))
        nbrs = up if sweep % 2 == 0 else down
        for r in seq:

            def bary(k: Any, nbrs: dict = nbrs) -> float:
                ns = nbrs.get(k)
                return sum(order[n] for n in ns) / len(ns) if ns else order[k]

            layers[r].sort(key=bary)
            for i, k in enumerate(layers[r]):
                order[k] = i
    pos = {k: (rank[k], order[k]) for r in layers for k in layers[r]}
    return pos, layers, paths


def _shade(t: float) -> tuple[str, float]:
    lo, hi = (200, 200, 200), (178, 24, 43)
    c = tuple(int(lo[j] + (hi[j] - lo[j]) * t) for j in range(3))
    return "#{:02x}{:02x}{:02x}".format(*c), 1.0 + 3.0 * t


class Drawing:
    """An SVG drawing; shows itself in Jupyter. ``svg`` is the markup."""

    def __init__(self, svg: str) -> None:
        self.svg = svg

    def _repr_svg_(self) -> str:
        return self.svg

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.svg)

    def __str__(self) -> str:
        return self.svg


def draw_graph(obj: Any, highlight: Any = None, include_unrecorded: bool = False,
               title: str | None = None, direction: str = "auto",
               until: int | None = None) -> Drawing:  # fmt: skip
    """Draw a Trace (values and gradients) or the graph behind a Tensor as SVG.

    ``highlight`` may be a Node, a Tensor, a label string or a ForwardEvent of the trace:
    that node gets a thick orange border (the replay widget uses it).
    ``include_unrecorded`` also draws ops that ran without recording (under no_grad).
    ``direction``: "LR" (inputs on the left), "TB" (inputs at the top) or "auto" (TB for
    deep, narrow graphs, which would otherwise shrink to an unreadable strip).
    ``until`` (a Trace only): show the backward pass as it stood after step ``until`` of
    ``trace.replay()``; gradients computed by later steps are not shown yet (the replay
    stepper reveals one node per step this way).
    """
    if isinstance(obj, Tensor):
        if until is not None:
            raise TypeError("draw_graph(until=...) needs a Trace: a Tensor has no backward steps")
        g = _from_tensor(obj)
    elif hasattr(obj, "leaf_grads") and hasattr(obj, "forward"):
        g = _from_trace(obj, include_unrecorded, until)
    else:
        raise TypeError(f"draw_graph needs a Trace or a Tensor, not {type(obj).__name__}")
    hkey = _highlight_key(obj, highlight)
    return Drawing(_render(g, hkey, title, direction))


def _highlight_key(obj: Any, h: Any) -> Any:
    if h is None:
        return None
    if isinstance(obj, Tensor):
        if isinstance(h, Tensor):
            h = h._node
        return ("node", id(h)) if isinstance(h, Node) else None
    ev = None
    if isinstance(h, (Node, Tensor)):
        ev = obj.event_for(h)
    elif isinstance(h, str):
        ev = next((e for e in obj.forward if e.label == h), None)
    elif hasattr(h, "index") and hasattr(h, "op"):
        ev = h
    return None if ev is None else ("ev", ev.index)


def _render(g: GraphModel, hkey: Any, title: str | None, direction: str) -> str:
    if not g.nodes:
        return ('<svg xmlns="http://www.w3.org/2000/svg" width="200" height="40">'
                '<text x="10" y="24" font-family="sans-serif" font-size="12">'
                "(empty graph)</text></svg>")  # fmt: skip
    pos, layers, paths = _layout(g)
    n_ranks = max(layers) + 1
    n_rows = max(len(v) for v in layers.values())
    if direction == "auto":
        direction = "TB" if n_ranks > 9 and n_rows <= 4 else "LR"
    if direction not in ("LR", "TB"):
        raise ValueError(f"direction must be 'LR', 'TB' or 'auto', not {direction!r}")
    lr = direction == "LR"
    top = 30 if title else 10
    step_r = (_NODE_W + _GAP_X) if lr else (_NODE_H + _GAP_X // 2)  # between ranks
    step_o = (_NODE_H + _GAP_Y) if lr else (_NODE_W + _GAP_Y)  # within a rank

    def xy(k: Any) -> tuple[float, float]:
        r, i = pos[k]
        offset = (n_rows - len(layers[r])) * step_o / 2 + i * step_o
        if lr:
            return 10 + r * step_r, top + offset
        return 10 + offset, top + r * step_r

    if lr:
        width = 20 + n_ranks * step_r - _GAP_X
        height = top + n_rows * step_o + 30
    else:
        width = max(20 + n_rows * step_o - _GAP_Y, 460)
        height = top + n_ranks * step_r + 30
    norms = [n for _, _, n in g.edges if n]
    lo = math.log10(min(norms)) if norms else 0.0
    hi = math.log10(max(norms)) if norms else 0.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" style="max-width:100%;height:auto" '
        'font-family="Menlo, Consolas, DejaVu Sans Mono, monospace" font-size="11">',
        '<defs><marker id="bl-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="8" markerHeight="8" markerUnits="userSpaceOnUse" orient="auto">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#777"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    if title:
        out.append(f'<text x="10" y="18" font-size="13" font-weight="bold">{escape(title)}</text>')
    for (_, _, nrm), chain in zip(g.edges, paths):
        pts = []  # (entry x, entry y, exit x, exit y) of each box or waypoint
        for k in chain:
            x, y = xy(k)
            if lr:
                pts.append((x, y + _NODE_H / 2, x + _NODE_W, y + _NODE_H / 2))
            else:
                pts.append((x + _NODE_W / 2, y, x + _NODE_W / 2, y + _NODE_H))
        path = f"M {pts[0][2]:.1f} {pts[0][3]:.1f}"
        for a, b in zip(pts, pts[1:]):
            x0, y0 = a[2], a[3]
            x1, y1 = b[0], b[1]
            if lr:
                mx = (x0 + x1) / 2
                path += f" C {mx:.1f} {y0:.1f} {mx:.1f} {y1:.1f} {x1:.1f} {y1:.1f}"
            else:
                my = (y0 + y1) / 2
                path += f" C {x0:.1f} {my:.1f} {x1:.1f} {my:.1f} {x1:.1f} {y1:.1f}"
            if b is not pts[-1]:
                path += f" L {b[2]:.1f} {b[3]:.1f}"
        if nrm is None:
            color, w, dash = "#bbbbbb", 1.0, ' stroke-dasharray="4 3"'
            tip = "no gradient recorded"
        else:
            t = 0.0 if hi == lo or nrm == 0 else (math.log10(nrm) - lo) / (hi - lo)
            color, w = _shade(t if nrm else 0.0)
            dash = ""
            tip = f"|gradient| = {nrm:.4g}"
        out.append(
            f'<path d="{path}" fill="none" stroke="{color}" stroke-width="{w:.2f}"{dash} '
            f'marker-end="url(#bl-arrow)"><title>{escape(tip)}</title></path>'
        )
    for k, nd in g.nodes.items():
        x, y = xy(k)
        hl = k == hkey
        stroke, sw = ("#f58518", 4) if hl else ("#555555", 1)
        rx = 10 if nd["kind"] == "op" else 2
        out.append(
            f'<g class="bl-node"><title>{escape(nd["tip"])}</title>'
            f'<rect x="{x}" y="{y}" width="{_NODE_W}" height="{_NODE_H}" rx="{rx}" '
            f'fill="{_COLORS[nd["kind"]]}" stroke="{stroke}" stroke-width="{sw}"/>'
        )
        lines = [(nd["title"], "bold"), (nd["value"], "normal"), (nd["grad"], "normal")]
        for j, (text, weight) in enumerate(lines):
            if not text:
                continue
            text = text if len(text) <= 22 else text[:21] + "\u2026"
            fill = "#b2182b" if j == 2 else "#222222"
            out.append(
                f'<text x="{x + _NODE_W / 2}" y="{y + 16 + 15 * j}" text-anchor="middle" '
                f'font-weight="{weight}" fill="{fill}">{escape(text)}</text>'
            )
        out.append("</g>")
    out.append(
        f'<text x="10" y="{height - 8}" font-size="10" fill="#666666">edges: |gradient| '
        "sent backward (darker, thicker = larger; dashed = none)</text>"
    )
    out.append("</svg>")
    return "\n".join(out)
