"""Chapter 3 (Jacobians): 3.1 the Jacobian of softmax, 3.2 softmax's backward rule."""

from __future__ import annotations

import numpy as np

from backprop_lab.checks.drivers.jacobians import softmax
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.judge import close
from backprop_lab.checks.oracle.spec import (
    ENGINE_GRADIENTS,
    FINITE_DIFFERENCES,
    BackwardSpec,
    Bug,
    Cost,
    JacobianSpec,
)

JACOBIAN_HELPERS = (
    "backprop_lab.explore.jacobians.jacobian_matrix",
    "backprop_lab.explore.jacobians.jacobian_with_passes",
)

register(
    JacobianSpec(
        id="3.1",
        title="softmax_jacobian",
        forward=softmax,
        inputs={"x": (5,)},
        outputs=("J",),
        bugs=[
            Bug(
                "returned softmax itself",
                "You returned softmax(x) itself, a vector; the Jacobian is the (n, n) matrix "
                "of its partial derivatives.",
                predicate=lambda c, got: close(got["J"], c.forward_value, 1e-6, 1e-9),
            ),
            Bug(
                "built from x, not s",
                "Your matrix is built from x itself: compute s = softmax_np(x) first and "
                "build the Jacobian from s.",
                variant=lambda c: np.diag(c.x) - np.outer(c.x, c.x),
            ),
            Bug(
                "diagonal term missing",
                "The diagonal term is missing: on the diagonal d s_i / d x_i = s_i (1 - s_i), "
                "so diag(s) must be added to the off-diagonal pattern.",
                variant=lambda c: c.expected[0] - np.diag(c.forward_value),
            ),
            Bug(
                "off-diagonal terms missing",
                "Only the diagonal is there: every entry also carries the term -s_i s_j, "
                "including those off the diagonal.",
                variant=lambda c: np.diag(c.forward_value),
            ),
            Bug(
                "elementwise square instead of outer product",
                "s * s squares each entry; the off-diagonal terms need every product "
                "s_i s_j, which is the outer product np.outer(s, s).",
                variant=lambda c: np.diag(c.forward_value) - (c.forward_value**2)[None, :],
            ),
        ],
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES + JACOBIAN_HELPERS,
    )
)


def _inner_summed(c, axis):
    s, up = c.forward_value, c.upstream
    return s * (up - np.sum(up * s, axis=axis, keepdims=True))


register(
    BackwardSpec(
        id="3.2",
        title="softmax_backward",
        forward=softmax,
        inputs={"x": (4, 5)},
        outputs=("dx",),
        bugs=[
            Bug(
                "inner product summed over the batch axis",
                "The inner product <upstream, s> was summed down the columns (axis=0), which "
                "mixes different examples of the batch. It is one number per row: sum along "
                "axis=1 with keepdims=True.",
                variant=lambda c: _inner_summed(c, 0),
            ),
            Bug(
                "inner product summed over everything",
                "The inner product <upstream, s> was summed over the whole batch. It is one "
                "number per row: sum along axis=1 with keepdims=True.",
                variant=lambda c: _inner_summed(c, None),
            ),
            Bug(
                "inner-product term missing",
                "The term -<upstream, s> s is missing: each output of softmax depends on "
                "every input of its row, so the gradient is s * (upstream - <upstream, s>).",
                variant=lambda c: c.forward_value * c.upstream,
            ),
        ],
        cost=Cost(multiple=10, inputs={"x": (2000, 100)}),
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES + JACOBIAN_HELPERS,
    )
)
