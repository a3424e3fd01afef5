"""Gradient checkpointing: trade compute for memory by recomputing activations in backward.

``bl.checkpoint(fn, *args)`` runs ``fn(*args)`` without recording its inside: the graph
gets one node that saves only the *inputs*. When backward reaches that node it runs ``fn``
again, this time recording, on fresh leaves holding the saved inputs, and backpropagates
the upstream gradient through the recomputed graph. Parameters that ``fn`` uses (captured
in a closure or a module) receive their gradients during that inner backward pass, as
with ``torch.utils.checkpoint``.

``fn`` must compute the same values when run twice (no fresh random numbers inside).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..backend import is_floating, namespace_of
from ..ops import Op
from ..tensor import MODE, Tensor, apply, backward, enable_grad, no_grad
from . import state

__all__ = ["checkpoint", "checkpoint_sequential", "CheckpointOp"]


class CheckpointOp(Op):
    """An op for one checkpointed call (not a primitive, so not in the registry)."""

    __slots__ = ("fn", "kinds", "replayable")

    def __init__(self, fn: Callable[..., Any], kinds: tuple[str, ...], diff: frozenset) -> None:
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
        )
        self.fn = fn
        self.kinds = kinds  # per argument: "tensor", "int_tensor", "dummy" or "const"
        self.replayable = False  # the VJP runs backward with side effects on parameters

    def _call(self, arrays: Sequence[Any], needs: Sequence[bool] | None) -> Any:
        args = []
        leaves = []
        for i, (kind, a) in enumerate(zip(self.kinds, arrays)):
            if kind == "dummy":
                continue
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
        with no_grad():
            out, _ = self._call(arrays, None)
        return out.data, arrays  # saved: the inputs only

    def _vjp(self, xp: Any, g: Any, saved: Any, needs: Sequence[bool]) -> tuple[Any, ...]:
        state.recomputing += 1
        try:
            with enable_grad():
                out, leaves = self._call(saved, needs)
            if out.requires_grad:
                backward(out, g)
        finally:
            state.recomputing -= 1
        grads: list[Any] = [None] * len(saved)
        for i, t in leaves:
            if needs[i]:
                grads[i] = t.grad if t.grad is not None else namespace_of(t.data).zeros_like(t.data)
        for i, kind in enumerate(self.kinds):
            if kind == "dummy" and needs[i]:
                grads[i] = namespace_of(saved[i]).zeros_like(saved[i])
        return tuple(grads)

    def _jvp(self, xp: Any, tangents: Any, inputs: Any, out: Any) -> Any:
        raise NotImplementedError("forward mode through bl.checkpoint is not supported")


def checkpoint(fn: Callable[..., Tensor], *args: Any) -> Tensor:
    """``fn(*args)``, recorded as one node that recomputes ``fn`` during backward.

    The node keeps only ``args`` alive (not ``fn``'s intermediate activations). Gradients
    equal those of ``fn(*args)`` without checkpointing. If no argument requires a gradient
    (the first segment of a network fed with data), a zero-size dummy input that does is
    added, so parameters inside ``fn`` still receive gradients.
    """
    if not MODE.grad_enabled or MODE.forward_level:
        return fn(*args)
    kinds = []
    diff = set()
    call_args = []
    any_grad = False
    xp = None
    for i, a in enumerate(args):
        if type(a) is Tensor:
            xp = namespace_of(a.data)
            if is_floating(xp, a.data.dtype):
                kinds.append("tensor")
                diff.add(i)
                any_grad = any_grad or a.requires_grad
                call_args.append(a)
                continue
            kinds.append("int_tensor")  # e.g. class labels: re-wrapped, never differentiated
            call_args.append(a.data)
        else:
            kinds.append("const")
            call_args.append(a)
    if not any_grad:
        if xp is None:
            from ..backend import default_namespace

            xp = default_namespace()[0]
        dummy = Tensor(xp.zeros((0,)), True)
        dummy.name = "grad anchor"
        diff.add(len(call_args))
        kinds.append("dummy")
        call_args.append(dummy)
    op = CheckpointOp(fn, tuple(kinds), frozenset(diff))
    return apply(op, *call_args)


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
