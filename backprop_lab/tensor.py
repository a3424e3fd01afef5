"""The engine core: ``Tensor``, the graph it records, and reverse-mode ``backward``.

Read this file top to bottom and you have all of backpropagation:

1. :func:`apply` runs one op's forward rule. If any input requires a gradient it also
   records a :class:`Node`: which op ran, the nodes of its inputs (its *parents*) and the
   values its backward rule will need (``saved``, nothing more).
2. :func:`backward` walks the recorded nodes from the output back to the leaves in reverse
   creation order (a valid reverse topological order, because a node can only consume
   nodes created before it). Each node receives the *upstream* gradient, its op's
   vector-Jacobian product turns that into one gradient per input, and contributions that
   reach the same node along several paths (fan-out) are summed.
3. Forward mode needs no graph: under :func:`backprop_lab.jvp` each op also runs its
   Jacobian-vector-product rule on the tangents of its inputs as it goes.

The op rules themselves live in :mod:`backprop_lab.ops`, one registry entry per op.
Instrumentation (tracing, timing, anomaly detection) subscribes to the events that
:func:`apply` and :func:`backward` emit; with no listener, the cost is one attribute test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from heapq import heappop, heappush
from time import perf_counter
from typing import Any

from .backend import (
    _NS_BY_TYPE,
    BackendError,
    default_namespace,
    is_floating,
    namespace_of,
    to_numpy,
)

__all__ = [
    "Tensor",
    "Node",
    "tensor",
    "apply",
    "apply_unary",
    "apply_binary",
    "backward",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "zero_grad",
    "GraphFreedError",
    "Listener",
    "ShapeError",
    "DtypeError",
]


class GraphFreedError(RuntimeError):
    """backward() reached a node whose saved values were already released."""


class ShapeError(ValueError):
    """An op was given operands whose shapes it cannot combine."""


class DtypeError(TypeError):
    """A differentiable op or ``requires_grad`` met a non-floating dtype."""


class _Mode:
    """Process-wide switches, read by every op."""

    __slots__ = ("grad_enabled", "listeners", "forward_level")

    def __init__(self) -> None:
        self.grad_enabled = True
        self.listeners: tuple[Any, ...] = ()  # objects with on_forward / on_backward / ...
        self.forward_level = 0  # > 0 inside bl.jvp: ops also push tangents


MODE = _Mode()
_next_seq = itertools.count().__next__


class Node:
    """One recorded application of an op: what backward needs to reach the op's inputs.

    ``parents[i]`` is the Node of input ``i``, the leaf Tensor itself, or None when that
    input needs no gradient. ``saved`` holds exactly what the op's VJP reads. The node never
    refers to its own output tensor, so the graph has no reference cycles and CPython frees
    it by reference counting alone.
    """

    __slots__ = ("op", "parents", "saved", "needs", "xp", "seq", "grad", "hooks", "meta")

    def __init__(self, op, parents, saved, needs, xp) -> None:
        self.op = op
        self.parents = parents
        self.saved = saved
        self.needs = needs
        self.xp = xp
        self.seq = _next_seq()
        self.grad = None  # gradient accumulated here during one backward pass
        self.hooks: list[Callable] | None = None
        self.meta: dict[str, Any] | None = None  # filled by listeners (shapes, source line)

    def __repr__(self) -> str:
        state = "freed" if self.parents is None else f"{len(self.parents)} inputs"
        return f"<Node {self.op.name} #{self.seq} ({state})>"


class Tensor:
    """An array that remembers how it was computed, so gradients can flow back through it.

    Create one with :func:`backprop_lab.tensor`. ``data`` is the backend array (NumPy,
    CuPy or array-API); ``grad`` is a backend array of the same shape, filled by
    :meth:`backward` and *accumulated* across calls (reset with ``t.grad = None`` or
    :func:`backprop_lab.zero_grad`).
    """

    __slots__ = ("data", "grad", "requires_grad", "_node", "_tangent", "_hooks", "_name")
    __array_ufunc__ = None  # make NumPy defer to our reflected operators (ndarray * Tensor)

    def __init__(self, data: Any, requires_grad: bool = False, _node: Node | None = None):
        # Only the four slots every op needs are set here; _tangent, _hooks and _name stay
        # unset until used (read with getattr defaults), which keeps creating a tensor cheap.
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self._node = _node

    @property
    def name(self) -> str | None:
        """An optional label, shown by traces and graph drawings."""
        return getattr(self, "_name", None)

    @name.setter
    def name(self, value: str | None) -> None:
        self._name = value

    # -- basic properties -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        n = 1
        for s in self.data.shape:
            n *= s
        return n

    @property
    def is_leaf(self) -> bool:
        """True for tensors the user created (no recorded op produced them)."""
        return self._node is None

    @property
    def node(self) -> Node | None:
        """The recorded Node that produced this tensor (None for leaves and constants)."""
        return self._node

    def __len__(self) -> int:
        return self.data.shape[0]

    def __repr__(self) -> str:
        body = repr(to_numpy(self.data)).replace("array(", "tensor(", 1)
        if self._node is not None:
            body = body[:-1] + f", grad_fn={self._node.op.name})"
        elif self.requires_grad:
            body = body[:-1] + ", requires_grad=True)"
        return body

    def numpy(self) -> Any:
        """The values as a NumPy array on the host (a copy for GPU backends)."""
        return to_numpy(self.data)

    def __array__(self, dtype=None, copy=None):
        out = to_numpy(self.data)
        return out.astype(dtype) if dtype is not None else out

    def item(self) -> float:
        """The single value of a one-element tensor, as a Python number."""
        return to_numpy(self.data).item()

    def __float__(self) -> float:
        return float(self.item())

    def detach(self) -> Tensor:
        """The same values, cut off from the graph (no gradient flows through)."""
        return Tensor(self.data)

    # -- gradients ----------------------------------------------------------------------
    def backward(self, upstream: Any = None, retain_graph: bool = False) -> None:
        """Backpropagate from this tensor; see :func:`backward`."""
        backward(self, upstream, retain_graph=retain_graph)

    def register_hook(self, fn: Callable[[Any], Any]) -> Callable[[], None]:
        """Call ``fn(grad)`` when this tensor's gradient is computed in backward.

        If ``fn`` returns an array it replaces the gradient. Returns a function that
        removes the hook.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "register_hook on a tensor that does not require grad: no gradient will "
                "ever reach it. Create it with requires_grad=True."
            )
        owner = self._node if self._node is not None else self
        if owner.__class__ is Node:
            if owner.hooks is None:
                owner.hooks = []
            hooks = owner.hooks
        else:
            if getattr(self, "_hooks", None) is None:
                self._hooks = []
            hooks = self._hooks
        hooks.append(fn)

        def remove() -> None:
            if fn in hooks:
                hooks.remove(fn)

        return remove

    # Operators, methods such as .sum() and .T are attached in backprop_lab.functional.


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """Make a Tensor on the default backend (a copy: your input is never changed).

    ``dtype`` may be a string such as ``"float32"`` or a backend dtype. Python floats become
    float64. Only floating tensors can have ``requires_grad=True``.
    """
    xp, device = default_namespace()
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(dtype, str):
        try:
            dtype = getattr(xp, dtype)
        except AttributeError:
            raise DtypeError(f"unknown dtype {dtype!r}: try 'float64' or 'float32'") from None
    src_ns = None
    try:
        src_ns = namespace_of(data)
    except BackendError:
        pass
    if src_ns is not None and src_ns is not xp:
        data = to_numpy(data)  # another backend's array: copy through the host
    kwargs = {"copy": True} if src_ns is not None else {}
    if device is not None:
        kwargs["device"] = device
    try:
        arr = xp.asarray(data, dtype=dtype, **kwargs)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"bl.tensor could not turn {type(data).__name__} into an array ({exc}). "
            "Pass numbers, nested lists of equal length, or an array."
        ) from exc
    if requires_grad and not is_floating(xp, arr.dtype):
        raise DtypeError(
            f"requires_grad=True needs a floating dtype, but the data is {arr.dtype}. "
            "Gradients are only defined for real numbers: write floats (1.0 rather than 1) "
            "or pass dtype='float64'."
        )
    return Tensor(arr, requires_grad)


