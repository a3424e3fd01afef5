"""Memory accounting: the bytes a recorded graph keeps alive for the backward pass.

Every recorded :class:`~backprop_lab.tensor.Node` holds ``saved``, exactly the arrays its
op's VJP will read. Those arrays are what reverse mode costs in memory: they are kept from
the forward pass until backward reaches the node and frees them.

The accounting convention, used by :func:`measure_memory` and ``Trace.memory()``:

* an array counts when a node that saves it is recorded, and stops counting when the last
  node saving it is freed (the ``on_free`` event that ``backward`` emits);
* each distinct array object counts once (by ``id``), however many nodes save it; a weight
  matrix saved by a matmul counts like any other saved array;
* shapes, axes and other small Python values in ``saved`` count nothing;
* a graph that is never backpropagated stays counted until the meter closes.
"""

from __future__ import annotations

from typing import Any

from ..tensor import Listener

__all__ = ["SavedMemory", "MemoryMeter", "measure_memory", "saved_arrays", "saved_bytes", "nbytes"]


def nbytes(a: Any) -> int:
    """Bytes of an array's elements (array-API arrays may lack ``.nbytes``)."""
    n = getattr(a, "nbytes", None)
    if n is not None:
        return int(n)
    from ..backend import namespace_of

    xp = namespace_of(a)
    dt = a.dtype
    if xp.isdtype(dt, "bool"):
        bits = 8
    elif xp.isdtype(dt, "integral"):
        bits = xp.iinfo(dt).bits
    else:
        bits = xp.finfo(dt).bits * (2 if xp.isdtype(dt, "complex floating") else 1)
    return int(a.size) * bits // 8


def saved_arrays(saved: Any) -> list[Any]:
    """The arrays in a node's ``saved`` tuple (nested tuples searched; numbers ignored)."""
    out: list[Any] = []
    if saved is None:
        return out
    for item in saved:
        if hasattr(item, "shape") and hasattr(item, "dtype"):
            out.append(item)
        elif isinstance(item, (tuple, list)):
            out.extend(saved_arrays(item))
    return out


def saved_bytes(saved: Any) -> int:
    """Bytes of the distinct arrays in one ``saved`` tuple."""
    seen: dict[int, int] = {}
    for a in saved_arrays(saved):
        seen[id(a)] = nbytes(a)
    return sum(seen.values())


class SavedMemory:
    """Live saved-for-backward bytes, updated node by node; ``peak`` is the maximum seen."""

    def __init__(self) -> None:
        self.live: dict[int, list[Any]] = {}  # id(array) -> [array, number of nodes saving it]
        self.by_node: dict[int, list[Any]] = {}  # id(node) -> [node, its arrays]
        self.bytes = 0
        self.peak = 0
        self.timeline: list[int] = []  # live bytes after each recorded or freed node

    def record(self, node: Any, saved: Any) -> None:
        arrays = saved_arrays(saved)
        live = self.live
        for a in arrays:
            entry = live.get(id(a))
            if entry is None:
                live[id(a)] = [a, 1]
                self.bytes += nbytes(a)
            else:
                entry[1] += 1
        self.by_node[id(node)] = [node, arrays]
        if self.bytes > self.peak:
            self.peak = self.bytes
        self.timeline.append(self.bytes)

    def free(self, node: Any) -> None:
        entry = self.by_node.pop(id(node), None)
        if entry is None:
            return
        live = self.live
        for a in entry[1]:
            e = live[id(a)]
            e[1] -= 1
            if e[1] == 0:
                del live[id(a)]
                self.bytes -= nbytes(a)
        self.timeline.append(self.bytes)


class MemoryMeter(SavedMemory, Listener):
    """An engine listener that keeps :class:`SavedMemory` up to date (see module doc)."""

    def on_forward(self, op, node, inputs, output, params, seconds) -> None:
        if node is not None:
            self.record(node, node.saved)

    def on_free(self, node) -> None:
        self.free(node)

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self.by_node.clear()
        self.live.clear()

    def __repr__(self) -> str:
        return f"<MemoryMeter live={self.bytes} B peak={self.peak} B>"


def measure_memory() -> MemoryMeter:
    """Context manager: ``with bl.measure_memory() as m: ...``; then ``m.peak`` (bytes).

    ``m.timeline`` lists the live saved-for-backward bytes after every node recorded
    (forward) or freed (backward), so it rises through the forward pass and falls through
    the backward pass.
    """
    return MemoryMeter()
