"""Watch the backward pass: record every node, then replay it one step at a time.

    with bl.trace() as t:
        loss = model(x)
        loss.backward()
    t.table()              # one row per node: op, shapes, dtype, times, bytes saved
    for step in t.replay():
        step.upstream, step.local_jacobian(0), step.downstream[0]
    t.draw()               # the graph as SVG, edges shaded by gradient magnitude

A :class:`Trace` is an engine listener (a :class:`backprop_lab.tensor.Listener`) and, like
every listener, sees only the ops of the thread that entered it. It
stores references to the arrays the engine hands it, never copies, except for the values
of leaf tensors (parameters, inputs), which an optimizer may later update in place: those
are copied once per trace. Gradients are never modified by the engine after they are
emitted, so the references are the actual values. With no trace active the engine pays
nothing but one ``if listeners:`` test per op.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..backend import device_kwargs, namespace_of, to_numpy
from ..tensor import MODE, Listener, Node, Tensor
from .memory import SavedMemory, saved_bytes

__all__ = [
    "Trace",
    "trace",
    "ForwardEvent",
    "BackwardEvent",
    "AccumulateEvent",
    "LeafGradEvent",
    "FreeEvent",
    "ReplayStep",
]


def _shape(x: Any) -> Any:
    return tuple(x.shape) if hasattr(x, "shape") else ()


def _brief(x: Any, limit: int = 6) -> str:
    """A short text for a value: the numbers when few, else shape and norm."""
    if x is None:
        return "-"
    if not hasattr(x, "shape"):
        return repr(x)
    a = to_numpy(x)
    if a.size <= limit:
        if a.ndim == 0:
            return f"{a.item():.4g}"
        import numpy as np

        return np.array2string(a, precision=4, separator=", ", suppress_small=True)
    import numpy as np

    return f"{a.dtype} {tuple(a.shape)} |.|={float(np.linalg.norm(a.ravel())):.4g}"


class ForwardEvent:
    """One op run in the forward pass (recorded or not: ``node`` is None when no input
    required grad)."""

    __slots__ = ("index", "op", "node", "args", "inputs", "output", "params", "seconds",
                 "saved", "backward", "recompute")  # fmt: skip
    kind = "forward"

    def __init__(self, index, op, node, args, inputs, output, params, seconds, recompute):
        self.index = index
        self.op = op
        self.node = node
        self.args = args  # what the user passed (Tensors, arrays, numbers)
        self.inputs = inputs  # the input values (arrays; leaf values copied)
        self.output = output  # the output Tensor
        self.params = params
        self.seconds = seconds
        self.saved = None if node is None else node.saved  # kept: the node drops it on free
        self.backward: BackwardEvent | None = None  # filled when backward reaches the node
        self.recompute = recompute  # True for ops re-run by bl.checkpoint during backward

    @property
    def op_name(self) -> str:
        return self.op.name

    @property
    def label(self) -> str:
        """``output.name`` if the user named the output tensor, else ``op#index``."""
        name = self.output.name
        return name if name else f"{self.op.name}#{self.index}"

    @property
    def input_shapes(self) -> tuple[Any, ...]:
        return tuple(_shape(a) for a in self.inputs)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return _shape(self.output.data)

    @property
    def dtype(self) -> Any:
        return self.output.data.dtype

    @property
    def value(self) -> Any:
        return self.output.data

    @property
    def saved_bytes(self) -> int:
        """Bytes of the distinct arrays this node saved for its backward rule."""
        return saved_bytes(self.saved)

    def __repr__(self) -> str:
        rec = "" if self.node is not None else " (not recorded)"
        return f"<forward {self.label}: {self.input_shapes} -> {self.output_shape}{rec}>"


class BackwardEvent:
    """Backward reached one node: the ``upstream`` gradient arrived and the op's VJP sent
    ``input_grads[i]`` to input ``i`` (None where that input needs no gradient)."""

    __slots__ = ("index", "node", "parents", "upstream", "input_grads", "seconds", "forward")
    kind = "backward"

    def __init__(self, index, node, upstream, input_grads, seconds, forward):
        self.index = index
        self.node = node
        self.parents = node.parents  # the node drops these when freed
        self.upstream = upstream
        self.input_grads = input_grads
        self.seconds = seconds
        self.forward = forward  # the ForwardEvent of this node (None if recorded earlier)

    @property
    def op_name(self) -> str:
        return self.node.op.name

    @property
    def label(self) -> str:
        if self.forward is not None:
            return self.forward.label
        return f"{self.node.op.name}#s{self.node.seq}"

    def __repr__(self) -> str:
        return f"<backward {self.label}: upstream {_shape(self.upstream)}>"


