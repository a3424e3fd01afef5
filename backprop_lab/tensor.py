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

Two safety nets cost almost nothing when unused. The switches (grad mode, listeners,
forward mode) belong to the calling thread. And changing a tensor's values in place
(``w.data -= ...``) after a node saved them is noticed: :func:`backward` refuses to run
that node's rule on values that are no longer the ones the forward pass used.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from heapq import heappop, heappush
from operator import attrgetter
from time import perf_counter
from typing import Any

from .backend import (
    _NS_BY_TYPE,
    NUMPY,
    NUMPY_ARRAY,
    BackendError,
    default_namespace,
    dtype_kind,
    is_floating,
    namespace_of,
    to_numpy,
)

__all__ = [
    "Tensor",
    "Node",
    "tensor",
    "apply",
    "backward",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "zero_grad",
    "Listener",
    "EngineError",
    "GraphFreedError",
    "ShapeError",
    "AxisError",
    "DtypeError",
    "ArgumentError",
    "InPlaceError",
    "HookError",
    "HigherOrderError",
]


# --------------------------------------------------------------------------------------
# Errors. Every one names the op, what was wrong and what to do; apply() passes them
# through unchanged (only raw backend errors are rewrapped with the op's name and shapes).
# --------------------------------------------------------------------------------------
class EngineError(Exception):
    """Base of the errors the engine raises on purpose (never rewrapped)."""


class GraphFreedError(EngineError, RuntimeError):
    """backward() reached a node whose saved values were already released."""


class ShapeError(EngineError, ValueError):
    """An op was given operands whose shapes it cannot combine."""


class AxisError(ShapeError, IndexError):
    """An axis argument is out of range, repeated or not an integer (as NumPy's AxisError)."""


class DtypeError(EngineError, TypeError):
    """A differentiable op or ``requires_grad`` met a non-floating dtype."""


class ArgumentError(EngineError, TypeError):
    """An op's argument has the wrong type (an axis that is not an int, say)."""


class InPlaceError(EngineError, RuntimeError):
    """Values that a node saved for backward were changed in place after the forward pass."""


class HookError(EngineError, RuntimeError):
    """A gradient hook changed the gradient it was given in place."""


class HigherOrderError(EngineError, NotImplementedError):
    """A derivative of a derivative was asked for; the engine computes first order only."""


