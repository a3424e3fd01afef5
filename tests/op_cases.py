"""Input generators for every registered op, shared by the property and backend tests.

``CASES[name](rng, draw_shape)`` returns ``(args, params)``: ``args`` are NumPy arrays (the
differentiable inputs, float64) or :class:`Const` wrappers (non-differentiable operands
such as a condition or labels, passed to the op as plain arrays). Values avoid the kinks
where an op has no derivative (relu at 0, ties in max), so finite differences are valid.
A test fails if a registered op has no case here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Const:
    """A non-differentiable operand (condition, labels, probabilities)."""

    value: object


def _away_from_zero(rng, shape, lo=0.3, hi=2.0):
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(lo, hi, size=shape)


def _bcast_partner(rng, shape):
    """A shape that broadcasts against ``shape``: maybe fewer leading axes, some sizes 1."""
    shape = list(shape)
    drop = rng.integers(0, len(shape) + 1) if shape else 0
    partner = shape[drop:]
    return tuple(1 if rng.random() < 0.3 else s for s in partner)


def _pair(rng, draw_shape):
    s = draw_shape()
    t = _bcast_partner(rng, s)
    if rng.random() < 0.5:
        s, t = t, s
    return s, t


def _distinct(rng, shape):
    n = int(np.prod(shape)) if shape else 1
    vals = rng.permutation(n).astype(float) * 0.37 - n * 0.15 + rng.uniform(-0.05, 0.05, n)
    return vals.reshape(shape)


def binary(kind):
    def case(rng, draw_shape):
        s, t = _pair(rng, draw_shape)
        x = rng.uniform(-2, 2, s)
        y = rng.uniform(-2, 2, t)
        if kind == "div":
            y = _away_from_zero(rng, t, 0.5, 2.0)
        if kind == "maximum":
            # keep |x - y| away from 0 where they meet after broadcasting (no ties)
            b = np.broadcast_arrays(x, y)
            gap = np.abs(b[0] - b[1])
            if gap.size and gap.min() < 1e-3:
                return case(rng, draw_shape)
        return (x, y), {}

    return case


def unary(lo=-2.0, hi=2.0, away=False):
    def case(rng, draw_shape):
        s = draw_shape()
        x = _away_from_zero(rng, s, 0.05, hi) if away else rng.uniform(lo, hi, s)
        return (x,), {}

    return case


def pow_case(rng, draw_shape):
    s, t = _pair(rng, draw_shape)
    x = rng.uniform(0.5, 2.0, s)
    y = rng.uniform(-2.0, 3.0, t)
    return (x, y), {}


def where_case(rng, draw_shape):
    s = draw_shape()
    cond = rng.random(s) < 0.5
    t = _bcast_partner(rng, s)
    return (Const(cond), rng.uniform(-2, 2, s), rng.uniform(-2, 2, t)), {}


def matmul_case(rng, draw_shape):
    m, k, n, b = (int(v) for v in rng.integers(1, 5, 4))
    variants = [
        ((m, k), (k, n)),
        ((k,), (k, n)),
        ((m, k), (k,)),
        ((k,), (k,)),
        ((b, m, k), (k, n)),
        ((b, m, k), (b, k, n)),
        ((1, m, k), (b, k, n)),
    ]
    xs, ys = variants[rng.integers(len(variants))]
    return (rng.uniform(-1, 1, xs), rng.uniform(-1, 1, ys)), {}


def _axis_params(rng, ndim):
    choice = rng.integers(3)
    if choice == 0 or ndim == 0:
        axis = None
    elif choice == 1:
        axis = int(rng.integers(-ndim, ndim))
    else:
        k = int(rng.integers(1, ndim + 1))
        axis = tuple(int(a) for a in rng.choice(ndim, size=k, replace=False))
    return {"axis": axis, "keepdims": bool(rng.random() < 0.5)}


def reduce_case(distinct=False):
    def case(rng, draw_shape):
        s = draw_shape(min_dims=1)
        x = _distinct(rng, s) if distinct else rng.uniform(-2, 2, s)
        return (x,), _axis_params(rng, len(s))

    return case


def reshape_case(rng, draw_shape):
    s = draw_shape(min_dims=1)
    n = int(np.prod(s))
    options = [(n,), (1, n), (n, 1), (-1,), tuple(reversed(s))]
    return (rng.uniform(-2, 2, s),), {"shape": options[rng.integers(len(options))]}


def transpose_case(rng, draw_shape):
    s = draw_shape(min_dims=1)
    axes = None if rng.random() < 0.3 else tuple(int(a) for a in rng.permutation(len(s)))
    return (rng.uniform(-2, 2, s),), {"axes": axes}


def getitem_case(rng, draw_shape, basic_only=False):
    s = draw_shape(min_dims=1)
    x = rng.uniform(-2, 2, s)
    options = [
        int(rng.integers(-s[0], s[0])),
        slice(0, max(1, s[0] // 2 + 1)),
        (slice(None),) * (len(s) - 1) + (slice(None, None, -1),),
        (Ellipsis, 0),
    ]
    if basic_only:  # the array API wants every axis indexed: end with an ellipsis
        options = [o if isinstance(o, tuple) else (o, Ellipsis) for o in options]
    else:
        options.append(rng.integers(0, s[0], size=int(rng.integers(1, 6))))  # repeats add up
    index = options[rng.integers(len(options))]
    return (x,), {"index": index}


def concat_case(stack):
    def case(rng, draw_shape):
        s = draw_shape(min_dims=1)
        k = int(rng.integers(2, 4))
        axis = int(rng.integers(-(len(s) + (1 if stack else 0)), len(s) + (1 if stack else 0)))
        arrays = []
        for _ in range(k):
            shape = list(s)
            if not stack:
                shape[axis % len(s)] = int(rng.integers(1, 4))
            arrays.append(rng.uniform(-2, 2, tuple(shape)))
        return tuple(arrays), {"axis": axis}

    return case


def softmax_case(rng, draw_shape):
    s = draw_shape(min_dims=1)
    return (rng.uniform(-3, 3, s),), {"axis": int(rng.integers(-len(s), len(s)))}


def cross_entropy_case(rng, draw_shape):
    n, c = (int(v) for v in rng.integers(1, 6, 2))
    c += 1
    logits = rng.uniform(-3, 3, (n, c))
    if rng.random() < 0.5:
        labels = rng.integers(0, c, n)
    else:
        p = rng.random((n, c))
        labels = p / p.sum(axis=1, keepdims=True)
    return (logits, Const(labels)), {}


def mse_case(rng, draw_shape):
    s = draw_shape()
    return (rng.uniform(-2, 2, s), rng.uniform(-2, 2, s)), {}


CASES = {
    "add": binary("add"),
    "sub": binary("sub"),
    "mul": binary("mul"),
    "div": binary("div"),
    "neg": unary(),
    "pow": pow_case,
    "exp": unary(),
    "log": unary(0.3, 3.0),
    "sin": unary(-3, 3),
    "cos": unary(-3, 3),
    "tanh": unary(),
    "sigmoid": unary(-4, 4),
    "relu": unary(away=True),
    "maximum": binary("maximum"),
    "where": where_case,
    "matmul": matmul_case,
    "sum": reduce_case(),
    "mean": reduce_case(),
    "max": reduce_case(distinct=True),
    "reshape": reshape_case,
    "transpose": transpose_case,
    "getitem": getitem_case,
    "concatenate": concat_case(stack=False),
    "stack": concat_case(stack=True),
    "softmax": softmax_case,
    "log_softmax": softmax_case,
    "cross_entropy": cross_entropy_case,
    "mse": mse_case,
}


def shape_drawer(rng, max_dims=3, max_side=4):
    def draw_shape(min_dims=0):
        nd = int(rng.integers(min_dims, max_dims + 1))
        return tuple(int(v) for v in rng.integers(1, max_side + 1, nd))

    return draw_shape