# --------------------------------------------------------------------------------------
# Recording: apply one op
# --------------------------------------------------------------------------------------
# ids of dtypes known to be floating (the objects are kept alive so an id is never reused;
# ids rather than the dtypes themselves, because dtypes of different libraries must not be
# compared with each other).
_FLOAT_DTYPES: set[int] = set()
_FLOAT_KEEP: list[Any] = []


def _check_float(op, arr) -> None:
    dt = arr.dtype
    if is_floating(namespace_of(arr), dt):
        _FLOAT_KEEP.append(dt)
        _FLOAT_DTYPES.add(id(dt))
        return
    raise DtypeError(
        f"{op.name}: got an input of dtype {dt}, but {op.name} is differentiable and needs "
        "floating-point inputs. Convert first, e.g. bl.tensor(x, dtype='float64')."
    )


def _check_same_backend(op, a, b) -> None:
    if namespace_of(a) is not namespace_of(b):
        raise BackendError(
            f"{op.name}: inputs live on different backends ({type(a).__module__} and "
            f"{type(b).__module__}). Create all tensors under the same bl.use_backend(...)."
        )


def apply(op, *args: Any, **params: Any) -> Tensor:
    """Run ``op`` on ``args`` (Tensors, arrays or Python numbers) and record it if needed.

    Tensor arguments are the op's differentiable inputs; non-differentiable operands
    (a condition, class labels, an index) are passed as plain arrays or values.
    """
    arrays = []
    parents = []
    needs = []
    record = False
    grad_on = MODE.grad_enabled
    first = None
    for a in args:
        if type(a) is Tensor:
            d = a.data
            if id(d.dtype) not in _FLOAT_DTYPES:
                _check_float(op, d)
            if first is None:
                first = d
            elif type(d) is not type(first):
                _check_same_backend(op, first, d)
            arrays.append(d)
            if grad_on and a.requires_grad:
                record = True
                parents.append(a._node or a)
                needs.append(True)
                continue
        else:
            arrays.append(a)
        parents.append(None)
        needs.append(False)
    if first is None:
        xp = _namespace_of_args(arrays)
    else:
        xp = _NS_BY_TYPE.get(type(first)) or namespace_of(first)
    listeners = MODE.listeners
    if listeners:
        t0 = perf_counter()
    try:
        out, saved = op.forward(xp, *arrays, **params) if params else op.forward(xp, *arrays)
    except (ValueError, TypeError, IndexError) as exc:
        raise _input_error(op, arrays, params, exc) from exc
    if record:
        node = Node(op, tuple(parents), saved, tuple(needs), xp)
        result = Tensor(out, True, node)
    else:
        node = None
        result = Tensor(out)
    if MODE.forward_level:
        tangents = [getattr(a, "_tangent", None) if type(a) is Tensor else None for a in args]
        if any(t is not None for t in tangents):
            result._tangent = op.jvp(xp, tangents, arrays, out, **params)
    if listeners:
        seconds = perf_counter() - t0
        for listener in listeners:
            listener.on_forward(op, node, args, result, params, seconds)
    return result