# --------------------------------------------------------------------------------------
# Modes: one immutable snapshot per thread (a context variable), replaced by with-blocks
# --------------------------------------------------------------------------------------
class Mode:
    """The engine's switches for the current thread. Immutable: :func:`no_grad`,
    listeners and the transforms install a changed copy and restore the field on exit.

    ``plain`` is True when nothing but grad mode matters (no listener, no forward mode,
    no compile recording): then ops take the short path.
    """

    __slots__ = ("grad_enabled", "listeners", "forward_level", "recomputing", "transforms",
                 "recorder", "plain")  # fmt: skip

    def __init__(self, grad_enabled=True, listeners=(), forward_level=0, recomputing=0,
                 transforms=(), recorder=None) -> None:  # fmt: skip
        init = object.__setattr__  # the fields are set once, here
        init(self, "grad_enabled", grad_enabled)
        init(self, "listeners", listeners)  # objects with on_forward / on_backward / ...
        init(self, "forward_level", forward_level)  # > 0 inside bl.jvp: ops push tangents
        init(self, "recomputing", recomputing)  # > 0 while bl.checkpoint re-runs a segment
        init(self, "transforms", transforms)  # the running transform bodies (grad, vjp, ...)
        init(self, "recorder", recorder)  # the bl.compile recorder, while it records
        init(self, "plain", not listeners and not forward_level and recorder is None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Mode is immutable: use set_mode() or a with-block")

    def replace(self, **changes: Any) -> Mode:
        fields = {k: getattr(self, k) for k in self.__slots__ if k != "plain"}
        fields.update(changes)
        return Mode(**fields)

    def __repr__(self) -> str:
        return (f"<Mode grad_enabled={self.grad_enabled} listeners={len(self.listeners)} "
                f"forward_level={self.forward_level}>")  # fmt: skip


_MODE = contextvars.ContextVar("backprop_lab_mode", default=Mode())  # noqa: B039 (immutable)
current_mode = _MODE.get


def set_mode(**changes: Any) -> Any:
    """Install a copy of this thread's mode with ``changes``; returns the previous values."""
    mode = _MODE.get()
    previous = {k: getattr(mode, k) for k in changes}
    _MODE.set(mode.replace(**changes))
    return previous


@contextmanager
def mode_changed(**changes: Any) -> Iterator[None]:
    """Change mode fields for a with-block (this thread only); restore them on exit."""
    previous = set_mode(**changes)
    try:
        yield
    finally:
        set_mode(**previous)


class _ModeView:
    """``MODE.grad_enabled``, ``MODE.listeners``, ...: the calling thread's switches."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_MODE.get(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        set_mode(**{name: value})

    def __repr__(self) -> str:
        return repr(_MODE.get())


MODE = _ModeView()
_next_seq = itertools.count().__next__  # creation order of nodes and in-place changes
_new = object.__new__


# --------------------------------------------------------------------------------------
# The graph
# --------------------------------------------------------------------------------------
class Node:
    """One recorded application of an op: what backward needs to reach the op's inputs.

    ``parents[i]`` is the Node of input ``i``, the leaf Tensor itself, or None when that
    input needs no gradient. ``saved`` holds exactly what the op's VJP reads. The node never
    refers to its own output tensor, so the graph has no reference cycles and CPython frees
    it by reference counting alone.
    """

    __slots__ = ("op", "parents", "saved", "needs", "xp", "seq", "grad", "hooks", "meta")

    def __repr__(self) -> str:
        state = "freed" if self.parents is None else f"{len(self.parents)} inputs"
        return f"<Node {self.op.name} #{self.seq} ({state})>"


def _record(op, parents, saved, needs, xp, out) -> Tensor:
    """The output Tensor of a recorded op, with its Node (both built without __init__)."""
    node = Node()
    node.op = op
    node.parents = parents
    node.saved = saved
    node.needs = needs
    node.xp = xp
    node.seq = _next_seq()
    node.grad = node.hooks = node.meta = None
    t = _new(Tensor)
    t._data = out
    t.grad = None
    t.requires_grad = True
    t._node = node
    return t


def _constant(out) -> Tensor:
    """An output that needs no gradient (no op input required one, or grad mode is off)."""
    t = _new(Tensor)
    t._data = out
    t.grad = t._node = None
    t.requires_grad = False
    return t


class Tensor:
    """An array that remembers how it was computed, so gradients can flow back through it.

    Create one with :func:`backprop_lab.tensor`. ``data`` is the backend array (NumPy,
    CuPy or array-API); ``grad`` is a backend array of the same shape, filled by
    :meth:`backward` and *accumulated* across calls (reset with ``t.grad = None`` or
    :func:`backprop_lab.zero_grad`).
    """

    __slots__ = ("_data", "grad", "requires_grad", "_node", "_tangent", "_hooks", "_name")
    __array_ufunc__ = None  # NumPy defers to Tensor (functional.py makes ndarray * t an op)

    def __init__(self, data: Any, requires_grad: bool = False, _node: Node | None = None):
        # _tangent and _name stay unset until used (read with getattr defaults); outputs
        # of ops (made without __init__) leave _hooks unset too: they keep hooks on the node.
        self._data = data
        self.grad = None
        self.requires_grad = requires_grad
        self._node = _node
        self._hooks = None

    # -- the values ---------------------------------------------------------------------
    # ``data`` is a property, so that ``t.data -= ...`` is seen (see _plain_data below)

    @property
    def name(self) -> str | None:
        """An optional label, shown by traces, graph drawings and error messages."""
        return getattr(self, "_name", None)

    @name.setter
    def name(self, value: str | None) -> None:
        self._name = value

    # -- basic properties -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def dtype(self) -> Any:
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        n = 1
        for s in self._data.shape:
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

    def __repr__(self) -> str:
        body = repr(to_numpy(self._data)).replace("array(", "tensor(", 1)
        if self._node is not None:
            body = body[:-1] + f", grad_fn={self._node.op.name})"
        elif self.requires_grad:
            body = body[:-1] + ", requires_grad=True)"
        return body

    # -- Python numbers, truth values and containers (as NumPy) -------------------------
    def numpy(self) -> Any:
        """The values as a NumPy array on the host (a copy for GPU backends)."""
        return to_numpy(self._host_array("numpy()"))

    def __array__(self, dtype=None, copy=None):
        out = to_numpy(self._host_array("conversion to a NumPy array"))
        return out.astype(dtype) if dtype is not None else out

    def item(self) -> Any:
        """The single value of a one-element tensor, as a Python number."""
        if self.size != 1:
            raise ValueError(
                f"item() needs a tensor with exactly one element, but this one has shape "
                f"{self.shape} ({self.size} elements). Reduce it first (t.sum(), t.mean(), "
                "t.max()) or index one element (t[0, 1])."
            )
        return self._scalar("item()")

    def __float__(self) -> float:
        return float(self._scalar("float()"))

    def __int__(self) -> int:
        return int(self._scalar("int()"))

    def __bool__(self) -> bool:
        return bool(self._scalar("a truth value (if / while / and / or)"))

    def __index__(self) -> int:
        if self._data.ndim != 0 or dtype_kind(namespace_of(self._data), self.dtype) not in "iu":
            raise TypeError(
                f"only a 0-d integer tensor can be used as an index or a count, not one of "
                f"shape {self.shape} and dtype {self.dtype}; use int(t.item())"
            )
        return int(self._scalar("an index"))

    def _scalar(self, what: str) -> Any:
        if self.size != 1:
            raise ValueError(
                f"The truth value or number of a tensor with more than one element is "
                f"ambiguous: this one has shape {self.shape}, and {what} needs one value. "
                "Reduce it first, e.g. bool((a == b).numpy().all()), (a < b).numpy().any(), "
                "or compare one element: a[0] < b[0]."
            )
        mode = _MODE.get()
        if mode.recorder is not None:  # a Python decision on a value: a guard
            return mode.recorder.scalar(self)
        return to_numpy(self._data).item()

    def _host_array(self, what: str) -> Any:
        mode = _MODE.get()
        if mode.recorder is not None:
            return mode.recorder.raw_access(self, what)
        return self._data

    def __len__(self) -> int:
        if self._data.ndim == 0:
            raise TypeError(
                "len() of a 0-d tensor: it holds one number and has no length. Use "
                "t.item() for its value or t.shape for its shape."
            )
        return self._data.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor: it holds one number (use t.item())")
        for i in range(self._data.shape[0]):
            yield self[i]

    def __contains__(self, value: Any) -> bool:
        other = value._data if type(value) is Tensor else value
        return bool(to_numpy(self._data == other).any())

    def __array_function__(self, func, types, args, kwargs):
        """NumPy functions see a tensor's values, except those NumPy implements by calling
        the tensor's own method (np.sum calls t.sum(...)): on a tensor that requires grad
        they are refused, since the result would silently carry no gradient."""
        name = getattr(func, "__name__", "")
        if name in _METHOD_FUNCTIONS and any(t.requires_grad for t in _tensors_in(args)):
            raise TypeError(
                f"np.{name} was called on a Tensor that requires grad. NumPy does not record "
                f"the graph, so its result would carry no gradient. Use bl.{name}(t) (or "
                f"t.{name}()) instead, or np.{name}(t.numpy()) if you only want the values."
            )
        return func(*_to_host(args), **_to_host(kwargs))

    def detach(self) -> Tensor:
        """The same values, cut off from the graph (no gradient flows through)."""
        return Tensor(self._data)

    # -- gradients ----------------------------------------------------------------------
    def backward(self, upstream: Any = None, retain_graph: bool = False,
                 create_graph: bool = False) -> None:  # fmt: skip
        """Backpropagate from this tensor; see :func:`backward`."""
        if create_graph:
            raise HigherOrderError(
                "backward(create_graph=True) asks for a differentiable gradient (for a "
                "second derivative), but this engine's VJP rules compute with plain arrays. "
                "For second derivatives take finite differences of the gradient, e.g. "
                "backprop_lab.numdiff.numerical_jacobian(lambda x: bl.grad(f)(x), x0)."
            )
        backward(self, upstream, retain_graph=retain_graph)

    def register_hook(self, fn: Callable[[Any], Any]) -> Callable[[], None]:
        """Call ``fn(grad)`` when this tensor's gradient is computed in backward.

        If ``fn`` returns an array it replaces the gradient; ``grad`` itself is read-only
        (it may be shared with other parts of the graph). Returns a function that
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

    # Operators, methods such as .sum() and .T are attached in backprop_lab.functional,
    # from the op registry.


# NumPy functions that would call a Tensor method of the same name (with NumPy's keywords)
_METHOD_FUNCTIONS = {"sum", "mean", "max", "amax", "reshape", "transpose"}


def _set_data(self: Tensor, value: Any) -> None:
    global _last_change
    if value is not self._data:
        self._data = value
        return
    # x.data -= ..., x.data *= ...: changed in place. An optimizer does this every step:
    # the array is known, only its stamp moves.
    entry = _CHANGES.get(id(value))
    if entry is not None and entry[1]() is value:
        entry[0] = _last_change = _next_seq()
    else:
        _note_in_place_change(self)


def _get_data_recording(self: Tensor) -> Any:
    recorder = _MODE.get().recorder
    if recorder is not None:
        return recorder.raw_access(self, "read .data")
    return self._data


def _set_data_recording(self: Tensor, value: Any) -> None:
    recorder = _MODE.get().recorder
    current = self._data if recorder is None else recorder.raw_access(self, "assign .data")
    self._data = value
    if value is current:
        _note_in_place_change(self)


_DATA_DOC = """The backend array. Assigning to it (``t.data = ...``, ``t.data -= ...``) is how
parameters are updated; an in-place change is remembered, so a backward pass that would
read the old values raises :class:`InPlaceError` instead."""
_plain_data = property(attrgetter("_data"), _set_data, doc=_DATA_DOC)
_recording_data = property(_get_data_recording, _set_data_recording, doc=_DATA_DOC)
Tensor.data = _plain_data
_recordings = [0]
_recordings_lock = threading.Lock()


@contextmanager
def recording_data_access() -> Iterator[None]:
    """While any thread records a bl.compile program, ``t.data`` asks whether its own
    thread is recording (the plain property, used otherwise, does not have to)."""
    with _recordings_lock:
        _recordings[0] += 1
        Tensor.data = _recording_data
    try:
        yield
    finally:
        with _recordings_lock:
            _recordings[0] -= 1
            if not _recordings[0]:
                Tensor.data = _plain_data


def _tensors_in(obj: Any) -> list[Tensor]:
    if type(obj) is Tensor:
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors_in(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors_in(item)]
    return []


def _to_host(obj: Any) -> Any:
    if type(obj) is Tensor:
        return to_numpy(obj._data)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_host(item) for item in obj)
    if isinstance(obj, dict):
        return {k: _to_host(v) for k, v in obj.items()}
    return obj


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """Make a Tensor on the default backend (a copy: your input is never changed).

    ``dtype`` may be a string such as ``"float32"`` or a backend dtype. Python floats become
    float64. Only floating tensors can have ``requires_grad=True``.
    """
    xp, device = default_namespace()
    if isinstance(data, Tensor):
        data = data._data
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
    if dtype_kind(xp, arr.dtype) not in "biufc":
        raise TypeError(
            f"bl.tensor needs numbers, but got {type(data).__name__} data that became an "
            f"array of dtype {arr.dtype}. Pass numbers, nested lists of numbers, or an array."
        )
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
# compared with each other). Bounded: a dtype seen after the cache is full is checked
# every time instead (fresh byte-swapped dtypes would otherwise add one entry per op).
_FLOAT_IDS: set[int] = set()
_FLOAT_KEEP: list[Any] = []
_FLOAT_CACHE_SIZE = 64


