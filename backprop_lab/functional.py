"""The public functions (``bl.exp``, ``bl.softmax``, ...) and Tensor's operators.

Nothing here is written per op: every public function, Tensor method and operator is the
function its registry entry in :mod:`backprop_lab.ops` defines (``op.function``), so every
rule lives in the registry and nowhere else. ``__all__`` lists the public ops.
"""

from __future__ import annotations

import sys
from typing import Any

from .ops import _BUILTIN, _ON_REGISTER, REGISTRY, Op
from .tensor import Tensor, _constant, binary_call

__all__: list[str] = []


def _install(op: Op) -> None:
    """Attach ``op``'s Tensor methods and operators; a built-in op's function is also
    public (``bl.<name>``). An op registered later (in a notebook) is called as itself:
    ``softplus(x)``, or ``bl.apply(softplus, x)``."""
    if op.public and op.name in _BUILTIN:
        globals()[op.name] = op.function
        if op.name not in __all__:
            __all__.append(op.name)
        package = sys.modules.get(__package__)
        if package is not None and hasattr(package, op.name):  # replaced with replace=True
            setattr(package, op.name, op.function)
    for method in op.methods:
        setattr(Tensor, method, op.function)
    for i, dunder in enumerate(op.operators):
        if i > 0 and dunder.startswith("__r"):
            setattr(Tensor, dunder, binary_call(op, swap=True))  # 2.0 - t: sub(2.0, t)
        else:
            setattr(Tensor, dunder, op.function)


for _op in list(REGISTRY.values()):
    _install(_op)
_ON_REGISTER.append(_install)  # ops registered later are installed too


# --------------------------------------------------------------------------------------
# Comparisons (not ops: no gradient), the transpose property, in-place operators
# --------------------------------------------------------------------------------------
def _cmp(name: str):
    def compare(self: Tensor, other: Any) -> Tensor:
        o = other._data if type(other) is Tensor else other
        return _constant(getattr(self._data, name)(o))

    compare.__name__ = name
    compare.__doc__ = "Elementwise comparison; the result is boolean and carries no gradient."
    return compare


for _name in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
    setattr(Tensor, _name, _cmp(_name))
Tensor.__hash__ = object.__hash__  # tensors are graph nodes: hash by identity
Tensor.T = property(lambda self: REGISTRY["transpose"].function(self),
                    doc="Axes reversed (the transpose for 2-D).")  # fmt: skip


def _in_place(symbol: str, dunder: str):
    """``t += u`` and friends. Python falls back to ``t = t + u``, which is fine for a
    value being accumulated, but on a parameter it silently rebinds the name to a new
    tensor (the model keeps the old one): that case is refused with the idiom to use."""

    def method(self: Tensor, other: Any) -> Tensor:
        if self._node is None and self.requires_grad:
            label = f"'{self.name}'" if self.name else "w"
            raise TypeError(
                f"{label} {symbol} ... on a tensor that requires grad would not change it: "
                f"Python rebinds the name to a new tensor, {label} = {label} "
                f"{symbol[0]} ..., and the model keeps the old one (under no_grad the new "
                f"one does not even require grad). To update a parameter in place, change "
                f"its values: p.data {symbol} ..., e.g. p.data -= lr * p.grad."
            )
        return getattr(self, dunder)(other)

    method.__name__ = f"__i{dunder[2:]}"
    return method


for _sym, _dunder in (("+=", "__add__"), ("-=", "__sub__"), ("*=", "__mul__"),
                      ("/=", "__truediv__"), ("**=", "__pow__"), ("@=", "__matmul__")):  # fmt: skip
    setattr(Tensor, f"__i{_dunder[2:]}", _in_place(_sym, _dunder))


# --------------------------------------------------------------------------------------
# NumPy ufuncs meeting a Tensor
# --------------------------------------------------------------------------------------
# ``ndarray * t`` calls np.multiply(ndarray, t): that is the reflected operator, and runs the
# engine's op. Any other ufunc on a tensor that requires grad is refused with the bl.*
# function to use (NumPy would compute the values and silently drop the gradient).
_BINARY_UFUNCS = {"add": "add", "subtract": "sub", "multiply": "mul", "divide": "div",
                  "true_divide": "div", "power": "pow", "matmul": "matmul",
                  "maximum": "maximum"}  # fmt: skip
_COMPARISONS = {"less", "less_equal", "greater", "greater_equal", "equal", "not_equal"}


def _array_ufunc(self: Tensor, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
    name = getattr(ufunc, "__name__", str(ufunc))
    if method == "__call__" and not kwargs and len(inputs) == 2:
        if name in _BINARY_UFUNCS:
            return REGISTRY[_BINARY_UFUNCS[name]].function(*inputs)
        if name in _COMPARISONS:
            a, b = (i._data if type(i) is Tensor else i for i in inputs)
            return _constant(ufunc(a, b))
    if any(type(i) is Tensor and i.requires_grad for i in inputs):
        op = {"negative": "neg"}.get(name, name)
        alt = f"bl.{op}(t)" if op in REGISTRY and REGISTRY[op].public else "the bl.* functions"
        raise TypeError(
            f"np.{name} was called on a Tensor that requires grad. NumPy does not record the "
            f"graph, so its result would carry no gradient. Use {alt} (or a Tensor operator) "
            f"instead, or np.{name}(t.numpy()) if you only want the values."
        )
    host = [i._data if type(i) is Tensor else i for i in inputs]
    return getattr(ufunc, method)(*host, **kwargs)


Tensor.__array_ufunc__ = _array_ufunc