# The two calls below are apply() specialised for the commonest shapes of call, one or
# two operands and no parameters (Tensor operators, bl.exp, bl.tanh, ...). They take the
# same steps as apply(), minus the generic loop, and hand over to apply() whenever a
# listener or forward mode is active, so there is one behaviour to reason about.
_NEEDS1 = (True,)
_NEEDS2 = ((False, False), (False, True), (True, False), (True, True))


def apply_unary(op, x: Any) -> Tensor:
    """:func:`apply` for one Tensor operand and no parameters."""
    if type(x) is not Tensor or MODE.listeners or MODE.forward_level:
        return apply(op, x)
    d = x.data
    if id(d.dtype) not in _FLOAT_DTYPES:
        _check_float(op, d)
    xp = _NS_BY_TYPE.get(type(d)) or namespace_of(d)
    try:
        out, saved = op.forward(xp, d)
    except (ValueError, TypeError, IndexError) as exc:
        raise _input_error(op, [d], {}, exc) from exc
    if x.requires_grad and MODE.grad_enabled:
        return Tensor(out, True, Node(op, (x._node or x,), saved, _NEEDS1, xp))
    return Tensor(out)


def apply_binary(op, x: Any, y: Any) -> Tensor:
    """:func:`apply` for two operands (Tensors, arrays or numbers) and no parameters."""
    if MODE.listeners or MODE.forward_level:
        return apply(op, x, y)
    grad_on = MODE.grad_enabled
    if type(x) is Tensor:
        a = x.data
        if id(a.dtype) not in _FLOAT_DTYPES:
            _check_float(op, a)
        px = (x._node or x) if grad_on and x.requires_grad else None
        first = a
    else:
        a, px, first = x, None, None
    if type(y) is Tensor:
        b = y.data
        if id(b.dtype) not in _FLOAT_DTYPES:
            _check_float(op, b)
        py = (y._node or y) if grad_on and y.requires_grad else None
        if first is None:
            first = b
        elif type(b) is not type(first):
            _check_same_backend(op, first, b)
    else:
        b, py = y, None
    if first is None:
        return apply(op, x, y)
    xp = _NS_BY_TYPE.get(type(first)) or namespace_of(first)
    try:
        out, saved = op.forward(xp, a, b)
    except (ValueError, TypeError, IndexError) as exc:
        raise _input_error(op, [a, b], {}, exc) from exc
    if px is None and py is None:
        return Tensor(out)
    needs = _NEEDS2[(px is not None) * 2 + (py is not None)]
    return Tensor(out, True, Node(op, (px, py), saved, needs, xp))