class AccumulateEvent:
    """Fan-out: a second (third, ...) gradient contribution reached ``target`` and was
    added to what had arrived so far (``existing``)."""

    __slots__ = ("target", "existing", "contribution")
    kind = "accumulate"

    def __init__(self, target, existing, contribution):
        self.target = target
        self.existing = existing
        self.contribution = contribution

    @property
    def total(self) -> Any:
        return self.existing + self.contribution

    def __repr__(self) -> str:
        return f"<accumulate into {self.target!r}>"


class LeafGradEvent:
    """A leaf received its gradient for this backward pass (added to ``leaf.grad``)."""

    __slots__ = ("leaf", "grad")
    kind = "leaf_grad"

    def __init__(self, leaf, grad):
        self.leaf = leaf
        self.grad = grad

    def __repr__(self) -> str:
        return f"<leaf grad {self.leaf.name or ''} {_shape(self.grad)}>"


class FreeEvent:
    """Backward finished with ``node`` and released its saved values."""

    __slots__ = ("node",)
    kind = "free"

    def __init__(self, node):
        self.node = node

    def __repr__(self) -> str:
        return f"<free {self.node!r}>"


class Trace(Listener):
    """Records the events of the forward and backward passes run inside ``with``.

    Attributes: ``events`` (all, in order), and the views :attr:`forward`,
    :attr:`backward`, :attr:`accumulations`, :attr:`leaf_grads`.
    """

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._fwd: list[ForwardEvent] = []
        self._bwd: list[BackwardEvent] = []
        self._by_node: dict[int, ForwardEvent] = {}
        self._by_output: dict[int, ForwardEvent] = {}
        self._leaf_values: dict[int, Any] = {}
        self._leaves: dict[int, Tensor] = {}

    # -- listener protocol ---------------------------------------------------------------
    def on_forward(self, op, node, args, output, params, seconds) -> None:
        inputs = []
        for a in args:
            if type(a) is Tensor:
                if a._node is None:
                    v = self._leaf_values.get(id(a))
                    if v is None:
                        v = self._snapshot(a)
                    inputs.append(v)
                else:
                    inputs.append(a.data)
            else:
                inputs.append(a)
        ev = ForwardEvent(len(self._fwd), op, node, args, inputs, output, params, seconds,
                          MODE.recomputing > 0)  # fmt: skip
        self.events.append(ev)
        self._fwd.append(ev)
        if node is not None:
            self._by_node[id(node)] = ev
        self._by_output[id(output)] = ev

    def _snapshot(self, t: Tensor) -> Any:
        d = t.data
        try:
            v = namespace_of(d).asarray(d, copy=True)
        except Exception:  # pragma: no cover - a backend without copy=
            v = d
        self._leaf_values[id(t)] = v
        self._leaves[id(t)] = t  # keep the id valid
        return v

    def on_backward(self, node, upstream, input_grads, seconds) -> None:
        fwd = self._by_node.get(id(node))
        ev = BackwardEvent(len(self._bwd), node, upstream, input_grads, seconds, fwd)
        if fwd is not None:
            fwd.backward = ev
        self.events.append(ev)
        self._bwd.append(ev)

    def on_accumulate(self, target, existing, contribution) -> None:
        self.events.append(AccumulateEvent(target, existing, contribution))

    def on_leaf_grad(self, leaf, grad) -> None:
        self.events.append(LeafGradEvent(leaf, grad))

    def on_free(self, node) -> None:
        self.events.append(FreeEvent(node))

    # -- context manager -------------------------------------------------------------------

    # -- views -----------------------------------------------------------------------------
    @property
    def forward(self) -> list[ForwardEvent]:
        """Forward events in the order the ops ran."""
        return list(self._fwd)

    @property
    def backward(self) -> list[BackwardEvent]:
        """Backward events in the order backward visited the nodes."""
        return list(self._bwd)

    @property
    def accumulations(self) -> list[AccumulateEvent]:
        return [e for e in self.events if e.kind == "accumulate"]

    @property
    def leaf_grads(self) -> list[LeafGradEvent]:
        return [e for e in self.events if e.kind == "leaf_grad"]

    def event_for(self, x: Any) -> ForwardEvent | None:
        """The forward event that produced a Tensor or Node (None for leaves)."""
        if isinstance(x, Node):
            return self._by_node.get(id(x))
        if isinstance(x, Tensor):
            if x._node is not None and id(x._node) in self._by_node:
                return self._by_node[id(x._node)]
            return self._by_output.get(id(x))
        return None

    def label_of(self, x: Any) -> str:
        """Readable name of a Node or Tensor: its name, ``op#index``, or ``leaf``."""
        ev = self.event_for(x)
        if ev is not None:
            return ev.label
        if isinstance(x, Tensor):
            return x.name or f"leaf{tuple(x.shape)}"
        if isinstance(x, Node):
            return f"{x.op.name}#s{x.seq}"
        return type(x).__name__

    def contributions(self) -> dict[int, dict[str, Any]]:
        """Every gradient contribution each node or leaf received, keyed by ``id``.

        Values are ``{"target": node_or_leaf, "parts": [(sender label, array), ...]}``;
        when there are two or more parts they are the fan-out that was summed.
        """
        out: dict[int, dict[str, Any]] = {}
        for ev in self._bwd:
            for parent, g in zip(ev.parents, ev.input_grads):
                if parent is None or g is None:
                    continue
                entry = out.setdefault(id(parent), {"target": parent, "parts": []})
                entry["parts"].append((ev.label, g))
        return out

    def fan_out(self) -> list[dict[str, Any]]:
        """The accumulations: targets that received more than one contribution, with the
        parts and their sum."""
        rows = []
        for entry in self.contributions().values():
            parts = entry["parts"]
            if len(parts) > 1:
                total = parts[0][1]
                for _, g in parts[1:]:
                    total = total + g
                rows.append({"target": self.label_of(entry["target"]), "parts": parts,
                             "total": total})  # fmt: skip
        return rows

    # -- memory --------------------------------------------------------------------------
    def memory(self) -> SavedMemory:
        """Saved-for-backward bytes over the recorded events (see
        :mod:`backprop_lab.instrument.memory`): ``.timeline``, ``.peak``."""
        acc = SavedMemory()
        for ev in self.events:
            if ev.kind == "forward":
                if ev.node is not None:
                    acc.record(ev.node, ev.saved)
            elif ev.kind == "free":
                acc.free(ev.node)
        return acc

    # -- replay ----------------------------------------------------------------------------
    def replay(self) -> list[ReplayStep]:
        """The backward pass, one :class:`ReplayStep` per node, in the order it ran."""
        return [ReplayStep(self, ev, k) for k, ev in enumerate(self._bwd)]

    # -- display ---------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """One dict per recorded forward event: label, op, shapes, dtype, times, bytes."""
        rows = []
        for ev in self._fwd:
            b = ev.backward
            rows.append(
                {
                    "label": ev.label,
                    "op": ev.op.name,
                    "inputs": ev.input_shapes,
                    "output": ev.output_shape,
                    "dtype": str(ev.dtype),
                    "forward_us": ev.seconds * 1e6,
                    "backward_us": None if b is None else b.seconds * 1e6,
                    "saved_bytes": ev.saved_bytes,
                    "recorded": ev.node is not None,
                }
            )
        return rows

    def table(self) -> str:
        """A plain-text table of :meth:`rows`."""
        lines = [f"{'node':<16} {'inputs':<26} {'output':<12} {'dtype':<8} "
                 f"{'fwd us':>8} {'bwd us':>8} {'saved B':>9}"]  # fmt: skip
        for r in self.rows():
            ins = ", ".join(str(s) for s in r["inputs"])
            bwd = "" if r["backward_us"] is None else f"{r['backward_us']:.1f}"
            lines.append(
                f"{r['label']:<16} {ins:<26} {str(r['output']):<12} {r['dtype']:<8} "
                f"{r['forward_us']:>8.1f} {bwd:>8} {r['saved_bytes']:>9}"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from html import escape

        head = ("<tr><th>node</th><th>inputs</th><th>output</th><th>dtype</th>"
                "<th>fwd &#181;s</th><th>bwd &#181;s</th><th>saved B</th></tr>")  # fmt: skip
        body = []
        for r in self.rows():
            bwd = "" if r["backward_us"] is None else f"{r['backward_us']:.1f}"
            ins = ", ".join(str(s) for s in r["inputs"])
            body.append(
                f"<tr><td>{escape(r['label'])}</td><td>{escape(ins)}</td>"
                f"<td>{escape(str(r['output']))}</td><td>{r['dtype']}</td>"
                f"<td>{r['forward_us']:.1f}</td><td>{bwd}</td><td>{r['saved_bytes']}</td></tr>"
            )
        return f"<table>{head}{''.join(body)}</table>"

    def draw(self, **kwargs: Any) -> Any:
        """The recorded graph as SVG; see :func:`backprop_lab.instrument.draw.draw_graph`."""
        from .draw import draw_graph

        return draw_graph(self, **kwargs)

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.events)

    def __repr__(self) -> str:
        return (f"<Trace {len(self._fwd)} forward, {len(self._bwd)} backward, "
                f"{len(self.events)} events>")  # fmt: skip


