"""Chapter 4 (a two-layer network by hand), Exercise 4.3: weight decay, where each weight
matrix is used twice.

The loss adds ``(lam / 2) (||W1||^2 + ||W2||^2)`` to the chapter's squared loss, so W1 and
W2 each feed two ops (the network and the penalty) and their gradients must add the two
paths. The answer ``penalized_backward(upstream, W1, b1, W2, b2, X, Y, lam)`` returns
``(dW1, db1, dW2, db2)``; expected: centered finite differences of
:func:`backprop_lab.checks.drivers.weight_decay.penalized_loss`.
"""

from __future__ import annotations

import numpy as np

from backprop_lab import numdiff
from backprop_lab.checks.drivers.weight_decay import LAM, X_WD, Y_WD, penalized_loss
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import ENGINE_GRADIENTS, FINITE_DIFFERENCES, BackwardSpec, Bug

HELPERS = (
    "backprop_lab.explore.two_layer_network.engine_gradients",
    "backprop_lab.explore.two_layer_network.train_digits",
)


def _penalty(c, scale):
    """The penalty's share of each gradient (times ``scale``), by finite differences of the
    penalty term alone; the biases are in the penalty only for the 'biases decayed' bug."""

    def share(x):
        term = numdiff.numerical_gradient(lambda v: 0.5 * LAM * np.sum(v * v), x)
        return c.upstream * scale * term

    return share(c.W1), share(c.b1), share(c.W2), share(c.b2)


def _data_only(c):
    p = _penalty(c, 1.0)
    e = c.expected
    return (e[0] - p[0], None, e[2] - p[2], None)


def _penalty_only(c):
    p = _penalty(c, 1.0)
    return (p[0], None, p[2], None)


def _double_penalty(c):
    p = _penalty(c, 1.0)
    e = c.expected
    return (e[0] + p[0], None, e[2] + p[2], None)


def _biases_decayed(c):
    p = _penalty(c, 1.0)
    e = c.expected
    return (None, e[1] + p[1], None, e[3] + p[3])


register(
    BackwardSpec(
        id="4.3",
        title="penalized_backward",
        forward=penalized_loss,
        inputs={"W1": (3, 5), "b1": (5,), "W2": (5, 2), "b2": (2,)},
        outputs=("dW1", "db1", "dW2", "db2"),
        backward_order=("dW2", "db2", "dW1", "db1"),
        arguments=lambda c: (c.upstream, c.W1, c.b1, c.W2, c.b2, X_WD.copy(), Y_WD.copy(), LAM),
        arg_labels=("upstream", "W1", "b1", "W2", "b2", "X", "Y", "lam"),
        signature="penalized_backward(upstream, W1, b1, W2, b2, X, Y, lam)",
        bugs=[
            Bug(
                "the penalty's path is missing",
                "It is the gradient of the squared loss alone. This weight feeds two ops, the "
                "network and the penalty (lam / 2) ||W||**2; its gradient is the sum over both "
                "paths, so add the penalty's contribution lam * W (times upstream).",
                variant=_data_only,
            ),
            Bug(
                "the data path was overwritten",
                "It holds only the penalty's contribution, lam * W: the gradient coming back "
                "through the network was overwritten. The two paths add (+=, not =).",
                variant=_penalty_only,
            ),
            Bug(
                "the factor 1/2 dropped",
                "The penalty's contribution is twice too large: (lam / 2) ||W||**2 has gradient "
                "lam * W, not 2 * lam * W.",
                variant=_double_penalty,
            ),
            Bug(
                "biases decayed",
                "It includes lam * b, but the penalty covers W1 and W2 only: a bias's gradient "
                "comes from the network alone.",
                variant=_biases_decayed,
            ),
            Bug(
                "upstream ignored",
                "It does not change with upstream: multiply both paths by upstream (it is 1 "
                "only when this loss is the final one).",
                variant=lambda c: tuple(e / c.upstream for e in c.expected),
            ),
        ],
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES + HELPERS,
    )
)
