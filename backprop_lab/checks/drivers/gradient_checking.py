"""Forward passes and drivers of chapter 10's exercises (gradient checking).

The functions that exercise 10.1 checks, and the layers among which exercise 10.2 looks for
the wrong one, are built here from plain data (names, arrays), so that the arguments the
grader writes stay data. Which of them carry a planted bug is part of those arguments; the
answers never receive it.
"""

from __future__ import annotations

import numpy as np

from backprop_lab.checks.drivers import driver, forward_pass
from backprop_lab.explore._blas import one_blas_thread
from backprop_lab.explore.gradient_checking import make_layer


@forward_pass
@one_blas_thread
def l2_normalize(x):
    """Exercise 10.3: every row of ``x`` divided by its Euclidean norm."""
    return x / np.sqrt(np.sum(x * x, axis=1, keepdims=True))


# name -> (f, gradient of f): the functions exercise 10.1 checks
def _quadratic(x, c):
    return float(np.sum(c * x * x) + np.sum(x))


PROBLEMS = {
    # an ordinary smooth function
    "sin-product": (
        lambda x: float(np.sum(np.sin(x) * x)),
        lambda x: np.sin(x) + x * np.cos(x),
    ),
    # some entries do not matter: their gradient is exactly zero
    "unused entries": (
        lambda x: float(np.sum(np.exp(0.5 * x[..., :2]))),
        lambda x: np.concatenate([0.5 * np.exp(0.5 * x[..., :2]), 0.0 * x[..., 2:]], axis=-1),
    ),
    # entries with gradients near 1e-10, far below the others
    "tiny entries": (
        lambda x: float(np.sum(x[..., :2] ** 2) * 5.0 + 1e-10 * np.sum(x[..., 2:] ** 2)),
        lambda x: np.concatenate([10.0 * x[..., :2], 2e-10 * x[..., 2:]], axis=-1),
    ),
    # a function a million times larger than the others
    "large scale": (
        lambda x: float(1e6 * np.sum(np.cos(x))),
        lambda x: -1e6 * np.sin(x),
    ),
}


def problem(name: str, bugs):
    """``(f, grad)`` of a named problem; ``bugs`` is a list of ``(flat index, factor)``:
    the claimed gradient is multiplied by ``factor`` at those entries."""
    f, grad = PROBLEMS[name]

    def claimed(x):
        g = np.array(grad(np.asarray(x, dtype=np.float64)), dtype=np.float64)
        flat = g.reshape(-1)
        for index, factor in bugs:
            flat[int(index)] *= float(factor)
        return g

    return f, claimed


REPORT_KEYS = ("passed", "max_rel_error", "worst_index", "analytic", "numeric", "n_failed")


@driver("gradcheck_report")
def call_gradcheck(answers, args):
    """Exercise 10.1: ``answer(f, grad, x)`` must return the report dictionary.

    Returns ``(passed, max_rel_error, n_failed, worst, analytic, numeric)``. A relative
    error below 1e-6 is returned as 1e-6 (every such value means "agrees"), and when the
    report says passed, the last three are -1, 0, 0 (a passing check has no entry to point
    at).
    """
    name, x, bugs = args
    f, grad = problem(name, bugs)
    report = answers[0](f, grad, x)
    if not isinstance(report, dict) or any(k not in report for k in REPORT_KEYS):
        got = sorted(report) if isinstance(report, dict) else type(report).__name__
        raise TypeError(
            f"gradcheck_report must return a dict with the keys {', '.join(REPORT_KEYS)}; "
            f"it returned {got}"
        )
    passed = bool(report["passed"])
    error = float(report["max_rel_error"])
    error = max(error, 1e-6) if not np.isnan(error) else error
    if passed:
        return 1.0, error, float(report["n_failed"]), -1.0, 0.0, 0.0
    index = report["worst_index"]
    if np.isscalar(index) and np.ndim(x) > 1 and 0 <= int(index) < np.size(x):
        flat = float(int(index))  # a flat position, as np.argmax gives: unambiguous
    else:
        index = (index,) if np.isscalar(index) else tuple(int(i) for i in np.ravel(index))
        try:
            flat = float(np.ravel_multi_index(index, np.shape(x)))
        except ValueError:
            flat = -2.0  # not an index of x
    return (
        0.0,
        error,
        float(report["n_failed"]),
        flat,
        float(report["analytic"]),
        float(report["numeric"]),
    )


class _Watched:
    """A layer whose forward and backward count their calls (the answer sees the layer's
    name, forward, backward and inputs, through fresh functions)."""

    def __init__(self, layer):
        self.name = layer.name
        self.inputs = layer.inputs
        self.forward_calls = 0
        self.backward_calls = 0
        forward, backward = layer.forward, layer.backward

        def forward_pass(*inputs):
            self.forward_calls += 1
            return forward(*inputs)

        def backward_pass(upstream, *inputs):
            self.backward_calls += 1
            return backward(upstream, *inputs)

        self.forward = forward_pass
        self.backward = backward_pass
        self._repr = repr(layer)

    def __repr__(self) -> str:
        return self._repr


@driver("find_wrong")
def call_find_wrong(answers, args):
    """Exercise 10.2: ``answer(layers)`` with layers built from ``(kind, variant, inputs)``.

    The layers count their calls: an answer that names a layer without having run its
    backward rule and its forward pass (twice at least: a difference) did not check it."""
    (specs,) = args
    layers = [_Watched(make_layer(kind, variant, inputs)) for kind, variant, inputs in specs]
    result = answers[0](layers)
    if isinstance(result, (tuple, list)) and len(result) == 2:
        try:
            named = layers[int(result[0])]
        except (TypeError, ValueError, IndexError):
            named = None
        if named is not None and (named.backward_calls < 1 or named.forward_calls < 2):
            raise RuntimeError(
                f"find_wrong named layer {int(result[0])} ({named.name}) after running its "
                f"backward rule {named.backward_calls} times and its forward pass "
                f"{named.forward_calls} times: that is not a gradient check. Decide by "
                "comparing backward(u, *inputs) with finite differences of the forward pass."
            )
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(
            f"find_wrong must return a pair (layer_index, input_index); it returned {result!r}"[
                :200
            ]
        )
    return float(result[0]), float(result[1])