def _check_float(op, arr) -> None:
    dt = arr.dtype
    if is_floating(namespace_of(arr), dt):
        if len(_FLOAT_KEEP) < _FLOAT_CACHE_SIZE:
            _FLOAT_KEEP.append(dt)
            _FLOAT_IDS.add(id(dt))
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


_NUMBERS = (int, float, bool)


def _operand(op, i: int, a: Any, xp: Any) -> Any:
    """A non-Tensor operand as the op will see it: numbers and arrays as they are, lists
    and tuples as arrays (as NumPy would), anything else refused here, at the call."""
    if isinstance(a, _NUMBERS) or (hasattr(a, "shape") and hasattr(a, "dtype")):
        return a
    if isinstance(a, (list, tuple)):
        try:
            return xp.asarray(a)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{op.name}: operand {i} is a {type(a).__name__} that is not a rectangular "
                f"array of numbers ({exc}). Pass a Tensor (bl.tensor(...)) or an array."
            ) from None
    shown = repr(a)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise TypeError(
        f"{op.name}: operand {i} is a {type(a).__name__} ({shown}); {op.name} takes Tensors, "
        "arrays and numbers. Wrap data with bl.tensor(...)."
    )


def apply(op, *args: Any, **params: Any) -> Tensor:
    """Run ``op`` on ``args`` (Tensors, arrays or Python numbers) and record it if needed.

    Tensor arguments are the op's differentiable inputs; non-differentiable operands
    (a condition, class labels, an index) are passed as plain arrays or values.
    """
    mode = _MODE.get()
    if mode.recorder is not None:
        args = mode.recorder.adopt(args)
    grad_on = mode.grad_enabled
    arrays: list[Any] = []
    parents: list[Any] = []
    needs: list[bool] = []
    record = convert = False
    first = None
    for a in args:
        if type(a) is Tensor:
            d = a._data
            if id(d.dtype) not in _FLOAT_IDS:
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
            if type(a) is not float and type(a) is not int and not hasattr(a, "dtype"):
                convert = True  # a list, a tuple, or something refused below
        parents.append(None)
        needs.append(False)
    if first is None:
        xp = _namespace_of_args(arrays)
    else:
        xp = _NS_BY_TYPE.get(type(first)) or namespace_of(first)
    if convert:
        arrays = [a if type(t) is Tensor else _operand(op, i, a, xp)
                  for i, (t, a) in enumerate(zip(args, arrays))]  # fmt: skip
    listeners = mode.listeners
    if listeners:
        t0 = perf_counter()
    try:
        out, saved = op.forward(xp, *arrays, **params) if params else op.forward(xp, *arrays)
    except EngineError:
        raise
    except (ValueError, TypeError, IndexError) as exc:
        raise _input_error(op, arrays, params, exc) from exc
    if record:
        result = _record(op, tuple(parents), saved, tuple(needs), xp, out)
        node = result._node
    else:
        node = None
        result = _constant(out)
    if mode.forward_level:
        tangents = [getattr(a, "_tangent", None) if type(a) is Tensor else None for a in args]
        if any(t is not None for t in tangents):
            result._tangent = op.jvp(xp, tangents, arrays, out, **params)
    if listeners:
        seconds = perf_counter() - t0
        for listener in listeners:
            listener.on_forward(op, node, args, result, params, seconds)
    if mode.recorder is not None:
        mode.recorder.created.append(result)
    return result


