"""Chapter 3 (Jacobians), Exercise 3.3: the Jacobian of a layer by the matrix chain rule.

The answer ``tanh_layer_jacobian(x, W)`` returns the Jacobian of ``x -> tanh(x @ W)`` at the
row ``x`` (shape (n,)) for ``W`` of shape (n, k): a (k, n) matrix, rows following the outputs.
Expected: centered finite differences (:func:`backprop_lab.numdiff.numerical_jacobian`). The
hypotheses are the slips of Chapters 2 and 3: the order of the factors, the transpose, and
the value at which tanh's derivative is taken.
"""

from __future__ import annotations

import numpy as np

from backprop_lab import numdiff
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import ENGINE_GRADIENTS, FINITE_DIFFERENCES, Bug, ValueSpec

JACOBIAN_HELPERS = (
    "backprop_lab.explore.jacobians.jacobian_matrix",
    "backprop_lab.explore.jacobians.jacobian_with_passes",
)


def _jac(fn, c):
    return numdiff.numerical_jacobian(fn, c.x)


def _draw(rng, k):
    return {"x": rng.uniform(-1.5, 1.5, size=4), "W": rng.uniform(-1.0, 1.0, size=(4, 3))}


register(
    ValueSpec(
        id="3.3",
        title="tanh_layer_jacobian",
        signature="tanh_layer_jacobian(x, W)",
        inputs={"x": (4,), "W": (4, 3)},
        outputs=("J",),
        draw=_draw,
        reference=lambda c: _jac(lambda v: np.tanh(v @ c.W), c),
        bugs=[
            Bug(
                "transposed",
                "Your matrix is the right one transposed, with shape (n, k). Rows follow the "
                "outputs: the Jacobian of x -> x @ W is W.T (k x n), and the diagonal factor "
                "of tanh stands on its left.",
                variant=lambda c: _jac(lambda v: np.tanh(v @ c.W), c).T,
            ),
            Bug(
                "tanh's factor missing",
                "This is the Jacobian of x -> x @ W alone. The chain rule multiplies it, on "
                "the left, by the Jacobian of tanh at u = x @ W, a diagonal matrix.",
                variant=lambda c: _jac(lambda v: v @ c.W, c),
            ),
            Bug(
                "tanh's derivative taken at x",
                "tanh's derivative is evaluated at x; it belongs at u = x @ W, the value tanh "
                "received (Chapter 2: each factor at its own input's value).",
                variant=lambda c: (numdiff.numerical_jacobian(np.tanh, c.x) @ c.W).T,
            ),
            Bug(
                "1 - tanh instead of 1 - tanh**2",
                "The diagonal factor is off: the derivative of tanh(u) is 1 - tanh(u)**2 (the "
                "square matters).",
                variant=lambda c: _jac(lambda v: v @ c.W - np.log(np.cosh(v @ c.W)), c),
            ),
        ],
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES + JACOBIAN_HELPERS,
    )
)
