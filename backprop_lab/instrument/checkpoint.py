"""Gradient checkpointing: trade compute for memory by recomputing activations in backward.

``bl.checkpoint(fn, *args)`` runs ``fn(*args)`` without recording its inside: the graph
gets one node that saves only the *inputs*. When backward reaches that node it runs ``fn``
again, this time recording, on fresh leaves holding the saved inputs, and backpropagates
the upstream gradient through the recomputed graph, as ``torch.utils.checkpoint`` does.

Tensors that ``fn`` uses without receiving them as arguments (parameters in a closure or a
module, or an activation computed earlier) are found during the first run and become
extra inputs of the node. The inner backward pass stops at them and hands their gradients
to the outer one, so they are accumulated like any other input's, and a captured
activation's own graph is left for the outer pass to walk.

``fn`` must compute the same values when run twice (no fresh random numbers inside).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..backend import is_floating, namespace_of
from ..ops import Op
from ..tensor import MODE, Listener, Tensor, apply, backpropagate, mode_changed

__all__ = ["checkpoint", "checkpoint_sequential", "CheckpointOp"]


class _Capture(Listener):
    """Collects the tensors requiring grad that ops inside a no_grad run receive: under
    no_grad nothing computed inside requires grad, so these all come from outside."""

    def __init__(self, exclude: Sequence[Tensor]) -> None:
        self.exclude = {id(t) for t in exclude}
        self.found: dict[int, Tensor] = {}

    def on_forward(self, op, node, inputs, output, params, seconds) -> None:
        for a in inputs:
            if type(a) is Tensor and a.requires_grad and id(a) not in self.exclude:
                self.found.setdefault(id(a), a)


class CheckpointOp(Op):
    """An op for one checkpointed call (not a primitive, so not in the registry)."""

    __slots__ = ("fn", "kinds", "replayable", "captured", "watched", "_pending")

    def __init__(self, fn: Callable[..., Any], kinds: tuple[str, ...], diff: frozenset,
                 captured: tuple[Tensor, ...], out: Any) -> None:  # fmt: skip
        name = f"checkpoint({getattr(fn, '__name__', type(fn).__name__)})"
        super().__init__(
            name,
            self._forward,
            self._vjp,
            self._jvp,
            r"z = f(x)",
            r"\bar x = \bar z\, \partial f/\partial x \text{ (f recomputed)}",
            r"\dot z = \partial f/\partial x\, \dot x",
            "Checkpointed call: saves only its inputs and recomputes f during backward.",
            diff,
            None,
            "movement",
        )
        self.fn = fn
        self.kinds = kinds  # per argument: "tensor", "int_tensor" or "const"
        self.replayable = False  # the VJP runs backward through a recomputed graph
        self.captured = captured  # tensors fn reads from outside (extra node inputs)
        self.watched = tuple(t._data for t in captured)  # in-place changes are checked
        self._pending = out  # the output of the first run, handed over by _forward

    def _call(self, arrays: Sequence[Any], needs: Sequence[bool] | None) -> Any:
        args = []
        leaves = []
        for i, (kind, a) in enumerate(zip(self.kinds, arrays)):
            if kind == "tensor":
                t = Tensor(a, bool(needs[i]) if needs is not None else False)
                args.append(t)
                leaves.append((i, t))
            elif kind == "int_tensor":
                args.append(Tensor(a))
            else:
                args.append(a)
        out = self.fn(*args)
        if type(out) is not Tensor:
            raise TypeError(
                f"{self.name}: the checkpointed function must return one Tensor, "
                f"not {type(out).__name__}"
            )
        return out, leaves

    def _forward(self, xp: Any, *arrays: Any) -> tuple[Any, Any]:
        out, self._pending = self._pending, None
        return out, arrays[: len(self.kinds)]  # saved: the explicit inputs only

    def _vjp(self, xp: Any, g: Any, saved: Any, needs: Sequence[bool]) -> tuple[Any, ...]:
        n = len(self.kinds)
        with mode_changed(grad_enabled=True, recomputing=MODE.recomputing + 1):
            out, leaves = self._call(saved, needs)
            targets: dict[Any, int] = {t: i for i, t in leaves if needs[i]}
            for k, t in enumerate(self.captured):
                if needs[n + k]:
                    targets.setdefault(t._node or t, n + k)
            found = backpropagate(out, g, targets=targets) if out.requires_grad else {}
        grads: list[Any] = [None] * (n + len(self.captured))
        for target, i in targets.items():
            grads[i] = found.get(target)
        for i, need in enumerate(needs):
            if need and grads[i] is None:  # the output does not depend on this input
                like = saved[i] if i < n else self.captured[i - n]._data
                grads[i] = namespace_of(like).zeros_like(like)
        return tuple(grads)

    def _jvp(self, xp: Any, tangents: Any, inputs: Any, out: Any) -> Any:
        raise NotImplementedError("forward mode through bl.checkpoint is not supported")


def checkpoint(fn: Callable[..., Tensor], *args: Any) -> Tensor:
    """``fn(*args)``, recorded as one node that recomputes ``fn`` during backward.

    The node keeps only ``args`` alive (not ``fn``'s intermediate activations). Gradients
    equal those of ``fn(*args)`` without checkpointing, for the arguments and for every
    tensor ``fn`` reads from outside (parameters, earlier activations).
    """
    if not MODE.grad_enabled or MODE.forward_level:
        return fn(*args)
    kinds = []
    diff = set()
    call_args: list[Any] = []
    explicit: list[Tensor] = []
    for i, a in enumerate(args):
        if type(a) is Tensor:
            xp = namespace_of(a._data)
            if is_floating(xp, a._data.dtype):
                kinds.append("tensor")
                diff.add(i)
                call_args.append(a)
                explicit.append(a)
                continue
            kinds.append("int_tensor")  # e.g. class labels: re-wrapped, never differentiated
            call_args.append(a._data)
        else:
            kinds.append("const")
            call_args.append(a)
    probe = CheckpointOp(fn, tuple(kinds), frozenset(), (), None)
    with _Capture(explicit) as capture, mode_changed(grad_enabled=False):
        out, _ = probe._call([a._data if type(a) is Tensor else a for a in call_args], None)
    captured = tuple(capture.found.values())
    diff.update(range(len(kinds), len(kinds) + len(captured)))
    op = CheckpointOp(fn, tuple(kinds), frozenset(diff), captured, out._data)
    return apply(op, *call_args, *captured)


def checkpoint_sequential(
    layers: Sequence[Callable[[Tensor], Tensor]], segments: int, x: Tensor
) -> Tensor:
    """Run ``layers`` one after another in ``segments`` chunks, each checkpointed.

    As in ``torch.utils.checkpoint.checkpoint_sequential`` the last chunk is not
    checkpointed (backward needs its activations at once). With n layers and sqrt(n)
    segments, the saved memory falls from O(n) activations to O(sqrt(n)), for about one
    extra forward pass of compute.
    """
    layers = list(layers)
    if segments < 1:
        raise ValueError("segments must be at least 1")
    n = len(layers)
    size = -(-n // segments)
    chunks = [layers[i : i + size] for i in range(0, n, size)]

    def run(chunk: list[Callable[[Tensor], Tensor]]) -> Callable[[Tensor], Tensor]:
        def segment(h: Tensor) -> Tensor:
            for layer in chunk:
                h = layer(h)
            return h

        return segment

    for k, chunk in enumerate(chunks):
        seg = run(chunk)
        x = seg(x) if k == len(chunks) - 1 else checkpoint(seg, x)
    return x
