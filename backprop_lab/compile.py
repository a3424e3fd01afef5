"""``bl.compile``: record a training step once, then replay its array calls.

A tracing compiler in one file. The first call of ``step = bl.compile(fn)`` runs ``fn``
through the engine as usual, with one difference: every array it handles is wrapped in a
:class:`Traced` value that writes down each NumPy call made with it (the op rules' forward
and VJP calls, the gradient sums, the ``.grad`` copies). That gives a flat program, which
is turned into straight-line Python source (``step.source()`` shows it)::

    def program(i0, i1):
        v2 = i0 * i1
        v3 = tanh(v2)
        ...
        return (v41,), (v40,)

Later calls with arguments of the same shapes and dtypes run that program instead of the
engine: no Tensor, no Node, no graph walk, just the array calls, in the same order, so the
results are bit-identical to eager mode.

What is recorded, and what is not (as in JAX's ``jit``):

* Arguments (Tensors, arrays, and lists/tuples/dicts of them) are the program's inputs.
  Tensors the function reads from outside (a model's parameters) are inputs too: their
  current ``.data`` is read on every call. Python numbers, and arrays made with NumPy inside
  the function, are constants of the program.
* A Python decision on a tensor's value (``if loss < 1``, ``.item()``, ``float(t)``)
  becomes a *guard*: the program checks that the value is the one it was recorded with,
  and if not the call runs eagerly and is recorded again. Different shapes, dtypes or
  ``requires_grad`` flags give a different program.
* Python side effects (``print``, appending to a list) happen only while recording.
* Anything the program cannot reproduce makes that signature run eagerly from then on
  (``step.stats`` and ``step.explain()`` say why): reading or assigning ``t.data`` inside
  (do parameter updates outside the compiled function), gradient hooks, a backward pass
  adding into a ``.grad`` that was not None, a graph returned for a later backward.
  With ``fallback=False`` those raise :class:`CompileError` instead.
"""

from __future__ import annotations

import builtins
import keyword
import operator
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from . import backend
from .tensor import Tensor, _constant, current_mode, mode_changed, recording_data_access

__all__ = ["compile", "CompiledFunction", "CompileError", "Traced"]


class CompileError(RuntimeError):
    """A compiled function did something its program cannot reproduce (with fallback=False)."""


class _GuardFailed(Exception):
    """A recorded assumption about a value no longer holds: run eagerly and re-record."""


# --------------------------------------------------------------------------------------
# Traced arrays: NumPy arrays that write down every call made with them
# --------------------------------------------------------------------------------------
def _recorder() -> Recorder:
    rec = current_mode().recorder
    if rec is None:
        raise CompileError(
            "an array recorded by bl.compile was used after its recording ended (it was "
            "kept outside the compiled function while it ran); return it instead"
        )
    return rec


