"""The public functions (``bl.exp``, ``bl.softmax``, ...) and Tensor's operators.

Each is a one-line call of :func:`backprop_lab.tensor.apply` on a registry op, so every
rule lives in :mod:`backprop_lab.ops` and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .ops import REGISTRY as R
from .tensor import Tensor, apply, apply_binary, apply_unary

__all__ = [
    "exp",
    "log",
    "sin",
    "cos",
    "tanh",
    "sigmoid",
    "relu",
    "maximum",
    "where",
    "concatenate",
    "stack",
    "softmax",
    "log_softmax",
    "cross_entropy",
    "mse",
    "matmul",
    "sum",
    "mean",
    "max",
    "reshape",
    "transpose",
]

_ADD, _SUB, _MUL, _DIV, _NEG, _POW = R["add"], R["sub"], R["mul"], R["div"], R["neg"], R["pow"]
_MATMUL = R["matmul"]
_EXP, _LOG, _SIN, _COS = R["exp"], R["log"], R["sin"], R["cos"]
_TANH, _SIGMOID, _RELU, _MAXIMUM = R["tanh"], R["sigmoid"], R["relu"], R["maximum"]


def exp(x: Tensor) -> Tensor:
    """Elementwise e^x."""
    return apply_unary(_EXP, x)


def log(x: Tensor) -> Tensor:
    """Elementwise natural logarithm."""
    return apply_unary(_LOG, x)


def sin(x: Tensor) -> Tensor:
    """Elementwise sine."""
    return apply_unary(_SIN, x)


def cos(x: Tensor) -> Tensor:
    """Elementwise cosine."""
    return apply_unary(_COS, x)


def tanh(x: Tensor) -> Tensor:
    """Elementwise hyperbolic tangent."""
    return apply_unary(_TANH, x)


def sigmoid(x: Tensor) -> Tensor:
    """Elementwise logistic sigmoid 1 / (1 + e^-x)."""
    return apply_unary(_SIGMOID, x)


def relu(x: Tensor) -> Tensor:
    """Elementwise max(x, 0)."""
    return apply_unary(_RELU, x)


def maximum(x: Any, y: Any) -> Tensor:
    """Elementwise maximum of two tensors (broadcasting)."""
    return apply_binary(_MAXIMUM, x, y)


def where(condition: Any, x: Any, y: Any) -> Tensor:
    """``x`` where ``condition`` is true, else ``y``; no gradient flows to the condition."""
    if type(condition) is Tensor:
        condition = condition.data
    return apply(R["where"], condition, x, y)


def concatenate(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    return apply(R["concatenate"], *tensors, axis=axis)


def stack(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors along a new axis."""
    return apply(R["stack"], *tensors, axis=axis)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """exp(x) normalised to sum to 1 along ``axis`` (computed stably)."""
    return apply(R["softmax"], x, axis=axis)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """log(softmax(x)) computed stably with log-sum-exp."""
    return apply(R["log_softmax"], x, axis=axis)


def cross_entropy(logits: Tensor, labels: Any) -> Tensor:
    """Mean softmax cross-entropy of ``logits`` (N, C) against integer ``labels`` (N,).

    ``labels`` may also be target probabilities of shape (N, C). The op is fused: its
    gradient with respect to the logits is (softmax(logits) - one_hot(labels)) / N.
    """
    if type(labels) is Tensor:
        labels = labels.data
    elif not hasattr(labels, "shape"):
        from .backend import namespace_of

        xp = namespace_of(logits.data) if type(logits) is Tensor else None
        labels = xp.asarray(labels) if xp is not None else labels
    return apply(R["cross_entropy"], logits, labels)


def mse(pred: Tensor, target: Any) -> Tensor:
    """Mean squared error over all elements; shapes must match exactly."""
    return apply(R["mse"], pred, target)


def matmul(x: Any, y: Any) -> Tensor:
    """Matrix product, the same as ``x @ y``."""
    return apply_binary(_MATMUL, x, y)


def sum(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over ``axis`` (all axes when None)."""
    return apply(R["sum"], x, axis=axis, keepdims=keepdims)


def mean(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (all axes when None)."""
    return apply(R["mean"], x, axis=axis, keepdims=keepdims)


def max(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum over ``axis``; the gradient goes to the maximal element(s)."""
    return apply(R["max"], x, axis=axis, keepdims=keepdims)


def reshape(x: Tensor, *shape: Any) -> Tensor:
    """The same values in a new shape (``-1`` infers one axis)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return apply(R["reshape"], x, shape=tuple(shape))


def transpose(x: Tensor, axes: Sequence[int] | None = None) -> Tensor:
    """Permute axes (reverse them when ``axes`` is None)."""
    return apply(R["transpose"], x, axes=None if axes is None else tuple(axes))


# --------------------------------------------------------------------------------------
# Tensor operators and methods
# --------------------------------------------------------------------------------------
def _cmp(name: str):
    def compare(self: Tensor, other: Any) -> Tensor:
        o = other.data if type(other) is Tensor else other
        return Tensor(getattr(self.data, name)(o))

    compare.__name__ = name
    compare.__doc__ = "Elementwise comparison; the result is boolean and carries no gradient."
    return compare


def _unwrap_index(index: Any) -> Any:
    if type(index) is Tensor:
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if type(i) is Tensor else i for i in index)
    return index


def _getitem(self: Tensor, index: Any) -> Tensor:
    return apply(R["getitem"], self, index=_unwrap_index(index))


Tensor.__add__ = lambda self, other: apply_binary(_ADD, self, other)
Tensor.__radd__ = lambda self, other: apply_binary(_ADD, other, self)
Tensor.__sub__ = lambda self, other: apply_binary(_SUB, self, other)
Tensor.__rsub__ = lambda self, other: apply_binary(_SUB, other, self)
Tensor.__mul__ = lambda self, other: apply_binary(_MUL, self, other)
Tensor.__rmul__ = lambda self, other: apply_binary(_MUL, other, self)
Tensor.__truediv__ = lambda self, other: apply_binary(_DIV, self, other)
Tensor.__rtruediv__ = lambda self, other: apply_binary(_DIV, other, self)
Tensor.__pow__ = lambda self, other: apply_binary(_POW, self, other)
Tensor.__rpow__ = lambda self, other: apply_binary(_POW, other, self)
Tensor.__matmul__ = lambda self, other: apply_binary(_MATMUL, self, other)
Tensor.__rmatmul__ = lambda self, other: apply_binary(_MATMUL, other, self)
Tensor.__neg__ = lambda self: apply_unary(_NEG, self)
Tensor.__getitem__ = _getitem
for _name in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
    setattr(Tensor, _name, _cmp(_name))
Tensor.__hash__ = object.__hash__  # tensors are graph nodes: hash by identity
Tensor.T = property(lambda self: transpose(self), doc="Axes reversed (the transpose for 2-D).")
Tensor.reshape = reshape
Tensor.transpose = transpose
Tensor.sum = sum
Tensor.mean = mean
Tensor.max = max
Tensor.exp = exp
Tensor.log = log
Tensor.tanh = tanh
Tensor.sigmoid = sigmoid
Tensor.relu = relu
