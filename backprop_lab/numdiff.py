"""Finite differences, written once: the oracle that gradcheck, the exercise checks and the
chapters' explorers all compare backprop against.

Everything here rests on :func:`partials`: nudge one entry of an array in place, evaluate,
nudge the other way, evaluate, restore, and divide. ``scheme="centered"`` uses
``(f(x + h) - f(x - h)) / 2h`` (error ~ h^2, two evaluations per entry);
``scheme="forward"`` uses ``(f(x + h) - f(x)) / h`` (error ~ h, one evaluation per entry
plus one at ``x``).

The default step balances truncation against round-off in float64: about ``eps^(1/3)``
(6e-6) for centered and ``eps^(1/2)`` (1.5e-8) for one-sided differences, times
``max(1, |x_i|)``. Chapter 10 plots the error against the step to show why.

NumPy only, on the host, in float64: this is bookkeeping around a function that may run on
any backend (the function converts what it reads).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "EPS64",
    "default_step",
    "partials",
    "derivative",
    "numerical_gradient",
    "numerical_vjp",
    "numerical_jacobian",
]

EPS64 = float(np.finfo(np.float64).eps)
_SCHEMES = ("centered", "forward")


def default_step(value: float, scheme: str = "centered") -> float:
    """The round-off-balancing step for an entry of size ``value``."""
    power = 1.0 / 3.0 if scheme == "centered" else 0.5
    return EPS64**power * max(1.0, abs(float(value)))


def _check_scheme(scheme: str) -> None:
    if scheme not in _SCHEMES:
        raise ValueError(f"scheme must be 'centered' or 'forward', got {scheme!r}")


def partials(
    value: Callable[[], Any],
    x: np.ndarray,
    *,
    eps: float | None = None,
    scheme: str = "centered",
) -> np.ndarray:
    """Finite-difference derivatives of ``value()`` with respect to every entry of ``x``.

    ``x`` is a writable float array that ``value`` reads (a view into a model's weights
    works too): each entry is moved in place, ``value()`` is called, and the entry is
    restored, also when ``value`` raises. ``value()`` returns a number or an array; the
    result has shape ``x.shape + shape_of_value``. ``eps=None`` picks :func:`default_step`
    per entry.
    """
    _check_scheme(scheme)
    if not isinstance(x, np.ndarray) or not x.flags.writeable:
        raise TypeError("partials needs a writable NumPy array to nudge in place")
    flat = x.reshape(-1)
    if flat.size and not np.shares_memory(flat, x):
        raise TypeError("partials needs an array whose entries can be nudged in place")
    at_x = np.asarray(value(), dtype=np.float64) if scheme == "forward" else None
    columns = []
    for i in range(flat.size):
        old = flat[i]
        h = default_step(old, scheme) if eps is None else float(eps)
        try:
            flat[i] = old + h
            plus = np.asarray(value(), dtype=np.float64)
            if scheme == "centered":
                flat[i] = old - h
                minus = np.asarray(value(), dtype=np.float64)
                columns.append((plus - minus) / (2.0 * h))
            else:
                columns.append((plus - at_x) / h)
        finally:
            flat[i] = old
    if not columns:
        return np.zeros(x.shape, dtype=np.float64)
    return np.stack(columns).reshape(tuple(x.shape) + columns[0].shape)


def derivative(
    f: Callable[[float], Any], x: float, h: float | None = None, scheme: str = "centered"
) -> float:
    """The derivative of a scalar function of one number, by finite differences."""
    box = np.array([float(x)])
    return float(partials(lambda: f(float(box[0])), box, eps=h, scheme=scheme)[0])


def numerical_gradient(
    f: Callable[[np.ndarray], Any],
    x: Any,
    *,
    eps: float | None = None,
    scheme: str = "centered",
) -> np.ndarray:
    """Gradient of a scalar ``f(x)`` at ``x`` (a float64 copy is nudged; ``x`` is untouched)."""
    x = np.array(x, dtype=np.float64)
    return partials(lambda: f(x), x, eps=eps, scheme=scheme)


def numerical_vjp(
    f: Callable[..., Any],
    inputs: Sequence[Any],
    upstream: Any,
    *,
    eps: float | None = None,
    scheme: str = "centered",
) -> list[np.ndarray]:
    """``d sum(f(*inputs) * upstream) / d input`` for every input (float64 copies).

    The vector-Jacobian product that backprop computes, by ``2 N`` evaluations of ``f``
    (``N + 1`` one-sided), where ``N`` counts all input entries.
    """
    xs = [np.array(x, dtype=np.float64) for x in inputs]
    u = np.asarray(upstream, dtype=np.float64)

    def scalar() -> float:
        return float(np.sum(np.asarray(f(*xs), dtype=np.float64) * u))

    return [partials(scalar, x, eps=eps, scheme=scheme) for x in xs]


def numerical_jacobian(
    f: Callable[[np.ndarray], Any],
    x: Any,
    *,
    eps: float | None = None,
    scheme: str = "centered",
) -> np.ndarray:
    """Jacobian of ``f`` at ``x`` as a matrix of shape ``(f(x).size, x.size)``."""
    x = np.array(x, dtype=np.float64)

    def flat_value() -> np.ndarray:
        return np.asarray(f(x), dtype=np.float64).reshape(-1)

    cols = partials(flat_value, x, eps=eps, scheme=scheme)
    return cols.reshape(x.size, -1).T
