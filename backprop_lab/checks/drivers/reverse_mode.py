"""Kernel side of chapter 6's checks (why reverse mode): how the answers are called, and the
passes they make, counted with ``bl.count``.

Pass counts are returned as data. Where an exercise allows a budget of passes rather than
one exact count, the count is reported as ``max(count, budget)``, so that every answer
within the budget reads the same and the oracle can compare it with the budget. No answer
and no expected value lives here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import backprop_lab as bl
from backprop_lab.checks.drivers import driver


def tanh_network(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray]) -> Callable:
    """``x -> tanh(... tanh(x W_1 + b_1) ...) W_L + b_L`` on engine Tensors (no tanh after
    the last layer); the weights are constants of the function."""
    ws = [bl.tensor(w) for w in weights]
    bs = [bl.tensor(b) for b in biases]

    def f(x: Any) -> Any:
        h = x
        for i, (w, b) in enumerate(zip(ws, bs)):
            h = h @ w + b
            if i < len(ws) - 1:
                h = bl.tanh(h)
        return h

    return f


class _Calls:
    """Wrap a function so that its calls are counted."""

    def __init__(self, fn: Callable, name: str) -> None:
        self.fn = fn
        self.calls = 0
        self.__name__ = name

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.fn(*args)


@driver("jacobian_rows_and_columns")
def rows_and_columns(answers: tuple, args: tuple) -> tuple:
    """Exercise 6.1: ``(J_rows, passes_rows, J_columns, passes_columns)``; passes are
    ``[calls of f, backward passes]``."""
    by_rows, by_columns = answers
    weights, biases, x = args
    out = []
    for answer in (by_rows, by_columns):
        f = _Calls(tanh_network(weights, biases), "f")
        with bl.count() as c:
            J = answer(f, np.array(x, copy=True))
        out += [J, np.array([f.calls, c.backward_passes], dtype=np.float64)]
    return tuple(out)


LONG_CHAIN_LIMIT = 12  # chains with more factors than this run under a time limit
LONG_CHAIN_SECONDS = 10.0  # CPU seconds; the dynamic program needs milliseconds


@driver("chain_order")
def chain_order(answers: tuple, args: tuple) -> tuple:
    """Exercise 6.2: the answer returns ``(flops, tree)``; report ``(flops, FLOPs of the
    tree)``, pricing the tree with :func:`backprop_lab.explore.reverse_mode.tree_flops`."""
    from backprop_lab.checks.runner import _alarm, _TimeUp
    from backprop_lab.explore.reverse_mode import tree_flops

    (answer,) = answers
    (dims,) = args
    if len(dims) - 1 <= LONG_CHAIN_LIMIT:
        result = answer(list(dims))
    else:  # the long chain: trying every bracketing would run for hours
        try:
            with _alarm(LONG_CHAIN_SECONDS, 4 * LONG_CHAIN_SECONDS):
                result = answer(list(dims))
        except _TimeUp:
            raise TimeoutError(
                f"cheapest_order ran for more than {LONG_CHAIN_SECONDS:g} s on a chain of "
                f"{len(dims) - 1} factors and was stopped. The number of bracketings grows "
                "like 4^N (about ten million here), so an answer that tries them all cannot "
                "finish: remember the best cost of every contiguous sub-chain and build longer "
                "sub-chains from shorter ones (dynamic programming, O(N^3) steps)."
            ) from None
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(
            f"cheapest_order must return a pair (flops, tree), not {type(result).__name__}"
            + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
        )
    flops, tree = result
    try:
        cost = tree_flops(dims, tree)
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"the tree {tree!r} is not a bracketing of the chain: {exc}") from None
    # one-element arrays, not scalars: a 0-d output comes back from the grading record as
    # shape (1,) (np.ascontiguousarray makes arrays at least 1-d)
    return np.array([float(flops)]), np.array([float(cost)])


@driver("waist_jacobian")
def waist_jacobian(answers: tuple, args: tuple) -> tuple:
    """Exercise 6.3: ``(J, passes)`` with passes ``[calls of h, backward passes, calls of g]``
    reported as at least the budget given in the arguments."""
    (answer,) = answers
    encoder, decoder, x, budget = args
    h = _Calls(tanh_network(*encoder), "h")
    g = _Calls(tanh_network(*decoder), "g")
    with bl.count() as c:
        J = answer(g, h, np.array(x, copy=True))
    counts = np.array([h.calls, c.backward_passes, g.calls], dtype=np.float64)
    return J, np.maximum(counts, np.asarray(budget, dtype=np.float64))