# The two factories below build apply() specialised for the commonest calls, one or two
# operands and no parameters (Tensor operators, bl.exp, bl.tanh, ...): the same steps as
# apply() without its generic loops, in one Python call. Anything unusual (a listener,
# forward mode, a non-Tensor first operand, a list) is handed to apply(), so there is one
# behaviour to reason about.
_NEEDS1 = (True,)
_NEEDS_X, _NEEDS_Y, _NEEDS_XY = (True, False), (False, True), (True, True)


def unary_call(op) -> Callable[[Any], Tensor]:
    """``f(x)`` = :func:`apply` ``(op, x)``, fast for a Tensor ``x``."""

    def call(x: Any) -> Tensor:
        mode = _MODE.get()
        if type(x) is not Tensor or not mode.plain:
            return apply(op, x)
        d = x._data
        if not x.requires_grad and id(d.dtype) not in _FLOAT_IDS:
            _check_float(op, d)
        xp = NUMPY if type(d) is NUMPY_ARRAY else (_NS_BY_TYPE.get(type(d)) or namespace_of(d))
        try:
            out, saved = op.forward(xp, d)
        except EngineError:
            raise
        except (ValueError, TypeError, IndexError) as exc:
            raise _input_error(op, [d], {}, exc) from exc
        if not (x.requires_grad and mode.grad_enabled):
            return _constant(out)
        node = Node()  # what _record does, written out: this is the hottest path
        node.op = op
        node.parents = (x._node or x,)
        node.saved = saved
        node.needs = _NEEDS1
        node.xp = xp
        node.seq = _next_seq()
        node.grad = node.hooks = node.meta = None
        t = _new(Tensor)
        t._data = out
        t.grad = None
        t.requires_grad = True
        t._node = node
        return t

    return call