class Traced:
    """An array inside a recording: ``value`` is the real array, ``slot`` its program name."""

    __slots__ = ("value", "slot")

    def __init__(self, value: Any, slot: str) -> None:
        self.value = value
        self.slot = slot

    # Static facts: the same for every call with these shapes and dtypes
    shape = property(lambda self: self.value.shape)
    dtype = property(lambda self: self.value.dtype)
    ndim = property(lambda self: self.value.ndim)
    size = property(lambda self: self.value.size)
    base = property(lambda self: self.value.base)
    flags = property(lambda self: self.value.flags)
    device = property(lambda self: getattr(self.value, "device", "cpu"))
    T = property(lambda self: _recorder().call(_attr_T, (self,), {}))

    def __len__(self) -> int:
        return len(self.value)

    def __repr__(self) -> str:
        return f"Traced({self.slot}, {self.value!r})"

    def __array__(self, dtype=None, copy=None):  # printing, error messages: values as they are
        return self.value if dtype is None else self.value.astype(dtype)

    # Values Python decides on become guards
    def __bool__(self) -> bool:
        return bool(_recorder().guard(self, bool))

    def __float__(self) -> float:
        return float(_recorder().guard(self, float))

    def __int__(self) -> int:
        return int(_recorder().guard(self, int))

    def __index__(self) -> int:
        return int(_recorder().guard(self, operator.index))

    def item(self) -> Any:
        return _recorder().guard(self, _item)

    # NumPy called directly on a traced array is recorded too
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if kwargs.get("out") is not None:
            return _recorder().in_place(getattr(ufunc, method), inputs, kwargs)
        return _recorder().call(getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _recorder().call(func, args, kwargs)

    def __getitem__(self, index: Any) -> Any:
        return _recorder().call(operator.getitem, (self, index), {})

    def __setitem__(self, index: Any, value: Any) -> None:
        _recorder().in_place(operator.setitem, (self, index, value), {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # no array protocol behind NumPy's back
            raise AttributeError(name)
        attr = getattr(self.value, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: _recorder().call(_Method(name), (self, *args), kwargs)

    __hash__ = object.__hash__


def _attr_T(a: Any) -> Any:
    return a.T


def _item(a: Any) -> Any:
    return a.item()


class _Method:
    """``x.name(...)`` as a recorded call."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(obj, self.name)(*args, **kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Method) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("method", self.name))


_BINARY = {
    operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/",
    operator.floordiv: "//", operator.mod: "%", operator.pow: "**", operator.matmul: "@",
    operator.lt: "<", operator.le: "<=", operator.gt: ">", operator.ge: ">=",
    operator.eq: "==", operator.ne: "!=", operator.and_: "&", operator.or_: "|",
    operator.xor: "^",
}  # fmt: skip
_UNARY = {operator.neg: "-", operator.pos: "+", operator.invert: "~"}


def _binary_method(fn: Callable, reflected: bool) -> Callable:
    if reflected:
        return lambda self, other: _recorder().call(fn, (other, self), {})
    return lambda self, other: _recorder().call(fn, (self, other), {})


for _fn, _sym in _BINARY.items():
    _name = {"truediv": "truediv", "and_": "and", "or_": "or"}.get(_fn.__name__, _fn.__name__)
    setattr(Traced, f"__{_name}__", _binary_method(_fn, False))
    if _fn not in (operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne):
        setattr(Traced, f"__r{_name}__", _binary_method(_fn, True))


def _unary_method(fn: Callable) -> Callable:
    return lambda self: _recorder().call(fn, (self,), {})


for _fn in _UNARY:
    setattr(Traced, f"__{_fn.__name__}__", _unary_method(_fn))
Traced.__abs__ = _unary_method(np.abs)


def _refuse_in_place(name: str) -> Callable:
    def method(self: Traced, other: Any) -> Any:
        _recorder().unsupported(f"an in-place operator ({name}) on a traced array")
        getattr(self.value, name)(other.value if isinstance(other, Traced) else other)
        return self

    return method


for _name in ("__iadd__", "__isub__", "__imul__", "__itruediv__", "__ipow__", "__imatmul__"):
    setattr(Traced, _name, _refuse_in_place(_name))


class _TracingNamespace:
    """The array namespace ops see while recording: NumPy's (the engine's NUMPY), with
    every function that returns an array recorded."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        real = getattr(backend.NUMPY, name)
        if not callable(real) or isinstance(real, type):
            return real  # dtypes, constants
        wrapper = self._cache.get(name)
        if wrapper is None:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return _recorder().call(real, args, kwargs)

            self._cache[name] = wrapper
        return wrapper

    def scatter_add(self, target: Any, index: Any, values: Any) -> None:
        _recorder().in_place(np.add.at, (target, index, values), {}, statement=True)


TRACING = _TracingNamespace()
backend._NS_BY_TYPE[Traced] = TRACING


# --------------------------------------------------------------------------------------
# The recorder: slots, instructions, guards
# --------------------------------------------------------------------------------------
class Recorder:
    """Writes down one run of a function as a flat list of array calls."""

    def __init__(self) -> None:
        self.count = 0
        self.instructions: list[tuple] = []  # (kind, fn, args, kwargs, out slot or guard)
        self.inputs: list[tuple[str, Any]] = []  # (slot, source): ("arg", i) / ("tensor", t)
        self.adopted: list[tuple[Tensor, Any]] = []  # tensors whose _data we swapped
        self.created: list[Tensor] = []  # tensors made while recording (restored at the end)
        self.problems: list[str] = []

    def new_slot(self, prefix: str = "v") -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def input(self, value: Any, source: Any) -> Traced:
        traced = Traced(value, self.new_slot("i"))
        self.inputs.append((traced.slot, source))
        return traced

    def unsupported(self, why: str) -> None:
        if why not in self.problems:
            self.problems.append(why)

    # -- the engine's hooks ---------------------------------------------------------------
    def adopt(self, args: tuple) -> tuple:
        """Tensors an op receives: their arrays become program inputs (read per call)."""
        for a in args:
            if type(a) is Tensor and type(a._data) is not Traced:
                if a._node is not None:
                    self.unsupported("an op used a tensor computed before the compiled call")
                key = _leaf_key(a)
                self.adopted.append((a, a._data))
                a._data = self.input(a._data, ("tensor", a, key))
        return args

    def raw_access(self, t: Tensor, what: str) -> Any:
        self.unsupported(f"the function used {what} of a tensor")
        d = t._data
        return d.value if type(d) is Traced else d

    def scalar(self, t: Tensor) -> Any:
        """The value of a one-element tensor that Python decides on: guarded."""
        d = t._data
        if type(d) is Traced:
            return self.guard(d, _item)
        return backend.to_numpy(d).item()

    # -- recording ------------------------------------------------------------------------
    def _unwrap(self, obj: Any) -> Any:
        if type(obj) is Traced:
            return obj.value
        if type(obj) in (tuple, list):
            return type(obj)(self._unwrap(o) for o in obj)
        if type(obj) is dict:
            return {k: self._unwrap(v) for k, v in obj.items()}
        if type(obj) is Tensor:
            self.unsupported("a Tensor was passed to a NumPy function")
            return self._unwrap(obj._data)
        return obj

    def call(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        result = fn(*self._unwrap(args), **self._unwrap(kwargs))
        if isinstance(result, (np.ndarray, np.generic)):
            out = Traced(result, self.new_slot())
            self.instructions.append(("call", fn, args, kwargs, out.slot))
            return out
        if isinstance(result, (tuple, list)) and any(
            isinstance(r, (np.ndarray, np.generic)) for r in result
        ):
            self.unsupported(f"{getattr(fn, '__name__', fn)} returned several arrays")
        return result

    def in_place(self, fn: Callable, args: tuple, kwargs: dict, statement: bool = True) -> Any:
        target = args[0]
        if type(target) is not Traced or not isinstance(target.value, np.ndarray):
            self.unsupported("an in-place change of an array the program does not own")
        if "out" in kwargs:
            outs = kwargs["out"] if isinstance(kwargs["out"], tuple) else (kwargs["out"],)
            if not all(type(o) is Traced for o in outs):
                self.unsupported("out= naming an array the program does not own")
        result = fn(*self._unwrap(args), **self._unwrap(kwargs))
        self.instructions.append(("stmt", fn, args, kwargs, None))
        return args[0] if "out" in kwargs else result

    def guard(self, traced: Traced, convert: Callable[[Any], Any]) -> Any:
        value = convert(traced.value)
        self.instructions.append(("guard", convert, (traced,), {}, value))
        return value

    # -- the end of the recording run -------------------------------------------------------
    def restore(self) -> None:
        """Give every tensor touched by the recording its real array back."""
        for t, original in self.adopted:
            if type(t._data) is Traced:
                t._data = t._data.value if t._data.value is not None else original
        for t in self.created:
            if type(t._data) is Traced:
                t._data = t._data.value
            if type(t.grad) is Traced:
                t.grad = t.grad.value


def real(obj: Any) -> Any:
    """``obj`` with every Traced replaced by its array (for results of the recording run)."""
    if type(obj) is Traced:
        return obj.value
    if type(obj) in (tuple, list):
        return type(obj)(real(o) for o in obj)
    if type(obj) is dict:
        return {k: real(v) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------------------
# From instructions to a Python function
# --------------------------------------------------------------------------------------
class Program:
    """Straight-line Python that repeats a recording's array calls."""

    def __init__(self, recorder: Recorder, outputs: list[str], grads: list[str]) -> None:
        self.constants: dict[str, Any] = {"_GuardFailed": _GuardFailed}
        self._names: dict[int, str] = {}
        instructions = self._prune(recorder.instructions, set(outputs) | set(grads))
        lines = []
        dead = self._last_uses(instructions, set(outputs) | set(grads))
        for (kind, fn, args, kwargs, result), free in zip(instructions, dead):
            if kind == "guard":
                lines.append(f"if {self._const(fn)}({args[0].slot}) != {self._const(result)}:")
                lines.append("    raise _GuardFailed")
            elif kind == "stmt":
                lines.append(self._expr(fn, args, kwargs))
            else:
                lines.append(f"{result} = {self._expr(fn, args, kwargs)}")
            if free:
                lines.append(f"del {', '.join(free)}")
        params = ", ".join(slot for slot, _ in recorder.inputs)
        body = "\n".join("    " + line for line in lines) or "    pass"
        out = ", ".join(outputs) + ("," if len(outputs) == 1 else "")
        grad = ", ".join(grads) + ("," if len(grads) == 1 else "")
        self.source = f"def program({params}):\n{body}\n    return ({out}), ({grad})\n"
        namespace = dict(self.constants)
        code = builtins.compile(self.source, "<bl.compile program>", "exec")
        exec(code, namespace)  # noqa: S102 - our own generated source
        self.run = namespace["program"]
        self.n_calls = sum(1 for i in instructions if i[0] != "guard")

    @staticmethod
    def _prune(instructions: list[tuple], needed: set[str]) -> list[tuple]:
        """Drop calls whose results nothing uses (statements and guards always stay)."""
        keep = []
        needed = set(needed)
        for ins in reversed(instructions):
            kind, fn, args, kwargs, result = ins
            if kind == "call" and result not in needed:
                continue
            keep.append(ins)
            _slots(args, needed)
            _slots(kwargs, needed)
        keep.reverse()
        return keep

    @staticmethod
    def _last_uses(instructions: list[tuple], keep: set[str]) -> list[list[str]]:
        """Per instruction, the values used for the last time there (to ``del`` after it,
        so memory is released as in eager mode)."""
        last: dict[str, int] = {}
        for k, (_, _, args, kwargs, _) in enumerate(instructions):
            used: set[str] = set()
            _slots(args, used)
            _slots(kwargs, used)
            for s in used:
                last[s] = k
        dead: list[list[str]] = [[] for _ in instructions]
        for s, k in last.items():
            if s not in keep:
                dead[k].append(s)
        return [sorted(d) for d in dead]

    def _const(self, value: Any) -> str:
        if (
            value is None
            or isinstance(value, (bool, int, str))
            or (isinstance(value, float) and np.isfinite(value))
        ):
            return repr(value)
        if type(value) is tuple and all(
            v is None or isinstance(v, (bool, int)) or type(v) is slice for v in value
        ):
            return "(" + "".join(self._const(v) + ", " for v in value) + ")"
        if type(value) is slice:
            return f"slice({self._const(value.start)}, {self._const(value.stop)}, " \
                   f"{self._const(value.step)})"  # fmt: skip
        key = id(value)
        name = self._names.get(key)
        if name is None:
            base = getattr(value, "__name__", "") if callable(value) else ""
            base = base if base.isidentifier() and not keyword.iskeyword(base) else "c"
            name = f"{base}_{len(self.constants)}" if base != "c" else f"c{len(self.constants)}"
            self.constants[name] = value
            self._names[key] = name
        return name

    def _arg(self, a: Any) -> str:
        if type(a) is Traced:
            return a.slot
        if type(a) in (tuple, list) and any(type(x) is Traced for x in a):
            inner = "".join(self._arg(x) + ", " for x in a)
            return f"({inner})" if type(a) is tuple else f"[{inner}]"
        return self._const(a)

    def _expr(self, fn: Callable, args: tuple, kwargs: dict) -> str:
        a = [self._arg(x) for x in args]
        if fn in _BINARY and not kwargs and len(a) == 2:
            return f"{a[0]} {_BINARY[fn]} {a[1]}"
        if fn in _UNARY and not kwargs:
            return f"{_UNARY[fn]}{a[0]}"
        if fn is operator.getitem:
            return f"{a[0]}[{a[1]}]"
        if fn is operator.setitem:
            return f"{a[0]}[{a[1]}] = {a[2]}"
        if fn is _attr_T:
            return f"{a[0]}.T"
        kw = [f"{k}={self._arg(v)}" for k, v in kwargs.items()]
        if isinstance(fn, _Method):
            return f"{a[0]}.{fn.name}({', '.join(a[1:] + kw)})"
        return f"{self._const(fn)}({', '.join(a + kw)})"


def _slots(obj: Any, into: set[str]) -> None:
    if type(obj) is Traced:
        into.add(obj.slot)
    elif type(obj) in (tuple, list):
        for o in obj:
            _slots(o, into)
    elif type(obj) is dict:
        for o in obj.values():
            _slots(o, into)


# --------------------------------------------------------------------------------------
# Arguments: flattened to leaves, described by a signature
# --------------------------------------------------------------------------------------
def _flatten(obj: Any, leaves: list[Any]) -> Any:
    """The structure of ``obj`` with its leaves replaced by their positions in ``leaves``."""
    if type(obj) in (tuple, list):
        return (type(obj), tuple(_flatten(o, leaves) for o in obj))
    if type(obj) is dict:
        return (dict, tuple((k, _flatten(v, leaves)) for k, v in obj.items()))
    leaves.append(obj)
    return len(leaves) - 1


def _unflatten(tree: Any, leaves: list[Any]) -> Any:
    if type(tree) is int:
        return leaves[tree]
    kind, items = tree
    if kind is dict:
        return {k: _unflatten(v, leaves) for k, v in items}
    return kind(_unflatten(v, leaves) for v in items)


def _leaf_key(x: Any) -> Any:
    if type(x) is Tensor:
        d = x._data
        return ("T", d.shape, d.dtype.str, x.requires_grad, x.grad is None, x._node is None)
    if type(x) is np.ndarray:
        return ("A", x.shape, x.dtype.str)
    if isinstance(x, (bool, int, float, str, type(None))):
        return ("V", type(x), x)
    return ("O", id(x))


# --------------------------------------------------------------------------------------
# The compiled function
# --------------------------------------------------------------------------------------
class _Entry:
    """What one signature runs: a program, or eager mode (and why)."""

    __slots__ = ("program", "program_inputs", "grad_targets", "out_tree", "out_kinds", "why",
                 "guard_failures")  # fmt: skip

    def __init__(self) -> None:
        self.program: Program | None = None
        self.program_inputs: list[tuple] = []  # where each input comes from, per call
        self.grad_targets: list[Any] = []  # ("arg", leaf index) or ("tensor", t) per grad
        self.out_tree: Any = None
        self.out_kinds: list[Any] = []
        self.why: list[str] = []
        self.guard_failures = 0


class CompiledFunction:
    """The callable ``bl.compile(fn)`` returns. ``stats`` counts recordings, replays and
    eager calls; :meth:`source` shows the program of the last recording."""

    MAX_GUARD_FAILURES = 3
    MAX_SIGNATURES = 32  # programs kept per function; the least recently used goes first

    def __init__(self, fn: Callable[..., Any], fallback: bool = True) -> None:
        if not callable(fn):
            raise CompileError(f"bl.compile needs a function, got {type(fn).__name__}")
        self.fn = fn
        self.fallback = fallback
        self.entries: OrderedDict[Any, _Entry] = OrderedDict()
        self.stats = {"recordings": 0, "replays": 0, "eager": 0}
        self._last: _Entry | None = None
        self.__name__ = getattr(fn, "__name__", "compiled")
        self.__doc__ = getattr(fn, "__doc__", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        mode = current_mode()
        if not mode.plain:  # a listener, forward mode, or another recording: eager, seen
            self.stats["eager"] += 1
            return self.fn(*args, **kwargs)
        leaves: list[Any] = []
        tree = _flatten((args, kwargs), leaves)
        key = (tree, tuple(_leaf_key(x) for x in leaves), mode.grad_enabled)
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            if entry.program is None:
                self.stats["eager"] += 1
                return self.fn(*args, **kwargs)
            try:
                result = self._replay(entry, leaves)
                self.stats["replays"] += 1
                return result
            except _GuardFailed:
                entry.guard_failures += 1
                if entry.guard_failures >= self.MAX_GUARD_FAILURES:
                    entry.program = None
                    entry.why = ["a guarded value changed on every call (use tensors, not "
                                 "Python numbers, for values that change)"]  # fmt: skip
                    self.stats["eager"] += 1
                    return self.fn(*args, **kwargs)
        return self._record(key, args, kwargs, leaves, tree)

    # -- replay ---------------------------------------------------------------------------
    def _replay(self, entry: _Entry, leaves: list[Any]) -> Any:
        inputs = []
        for src in entry.program_inputs:
            if src[0] == "arg":
                x = leaves[src[1]]
                inputs.append(x._data if type(x) is Tensor else x)
            else:
                t = src[1]
                if _leaf_key(t) != src[2]:
                    raise _GuardFailed
                inputs.append(t._data)
        outs, grads = entry.program.run(*inputs)
        for (kind, where), g in zip(entry.grad_targets, grads):
            target = leaves[where] if kind == "arg" else where
            target.grad = g
        values = [
            _constant(outs[k]) if kind == "tensor" else (outs[k] if kind == "array" else k)
            for kind, k in entry.out_kinds
        ]
        return _unflatten(entry.out_tree, values)

    # -- recording ------------------------------------------------------------------------
    def _record(self, key: Any, args: tuple, kwargs: dict, leaves: list[Any], tree: Any) -> Any:
        self.stats["recordings"] += 1
        rec = Recorder()
        traced_leaves: list[Any] = []
        for i, x in enumerate(leaves):
            if type(x) is Tensor:
                if x._node is not None and x.requires_grad:
                    rec.unsupported(f"argument leaf {i} is a tensor computed before the call")
                rec.adopted.append((x, x._data))
                x._data = rec.input(x._data, ("arg", i))
                traced_leaves.append(x)
            elif type(x) is np.ndarray:
                traced_leaves.append(rec.input(x, ("arg", i)))
            else:
                traced_leaves.append(x)
        call_args, call_kwargs = _unflatten(tree, traced_leaves)
        try:
            with recording_data_access(), mode_changed(recorder=rec):
                result = self.fn(*call_args, **call_kwargs)
            entry = self._finish(rec, result, leaves)
        finally:
            rec.restore()
        self.entries[key] = entry
        if len(self.entries) > self.MAX_SIGNATURES:
            self.entries.popitem(last=False)
        self._last = entry
        if entry.program is None:
            message = (f"bl.compile({self.__name__}): this call ran eagerly and calls with "
                       f"the same signature will too, because {'; '.join(entry.why)}.")  # fmt: skip
            if not self.fallback:
                raise CompileError(message)
            warnings.warn(message, stacklevel=3)
        return real(result) if not isinstance(result, Tensor) else _realised(result)

    def _finish(self, rec: Recorder, result: Any, leaves: list[Any]) -> _Entry:
        entry = _Entry()
        out_leaves: list[Any] = []
        entry.out_tree = _flatten(result, out_leaves)
        outputs: list[str] = []
        for x in out_leaves:
            if type(x) is Tensor:
                if x._node is not None and x._node.parents is not None:
                    rec.unsupported("it returned a tensor whose graph was not backpropagated "
                                    "(call backward inside the compiled function)")  # fmt: skip
                d = x._data
                if type(d) is Traced:
                    entry.out_kinds.append(("tensor", len(outputs)))
                    outputs.append(d.slot)
                else:
                    entry.out_kinds.append(("const", x))
            elif type(x) is Traced:
                entry.out_kinds.append(("array", len(outputs)))
                outputs.append(x.slot)
            else:
                entry.out_kinds.append(("const", x))
        grads: list[str] = []
        touched = [t for t, _ in rec.adopted] + list(rec.created)
        seen: set[int] = set()
        for t in touched:
            if id(t) in seen:
                continue
            seen.add(id(t))
            g = t.grad
            if g is None:
                continue
            if type(g) is not Traced:
                continue  # it had this .grad before the call and backward did not touch it
            where = next((("arg", i) for i, x in enumerate(leaves) if x is t), ("tensor", t))
            entry.grad_targets.append(where)
            grads.append(g.slot)
        entry.why = list(rec.problems)
        if entry.why:
            return entry
        entry.program = Program(rec, outputs, grads)
        entry.program_inputs = []
        for _slot, src in rec.inputs:
            entry.program_inputs.append(src)  # ("arg", leaf index) or ("tensor", t, key)
        return entry

    # -- for readers ------------------------------------------------------------------------
    def source(self) -> str:
        """The generated program of the last recording (empty if it ran eagerly)."""
        return "" if self._last is None or self._last.program is None else \
            self._last.program.source  # fmt: skip

    def explain(self) -> str:
        """Why the last recorded signature runs eagerly, if it does."""
        if self._last is None:
            return "not called yet"
        if self._last.program is not None:
            return (f"compiled: {self._last.program.n_calls} array calls, replayed for "
                    "calls with the same argument shapes and dtypes")  # fmt: skip
        return "runs eagerly: " + "; ".join(self._last.why)

    def __repr__(self) -> str:
        return f"<bl.compile({self.__name__}) {self.stats}>"


def _realised(t: Tensor) -> Tensor:
    if type(t._data) is Traced:
        t._data = t._data.value
    return t


def compile(fn: Callable[..., Any] | None = None, *, fallback: bool = True) -> Any:  # noqa: A001
    """Compile ``fn``: record its array calls on the first call, replay them afterwards.

    ``fn`` takes Tensors, arrays and Python values (and lists, tuples, dicts of them) and
    may run forward and backward inside; it returns Tensors, arrays (such as ``x.grad``)
    or Python values. Works as ``bl.compile(fn)`` and as the decorator ``@bl.compile``.
    See the module docstring for what is and is not recorded.
    """
    if fn is None:
        return lambda f: CompiledFunction(f, fallback=fallback)
    return CompiledFunction(fn, fallback=fallback)
