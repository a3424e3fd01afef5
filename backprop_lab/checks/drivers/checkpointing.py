"""Kernel side of Chapter 11's exercises (memory and checkpointing).

Exercise 11.1 (``checkpointed_backward``) is run on a :class:`~backprop_lab.explore.
checkpointing.NumpyStack` built from the case's weights, while ``tracemalloc`` follows the
memory it allocates and the stack counts its forward calls. The driver reports both as
ratios to the limits the case carries (1.0 means within the limit), so what crosses to the
oracle is data, and no expected value lives here.
"""

from __future__ import annotations

import tracemalloc

import numpy as np

from backprop_lab.checks.drivers import driver
from backprop_lab.explore.checkpointing import NumpyStack


@driver("checkpoint_schedule")
def run_schedule(answers, args):
    """``answer(x, n_layers, forward, backward, upstream, k)`` on the case's network.

    ``args``: ``(weights, x, upstream, k, memory_limit, forward_limit)``; the limits are in
    activations (one array the shape of ``x``) and in calls of ``forward``. Returns
    ``(dx, dW, peak_memory, forward_calls)``; the last two are ``max(1, measured / limit)``
    (1.0 when within the limit; ``memory_limit`` None skips the measurement).
    """
    (answer,) = answers
    weights, x, upstream, k, memory_limit, forward_limit = args
    net = NumpyStack([np.asarray(W) for W in weights], x, upstream)
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        result = answer(x, net.n_layers, net.forward, net.backward, upstream, k)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was_tracing:
            tracemalloc.stop()
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return result  # the runner reports what came back
    dx, dWs = result
    if isinstance(dWs, (list, tuple)) and any(g is None for g in dWs):
        missing = [i for i, g in enumerate(dWs) if g is None]
        raise ValueError(
            f"the weight gradients of layers {missing[:8]}{' ...' if len(missing) > 8 else ''} "
            f"are None: every one of the {net.n_layers} layers needs its dW (is a segment's "
            "range off by one?)"
        )
    if isinstance(dWs, (list, tuple)) and len(dWs) != net.n_layers:
        raise ValueError(
            f"{len(dWs)} weight gradients came back for {net.n_layers} layers: return one dW "
            "per layer, [dW_0, ..., dW_{n_layers - 1}]"
        )
    try:
        dW = np.stack([np.asarray(g, dtype=np.float64) for g in dWs])
    except (TypeError, ValueError):
        dW = dWs
    memory = 1.0
    if memory_limit is not None:
        memory = max(1.0, peak / x.nbytes / memory_limit)
    calls = max(1.0, net.forward_calls / forward_limit)
    return dx, dW, np.array([memory]), np.array([calls])


@driver("number")
def one_number(answers, args):
    """``answer(*args)`` for an answer that is one number, passed on as an array of shape
    (1,) (what the grading record keeps of a number; a number that is not alone keeps its
    own shape, and the check reports it)."""
    result = answers[0](*args)
    try:
        arr = np.asarray(result, dtype=np.float64)
    except (TypeError, ValueError):
        return result
    return arr.reshape(1) if arr.ndim == 0 else arr