def binary_call(op, swap: bool = False) -> Callable[[Any, Any], Tensor]:
    """``f(x, y)`` = :func:`apply` ``(op, x, y)`` (``(op, y, x)`` with ``swap``, for the
    reflected operators such as ``2.0 - t``), fast when the operands are Tensors or
    numbers."""

    def call(x: Any, y: Any) -> Tensor:
        mode = _MODE.get()
        if not mode.plain:
            return apply(op, x, y)
        tx, ty = type(x), type(y)
        if tx is Tensor:
            a = first = x._data
            if x.requires_grad:  # a float: checked when it was created
                px = x._node or x
            else:
                px = None
                if id(a.dtype) not in _FLOAT_IDS:
                    _check_float(op, a)
        elif (tx is float or tx is int) and ty is Tensor:
            a, px = x, None
        else:
            return apply(op, x, y)
        if ty is Tensor:
            b = y._data
            if y.requires_grad:
                py = y._node or y
            else:
                py = None
                if id(b.dtype) not in _FLOAT_IDS:
                    _check_float(op, b)
            if tx is not Tensor:
                first = b
            elif type(b) is not type(a):
                _check_same_backend(op, a, b)
        elif ty is float or ty is int:
            b, py = y, None
        else:
            return apply(op, x, y)
        if type(first) is NUMPY_ARRAY:
            xp = NUMPY
        else:
            xp = _NS_BY_TYPE.get(type(first)) or namespace_of(first)
        try:
            out, saved = op.forward(xp, a, b)
        except EngineError:
            raise
        except (ValueError, TypeError, IndexError) as exc:
            raise _input_error(op, [a, b], {}, exc) from exc
        if px is None:
            if py is None or not mode.grad_enabled:
                return _constant(out)
            needs = _NEEDS_Y
        elif not mode.grad_enabled:
            return _constant(out)
        else:
            needs = _NEEDS_X if py is None else _NEEDS_XY
        node = Node()  # what _record does, written out: this is the hottest path
        node.op = op
        node.parents = (px, py)
        node.saved = saved
        node.needs = needs
        node.xp = xp
        node.seq = _next_seq()
        node.grad = node.hooks = node.meta = None
        t = _new(Tensor)
        t._data = out
        t.grad = None
        t.requires_grad = True
        t._node = node
        return t

    if swap:

        def reflected(x: Any, y: Any) -> Tensor:
            return call(y, x)

        return reflected
    return call


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
# In-place changes after the forward pass
# --------------------------------------------------------------------------------------
# An in-place change of a tensor's values (through its ``data`` setter) is stamped with the
# same counter that numbers nodes, so "changed after node n was recorded" is one integer
# comparison per node in backward. Only when that comparison fires does backward look at
# which arrays were changed: one entry per changed array, dropped when the array dies.
_CHANGES: dict[int, list[Any]] = {}  # id(array) -> [stamp, weak ref, (name, op, shape)]
_last_change = -1


