"""Chapter 4 (a two-layer network by hand): 4.1 the squared loss's backward rule, 4.2 the
network's whole backward pass."""

from __future__ import annotations

import numpy as np

from backprop_lab import numdiff
from backprop_lab.checks.drivers.two_layer_network import (
    forward_with_cache,
    squared_loss,
    two_layer_output,
)
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import (
    ENGINE_GRADIENTS,
    FINITE_DIFFERENCES,
    BackwardSpec,
    Bug,
    Cost,
)


def _both(factor):
    return lambda c: (factor * c.expected[0], factor * c.expected[1])


register(
    BackwardSpec(
        id="4.1",
        title="squared_loss_backward",
        forward=squared_loss,
        inputs={"Yhat": (4, 3), "Y": (4, 3)},
        outputs=("dYhat", "dY"),
        bugs=[
            Bug(
                "factor 2 forgotten",
                "Half the right value in every entry: the derivative of a square brings a "
                "factor 2.",
                variant=_both(0.5),
            ),
            Bug(
                "1/B forgotten",
                "4 times too large in every entry: L divides the sum by the batch size B "
                "(4 here), and so does its gradient.",
                variant=_both(4.0),
            ),
            Bug(
                "divided by every entry",
                "3 times too small in every entry: L divides by the batch size B = 4, not by "
                "the number of entries B * k = 12 (np.mean over the whole array does that).",
                variant=_both(1.0 / 3.0),
            ),
            Bug(
                "dY has the sign of dYhat",
                "dY has the sign of dYhat, but L depends on Yhat - Y, so dY = -dYhat.",
                variant=lambda c: (None, -c.expected[1]),
                outputs=("dY",),
            ),
            Bug(
                "upstream ignored",
                "It does not change with upstream: multiply by upstream (it is 1 only when L "
                "is the final loss).",
                variant=lambda c: (c.expected[0] / c.upstream, c.expected[1] / c.upstream),
            ),
        ],
        cost=Cost(multiple=10, inputs={"Yhat": (1000, 200), "Y": (1000, 200)}),
        forbidden=ENGINE_GRADIENTS
        + FINITE_DIFFERENCES
        + ("backprop_lab.explore.two_layer_network.engine_gradients",),
    )
)


def _below_sigmoid(c, local):
    """Gradients of X, W1, b1 when dZ = dH * local(Z, H): finite differences of each half of
    the network, so the buggy variants need no hand-written backward pass."""
    X, W1, b1, W2, b2 = (c.inputs[n] for n in ("X", "W1", "b1", "W2", "b2"))
    Z = X @ W1 + b1
    H = 1.0 / (1.0 + np.exp(-Z))
    (dH,) = numdiff.numerical_vjp(lambda h: h @ W2 + b2, [H], c.upstream)
    dZ = dH * local(Z, H)
    dX, dW1, db1 = numdiff.numerical_vjp(lambda x, w, b: x @ w + b, [X, W1, b1], dZ)
    return (dX, dW1, db1, None, None)


register(
    BackwardSpec(
        id="4.2",
        title="two_layer_backward",
        forward=two_layer_output,
        inputs={"X": (4, 3), "W1": (3, 5), "b1": (5,), "W2": (5, 2), "b2": (2,)},
        outputs=("dX", "dW1", "db1", "dW2", "db2"),
        backward_order=("dW2", "db2", "dW1", "db1", "dX"),
        arguments=lambda c: (c.upstream, forward_with_cache(*c.inputs.values())[1]),
        arg_labels=("dYhat", "cache"),
        signature="two_layer_backward(dYhat, cache)",
        bugs=[
            Bug(
                "sigmoid derivative at Z",
                "The sigmoid's derivative is evaluated at Z; it is sigma(Z) (1 - sigma(Z)) = "
                "H * (1 - H), so use H, the value the sigmoid returned.",
                variant=lambda c: _below_sigmoid(c, lambda Z, H: Z * (1.0 - Z)),
            ),
            Bug(
                "sigmoid derivative missing",
                "The sigmoid's local derivative H * (1 - H) is missing between dH and dZ.",
                variant=lambda c: _below_sigmoid(c, lambda Z, H: 1.0),
            ),
            Bug(
                "mean over the batch for a bias",
                "It is the mean over the batch; the bias was added to each of the B = 4 rows, "
                "so its gradient is the sum over the rows.",
                variant=lambda c: (None, None, c.expected[2] / 4.0, None, c.expected[4] / 4.0),
                outputs=("db1", "db2"),
            ),
        ],
        cost=Cost(
            multiple=10,
            inputs={"X": (256, 128), "W1": (128, 128), "b1": (128,), "W2": (128, 64), "b2": (64,)},
        ),
        forbidden=ENGINE_GRADIENTS
        + FINITE_DIFFERENCES
        + (
            "backprop_lab.explore.two_layer_network.engine_gradients",
            "backprop_lab.explore.two_layer_network.train_digits",
        ),
    )
)
