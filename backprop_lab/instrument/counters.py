"""Count what a computation costs: ops, floating-point operations and passes.

    with bl.count() as c:
        loss = f(x); loss.backward()
    c.forward_ops, c.backward_ops, c.flops

FLOP convention (an estimate a reader can reproduce by hand, not a hardware count):

* ``matmul`` of (..., m, k) by (..., k, n): ``2 m k n`` per matrix (a multiply and an add
  per term); a dot product of length k: ``2k``.
* elementwise ops (add, sub, mul, div, neg, pow, exp, log, sin, cos, tanh, sigmoid, relu,
  maximum, where): one per *output* element.
* reductions and the fused ops built on them (sum, mean, max, softmax, log_softmax,
  cross_entropy, mse): one per *input* element.
* data movement (reshape, transpose, getitem, concatenate, stack): zero.
* backward: the node's forward FLOPs once for every input that receives a gradient
  (a matmul needing both gradients costs ``2 x 2mkn``), the usual "backward is about twice
  the forward" rule.
* forward mode (inside :func:`backprop_lab.jvp`): an op pushing tangents costs its forward
  FLOPs once for every input that carries a tangent, counted as ``tangent_flops``.

Ops that :func:`backprop_lab.checkpoint` re-runs during backward count as forward ops and
also as ``recompute_ops``/``recompute_flops``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..tensor import MODE, Listener, Tensor

__all__ = ["Counter", "count", "forward_flops"]


def _size(x: Any) -> int:
    if type(x) is Tensor:
        x = x.data
    s = getattr(x, "size", None)
    if s is None:
        return 1
    return int(s)


def forward_flops(op: Any, inputs: Any, output: Any) -> int:
    """FLOPs of one forward application of ``op`` under the module's convention."""
    kind = op.flops
    if callable(kind):
        return int(kind([a.data if type(a) is Tensor else a for a in inputs],
                        output.data if type(output) is Tensor else output))  # fmt: skip
    if kind == "elementwise":
        return _size(output)
    if kind == "matmul":
        a = inputs[0].data if type(inputs[0]) is Tensor else inputs[0]
        return 2 * int(a.shape[-1]) * _size(output)
    if kind == "reduction":
        return _size(inputs[0])
    return 0


def _backward_flops(node: Any, upstream: Any, grads: Any) -> int:
    kind = node.op.flops
    if callable(kind):  # the forward count, once per input that receives a gradient
        f = (node.meta or {}).get("flops", _size(upstream))
        return f * sum(1 for g in grads if g is not None)
    if kind == "movement":
        return 0
    n = 0
    for g in grads:
        if g is None:
            continue
        if kind == "elementwise":
            n += _size(upstream)
        elif kind == "matmul":
            n += 2 * int(node.saved[0].shape[-1]) * _size(upstream)
        else:
            n += _size(g)
    return n


class Counter(Listener):
    """An engine listener that counts ops, FLOPs and passes (see module doc)."""

    def __init__(self) -> None:
        self.forward_ops = 0
        self.backward_ops = 0
        self.tangent_ops = 0
        self.recompute_ops = 0
        self.forward_flops = 0
        self.backward_flops = 0
        self.tangent_flops = 0
        self.recompute_flops = 0
        self.backward_passes = 0
        self.forward_passes = 0  # calls of functions wrapped with :meth:`track`
        self.per_op: dict[str, list[int]] = {}  # op name -> [forward count, forward flops]
        self._last_seq = -1
        self._new_pass = True

    @property
    def flops(self) -> int:
        """All FLOPs: forward + backward + tangent (recomputation is in forward)."""
        return self.forward_flops + self.backward_flops + self.tangent_flops

    @property
    def ops(self) -> int:
        return self.forward_ops + self.backward_ops

    # -- listener protocol -----------------------------------------------------------------
    def on_forward(self, op, node, inputs, output, params, seconds) -> None:
        f = forward_flops(op, inputs, output)
        self.forward_ops += 1
        self.forward_flops += f
        entry = self.per_op.get(op.name)
        if entry is None:
            self.per_op[op.name] = [1, f]
        else:
            entry[0] += 1
            entry[1] += f
        if node is not None and callable(op.flops):
            node.meta = {**(node.meta or {}), "flops": f}
        if MODE.recomputing:
            self.recompute_ops += 1
            self.recompute_flops += f
        else:
            self._new_pass = True
        if MODE.forward_level and getattr(output, "_tangent", None) is not None:
            k = sum(1 for a in inputs if getattr(a, "_tangent", None) is not None)
            self.tangent_ops += 1
            self.tangent_flops += f * k

    def on_backward(self, node, upstream, input_grads, seconds) -> None:
        self.backward_ops += 1
        self.backward_flops += _backward_flops(node, upstream, input_grads)
        if MODE.recomputing:
            return
        # Within one backward pass nodes are visited in strictly decreasing seq order.
        if self._new_pass or node.seq >= self._last_seq:
            self.backward_passes += 1
            self._new_pass = False
        self._last_seq = node.seq

    def on_leaf_grad(self, leaf, grad) -> None:
        if not MODE.recomputing:
            self._new_pass = True

    # -- helpers ---------------------------------------------------------------------------
    def track(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap ``fn`` so that each call counts as one forward pass."""

        def tracked(*args: Any, **kwargs: Any) -> Any:
            self.forward_passes += 1
            return fn(*args, **kwargs)

        tracked.__name__ = getattr(fn, "__name__", "tracked")
        tracked.__doc__ = fn.__doc__
        return tracked

    def as_dict(self) -> dict[str, int]:
        keys = ("forward_ops backward_ops tangent_ops recompute_ops forward_flops "
                "backward_flops tangent_flops recompute_flops flops forward_passes "
                "backward_passes").split()  # fmt: skip
        return {k: getattr(self, k) for k in keys}

    def __repr__(self) -> str:
        return (f"<Counter ops fwd={self.forward_ops} bwd={self.backward_ops} "
                f"tangent={self.tangent_ops}; flops={self.flops}; "
                f"passes fwd={self.forward_passes} bwd={self.backward_passes}>")  # fmt: skip


def count() -> Counter:
    """Count ops, FLOPs and passes run inside ``with bl.count() as c:``."""
    return Counter()