def _note_in_place_change(t: Tensor) -> None:
    global _last_change
    arr = t._data
    key = id(arr)
    stamp = _last_change = _next_seq()
    entry = _CHANGES.get(key)
    if entry is not None and entry[1]() is arr:  # an optimizer updating a parameter again
        entry[0] = stamp
        return
    try:
        ref = weakref.ref(arr, lambda _, key=key: _CHANGES.pop(key, None))
    except TypeError:  # an array type without weak references: keep the array itself
        ref = _Strong(arr)
    who = (t.name, None if t._node is None else t._node.op.name, tuple(arr.shape))
    _CHANGES[key] = [stamp, ref, who]


class _Strong:
    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __call__(self) -> Any:
        return self.obj


def _describe(t: Tensor) -> str:
    return _describe_parts(t.name, None if t._node is None else t._node.op.name,
                           tuple(t._data.shape))  # fmt: skip


def _describe_parts(name: str | None, op: str | None, shape: tuple[int, ...]) -> str:
    what = "a leaf tensor" if op is None else f"the output of {op}"
    return f"tensor {name!r} ({what}, shape {shape})" if name else f"{what} of shape {shape}"


def _check_saved_unchanged(node: Node) -> None:
    """Raise InPlaceError if an array ``node`` saved was changed in place after it was."""
    watched = _arrays_in(node.saved) + list(getattr(node.op, "watched", ()))
    if not watched:
        return
    for stamp, ref, who in list(_CHANGES.values()):
        if stamp < node.seq:
            continue
        changed = ref()
        if changed is None:
            continue
        for a in watched:
            if a is changed or _overlap(a, changed):
                where = ""
                if node.meta and node.meta.get("source"):
                    fn, line, code = node.meta["source"]
                    where = f" (created at {fn}, line {line}: {code})"
                raise InPlaceError(
                    f"backward(): {_describe_parts(*who)} was changed in place after the "
                    f"forward pass, but the {node.op.name} node #{node.seq}{where} saved its "
                    "old values for the "
                    "backward pass, so the gradient would mix old and new values. Change "
                    "parameters after backward() (loss.backward(); opt.step()), or run the "
                    "forward pass again after the change."
                )