def _namespace_of_args(arrays: list[Any]) -> Any:
    for a in arrays:
        if hasattr(a, "shape") and hasattr(a, "dtype"):
            return namespace_of(a)
    return default_namespace()[0]


def _shape_of(a: Any) -> Any:
    return tuple(a.shape) if hasattr(a, "shape") else type(a).__name__


def _input_error(op, arrays, params, exc) -> Exception:
    shapes = ", ".join(str(_shape_of(a)) for a in arrays)
    hint = op.shape_hint(*[_shape_of(a) for a in arrays], **params) if op.shape_hint else ""
    msg = f"{op.name}: cannot apply to inputs of shapes {shapes}"
    if params:
        msg += f" with {', '.join(f'{k}={v!r}' for k, v in params.items())}"
    msg += f". {hint or ''}".rstrip() + f" (backend said: {exc})"
    if isinstance(exc, IndexError):
        return IndexError(msg)
    if isinstance(exc, TypeError) and "shape" not in str(exc):
        return TypeError(msg)
    return ShapeError(msg)


# --------------------------------------------------------------------------------------
# Reverse mode
# --------------------------------------------------------------------------------------
def _owned(xp, g, seen: set[int]) -> Any:
    """A private, writable copy of ``g`` unless it is already one (leaf grads are user-owned).

    VJP rules may pass one array to several inputs (add) or return read-only broadcast views
    (sum); a leaf's .grad must be neither.
    """
    base = getattr(g, "base", False)
    if base is None and id(g) not in seen and getattr(g, "flags", None) is not None:
        if g.flags.writeable:
            seen.add(id(g))
            return g
    out = xp.asarray(g, copy=True)
    seen.add(id(out))
    return out


def backward(root: Tensor, upstream: Any = None, retain_graph: bool = False) -> None:
    """Accumulate d(root)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

    ``upstream`` is the gradient of some final scalar with respect to ``root`` (the row
    vector of a vector-Jacobian product); it may be omitted only when ``root`` is a scalar,
    where it defaults to 1. The graph's saved values are released afterwards unless
    ``retain_graph=True``.
    """
    if not root.requires_grad:
        raise RuntimeError(
            "backward() on a tensor that does not require grad: nothing it depends on was "
            "created with requires_grad=True (or it was computed under bl.no_grad())."
        )
    data = root.data
    xp = namespace_of(data)
    if upstream is None:
        if tuple(data.shape) != ():
            raise ValueError(
                f"backward() needs an upstream gradient for a non-scalar output of shape "
                f"{tuple(data.shape)}: the gradient is only implied for a scalar loss. "
                "Reduce it first (e.g. y.sum().backward()) or pass "
                "y.backward(upstream) with an array of the same shape."
            )
        g = xp.ones_like(data)
    else:
        if type(upstream) is Tensor:
            upstream = upstream.data
        g = xp.asarray(upstream, dtype=data.dtype)
        if tuple(g.shape) != tuple(data.shape):
            raise ShapeError(
                f"backward(): upstream gradient has shape {tuple(g.shape)} but the tensor has "
                f"shape {tuple(data.shape)}; they must match."
            )
    leaf_grads: dict[Tensor, Any] = {}  # keyed by identity (Tensor hashes by id)
    root_node = root._node
    if root_node is None:
        leaf_grads[root] = g
    else:
        _run_backward(root_node, g, leaf_grads, retain_graph)
    seen: set[int] = set()
    listeners = MODE.listeners
    for leaf, lg in leaf_grads.items():
        leaf_hooks = getattr(leaf, "_hooks", None)
        if leaf_hooks:
            for hook in leaf_hooks:
                replaced = hook(lg)
                if replaced is not None:
                    lg = replaced
        lxp = namespace_of(leaf.data)
        if leaf.grad is None:
            leaf.grad = _owned(lxp, lg, seen)
        else:
            leaf.grad = leaf.grad + lg
        if listeners:
            for listener in listeners:
                listener.on_leaf_grad(leaf, lg)