def trace() -> Trace:
    """Record the forward and backward passes run inside ``with bl.trace() as t:``."""
    return Trace()


class ReplayStep:
    """One node of a recorded backward pass: ``upstream`` arrives, the local Jacobian of
    each input is applied, ``downstream[i]`` leaves toward input ``i``.

    ``downstream`` are the gradients the engine computed; :meth:`local_jacobian` and
    :meth:`product` rebuild them from the op's VJP rule and the values it saved, so a reader
    can check ``upstream x local = downstream`` with the actual numbers.
    """

    def __init__(self, trace: Trace, event: BackwardEvent, step: int) -> None:
        self.trace = trace
        self.event = event
        self.step = step
        self.node = event.node
        self.op = event.node.op
        self.label = event.label
        self.upstream = event.upstream
        self.downstream = tuple(event.input_grads)
        self.input_labels = tuple(None if p is None else trace.label_of(p) for p in event.parents)
        fwd = event.forward
        self.saved = None if fwd is None else fwd.saved
        self.inputs = None if fwd is None else fwd.inputs
        self.output = None if fwd is None else fwd.output.data

    @property
    def replayable(self) -> bool:
        """False for ops whose VJP has side effects (bl.checkpoint) or unknown saved
        values."""
        return self.saved is not None and getattr(self.op, "replayable", True)

    def vjp(self, upstream: Any = None) -> tuple[Any, ...]:
        """Run the op's VJP rule again on ``upstream`` (default: the recorded one)."""
        if not self.replayable:
            raise RuntimeError(f"{self.label}: this node cannot be replayed")
        g = self.upstream if upstream is None else upstream
        return tuple(self.op.vjp(self.node.xp, g, self.saved, self.node.needs))

    def local_jacobian(self, i: int, max_size: int = 250_000) -> Any:
        """d output / d input ``i`` as a matrix of shape (output.size, input.size).

        Built row by row from the VJP rule applied to unit upstream vectors (the VJP is
        linear in the upstream). None when input ``i`` receives no gradient.
        """
        if self.downstream[i] is None:
            return None
        xp = self.node.xp
        g = self.upstream
        n_out = int(g.size) if hasattr(g, "size") else 1
        n_in = int(self.downstream[i].size)
        if n_out * n_in > max_size:
            raise ValueError(
                f"{self.label}: the local Jacobian would have {n_out}x{n_in} entries; "
                "pass a larger max_size if you really want it"
            )
        rows = []
        for k in range(n_out):
            e = xp.zeros((n_out,), dtype=g.dtype, **device_kwargs(g))
            e[k] = 1
            gi = self.vjp(xp.reshape(e, tuple(g.shape)))[i]
            rows.append(xp.reshape(gi, (n_in,)))
        return xp.stack(rows, axis=0)

    def product(self, i: int) -> Any:
        """upstream (as a row vector) times the local Jacobian of input ``i``, reshaped
        like that input: it equals ``downstream[i]``."""
        j = self.local_jacobian(i)
        if j is None:
            return None
        xp = self.node.xp
        row = xp.reshape(self.upstream, (1, j.shape[0]))
        return xp.reshape(row @ j, tuple(self.downstream[i].shape))

    def draw(self, **kwargs: Any) -> Any:
        """The graph with this node highlighted, showing only the gradients that backward
        had computed by the end of this step (pass ``until=None`` to show them all)."""
        kwargs.setdefault("until", self.step)
        return self.trace.draw(highlight=self.node, **kwargs)

    def text(self) -> str:
        lines = [f"step {self.step}: {self.label} ({self.op.name})",
                 f"  upstream   {_brief(self.upstream)}"]  # fmt: skip
        for i, g in enumerate(self.downstream):
            if g is None:
                continue
            lines.append(f"  -> {self.input_labels[i]}: downstream {_brief(g)}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from html import escape

        rows = [f"<tr><th colspan='4'>step {self.step}: {escape(self.label)}</th></tr>",
                "<tr><th>input</th><th>upstream</th><th>&#215; local Jacobian</th>"
                "<th>= downstream</th></tr>"]  # fmt: skip
        for i, g in enumerate(self.downstream):
            if g is None:
                continue
            try:
                j = _brief(self.local_jacobian(i, max_size=64), limit=64)
            except (ValueError, RuntimeError):
                j = "(too large to show)"
            rows.append(
                f"<tr><td>{escape(str(self.input_labels[i]))}</td>"
                f"<td><pre>{escape(_brief(self.upstream))}</pre></td>"
                f"<td><pre>{escape(j)}</pre></td><td><pre>{escape(_brief(g))}</pre></td></tr>"
            )
        return "<table>" + "".join(rows) + "</table>"

    def __repr__(self) -> str:
        return f"<ReplayStep {self.step}: {self.label}>"