def _arrays_in(saved: Any) -> list[Any]:
    out: list[Any] = []
    for item in saved or ():
        if hasattr(item, "shape") and hasattr(item, "dtype"):
            out.append(item)
        elif isinstance(item, (tuple, list)):
            out.extend(_arrays_in(item))
    return out


def _overlap(a: Any, b: Any) -> bool:
    import numpy as np

    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return False
    try:
        return bool(np.shares_memory(a, b, max_work=10_000))
    except np.exceptions.TooHardError:
        return True


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


def _upstream(root: Tensor, upstream: Any) -> Any:
    """The gradient backward starts from: ones for a scalar, else a copy of ``upstream``
    (a copy, so that no gradient ever aliases an array the caller holds)."""
    data = root._data
    xp = namespace_of(data)
    if upstream is None:
        if tuple(data.shape) != ():
            raise ValueError(
                f"backward() needs an upstream gradient for a non-scalar output of shape "
                f"{tuple(data.shape)}: the gradient is only implied for a scalar loss. "
                "Reduce it first (e.g. y.sum().backward()) or pass "
                "y.backward(upstream) with an array of the same shape."
            )
        return xp.ones_like(data)
    if type(upstream) is Tensor:
        upstream = upstream._data
    try:
        g = xp.asarray(upstream, dtype=data.dtype, copy=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"backward(): the upstream gradient ({type(upstream).__name__}) could not be "
            f"turned into a {data.dtype} array ({exc}). Pass an array of shape "
            f"{tuple(data.shape)}."
        ) from None
    if tuple(g.shape) != tuple(data.shape):
        raise ShapeError(
            f"backward(): upstream gradient has shape {tuple(g.shape)} but the tensor has "
            f"shape {tuple(data.shape)}; they must match."
        )
    return g


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
    leaf_grads = backpropagate(root, _upstream(root, upstream), retain_graph)
    seen: set[int] = set()
    listeners = _MODE.get().listeners
    for leaf, lg in leaf_grads.items():
        leaf_hooks = getattr(leaf, "_hooks", None)
        if leaf_hooks:
            lg = _run_hooks(leaf_hooks, lg, leaf)
        lxp = namespace_of(leaf._data)
        if leaf.grad is None:
            leaf.grad = _owned(lxp, lg, seen)
        else:
            if _MODE.get().recorder is not None:
                _MODE.get().recorder.unsupported("backward added into a .grad that was not None")
            leaf.grad = leaf.grad + lg
        if listeners:
            for listener in listeners:
                listener.on_leaf_grad(leaf, lg)


def _run_hooks(hooks: list[Callable], g: Any, owner: Any) -> Any:
    """Call each hook on a read-only ``g``; a returned array replaces it (and is copied
    first, since the hook's author may keep it)."""
    recorder = _MODE.get().recorder
    if recorder is not None:
        recorder.unsupported("gradient hooks")
    for hook in hooks:
        flags = getattr(g, "flags", None)
        if flags is not None and flags.writeable:
            flags.writeable = False  # the same array may also flow to other inputs
        try:
            replaced = hook(g)
        except ValueError as exc:
            if "read-only" not in str(exc):
                raise
            raise HookError(
                f"the hook {getattr(hook, '__name__', hook)!r} on {_owner_name(owner)} changed "
                "the gradient it was given in place. That array may also be another input's "
                "gradient, so hooks must not modify it: return a new array instead "
                "(return g * 2, not g *= 2)."
            ) from exc
        if replaced is not None:  # a private copy: the hook's author may keep the array
            g = namespace_of(replaced).asarray(replaced, copy=True)
    return g


def _owner_name(owner: Any) -> str:
    if isinstance(owner, Node):
        return f"the output of {owner.op.name} #{owner.seq}"
    return _describe(owner)