def _run_backward(root: Node, g: Any, leaf_grads: dict, retain_graph: bool) -> None:
    listeners = MODE.listeners
    root.grad = g
    heap = [(-root.seq, root)]
    while heap:
        node = heappop(heap)[1]
        g = node.grad
        node.grad = None
        parents = node.parents
        if parents is None:
            raise GraphFreedError(
                f"backward() reached the {node.op.name} node, whose saved values were freed by "
                "an earlier backward(). Pass retain_graph=True to the first backward() if you "
                "need to backpropagate through the same graph twice, or run the forward "
                "pass again."
            )
        if node.hooks:
            for hook in node.hooks:
                replaced = hook(g)
                if replaced is not None:
                    g = replaced
        if listeners:
            t0 = perf_counter()
            grads = node.op.vjp(node.xp, g, node.saved, node.needs)
            seconds = perf_counter() - t0
            for listener in listeners:
                listener.on_backward(node, g, grads, seconds)
        else:
            grads = node.op.vjp(node.xp, g, node.saved, node.needs)
        for parent, pg in zip(parents, grads):
            if parent is None:
                continue
            if parent.__class__ is Node:
                if parent.grad is None:
                    parent.grad = pg
                    heappush(heap, (-parent.seq, parent))
                else:
                    if listeners:
                        for listener in listeners:
                            listener.on_accumulate(parent, parent.grad, pg)
                    parent.grad = parent.grad + pg
            else:
                prev = leaf_grads.get(parent)
                if prev is None:
                    leaf_grads[parent] = pg
                else:
                    if listeners:
                        for listener in listeners:
                            listener.on_accumulate(parent, prev, pg)
                    leaf_grads[parent] = prev + pg
        if not retain_graph:
            node.parents = None
            node.saved = None
            if listeners:
                for listener in listeners:
                    listener.on_free(node)


def zero_grad(*tensors_or_modules: Any) -> None:
    """Reset ``.grad`` to None on tensors, or on every parameter of modules/optimizers."""
    for obj in tensors_or_modules:
        if isinstance(obj, Tensor):
            obj.grad = None
        elif hasattr(obj, "parameters"):
            for p in obj.parameters():
                p.grad = None
        else:
            for p in obj:
                p.grad = None


# --------------------------------------------------------------------------------------
# Grad mode
# --------------------------------------------------------------------------------------
@contextmanager
def no_grad() -> Iterator[None]:
    """Run ops without recording a graph (evaluation, optimizer updates)."""
    prev = MODE.grad_enabled
    MODE.grad_enabled = False
    try:
        yield
    finally:
        MODE.grad_enabled = prev


@contextmanager
def enable_grad() -> Iterator[None]:
    """Record the graph again inside a :func:`no_grad` block."""
    prev = MODE.grad_enabled
    MODE.grad_enabled = True
    try:
        yield
    finally:
        MODE.grad_enabled = prev


def is_grad_enabled() -> bool:
    return MODE.grad_enabled


class Listener:
    """Base class for engine listeners: every event is ignored unless overridden.

    ``with listener:`` subscribes it to the events of :func:`apply` and :func:`backward`
    for the duration of the block (see :mod:`backprop_lab.trace` for one that records all).
    """

    def on_forward(self, op, node, inputs, output, params, seconds) -> None:
        """An op ran forward; ``node`` is None when nothing needed a gradient."""

    def on_backward(self, node, upstream, input_grads, seconds) -> None:
        """``node`` turned ``upstream`` into one gradient per input."""

    def on_accumulate(self, target, existing, contribution) -> None:
        """Two contributions to one gradient (fan-out) are about to be summed."""

    def on_leaf_grad(self, leaf, grad) -> None:
        """A leaf tensor receives its gradient from this backward pass."""

    def on_free(self, node) -> None:
        """Backward released ``node``'s saved values."""

    def __enter__(self):
        MODE.listeners = MODE.listeners + (self,)
        return self

    def __exit__(self, *exc: object) -> None:
        MODE.listeners = tuple(x for x in MODE.listeners if x is not self)