def backpropagate(
    root: Tensor, g: Any, retain_graph: bool = False, targets: dict | None = None
) -> dict:
    """Run reverse mode from ``root`` with upstream gradient ``g``; return the gradients
    that reached leaves, as ``{leaf: gradient}``.

    With ``targets`` (a dict whose keys are leaves or nodes) only those receive gradients
    and the walk stops at them: this is how the transforms and checkpointing compute
    gradients without touching any ``.grad``.
    """
    leaf_grads: dict[Any, Any] = {}  # keyed by identity (Tensor and Node hash by id)
    node = root._node
    if node is None or (targets is not None and node in targets):
        leaf_grads[node or root] = g
        return leaf_grads
    mode = _MODE.get()
    listeners = mode.listeners
    last_change = _last_change
    stop = () if targets is None else targets
    # Sums this pass made itself may be added to in place (nothing else holds them); with
    # a listener (which keeps references to what it was shown) or while bl.compile records,
    # every sum is a new array.
    sums: set[int] | None = set() if mode.plain else None
    node.grad = g
    heap: list[tuple[int, Node]] = []
    while True:
        g = node.grad
        node.grad = None
        if sums:
            sums.discard(id(g))  # the VJP may hand g on as it is: no longer ours alone
        parents = node.parents
        if parents is None:
            raise GraphFreedError(
                f"backward() reached the {node.op.name} node, whose saved values were freed by "
                "an earlier backward(). Pass retain_graph=True to the first backward() if you "
                "need to backpropagate through the same graph twice, or run the forward "
                "pass again."
            )
        if node.seq < last_change:  # check: values this node saved changed since
            _check_saved_unchanged(node)
        if node.hooks:
            g = _run_hooks(node.hooks, g, node)
        if listeners:
            t0 = perf_counter()
            grads = node.op.vjp(node.xp, g, node.saved, node.needs)
            seconds = perf_counter() - t0
            for listener in listeners:
                listener.on_backward(node, g, grads, seconds)
        else:
            grads = node.op.vjp(node.xp, g, node.saved, node.needs)
        best = None  # the newly reached node created last: usually the next one to run
        for parent, pg in zip(parents, grads):
            if pg is None or parent is None:
                continue
            if parent.__class__ is Node and parent not in stop:
                if parent.grad is None:
                    parent.grad = pg
                    if best is None:
                        best = parent
                    elif parent.seq > best.seq:
                        heappush(heap, (-best.seq, best))
                        best = parent
                    else:
                        heappush(heap, (-parent.seq, parent))
                else:
                    if listeners:
                        for listener in listeners:
                            listener.on_accumulate(parent, parent.grad, pg)
                    parent.grad = _accumulate(parent.grad, pg, sums)
            elif not stop or parent in stop:
                prev = leaf_grads.get(parent)
                if prev is None:
                    leaf_grads[parent] = pg
                else:
                    if listeners:
                        for listener in listeners:
                            listener.on_accumulate(parent, prev, pg)
                    leaf_grads[parent] = _accumulate(prev, pg, sums)
        if not retain_graph:
            node.parents = None
            node.saved = None
            if listeners:
                for listener in listeners:
                    listener.on_free(node)
        # Nodes run in decreasing creation order; a chain never needs the heap.
        if best is not None and (not heap or best.seq > -heap[0][0]):
            node = best
        elif heap:
            if best is not None:
                heappush(heap, (-best.seq, best))
            node = heappop(heap)[1]
        else:
            return leaf_grads


def _accumulate(total: Any, part: Any, sums: set[int] | None) -> Any:
    """``total + part`` (fan-out), in place when ``total`` is a sum this pass made and
    still holds alone (``sums``: their ids; a sum leaves it when a VJP receives it)."""
    if sums is not None and id(total) in sums:
        if part.shape == total.shape and part.dtype == total.dtype:
            total += part
            return total
        sums.discard(id(total))
    out = total + part
    if sums is not None:
        sums.add(id(out))
    return out


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
# Grad mode (per thread)
# --------------------------------------------------------------------------------------
def no_grad() -> Any:
    """Run ops without recording a graph (evaluation, optimizer updates)."""
    return mode_changed(grad_enabled=False)


def enable_grad() -> Any:
    """Record the graph again inside a :func:`no_grad` block."""
    return mode_changed(grad_enabled=True)


def is_grad_enabled() -> bool:
    return _MODE.get().grad_enabled


class Listener:
    """Base class for engine listeners: every event is ignored unless overridden.

    ``with listener:`` subscribes it to the events of :func:`apply` and :func:`backward`
    run by this thread, for the duration of the block (see
    :mod:`backprop_lab.instrument.trace` for one that records all).
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
        set_mode(listeners=_MODE.get().listeners + (self,))
        return self

    def __exit__(self, *exc: object) -> None:
        set_mode(listeners=tuple(x for x in _MODE.get().listeners if x is not self))
