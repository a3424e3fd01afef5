"""Chapter 1 (what backprop computes), Exercise 1.3: predict what a backward pass costs.

The answer ``backward_flop_ratio(widths)`` predicts, for the linear stack
``X @ W_1 @ ... @ W_D`` (``X`` is data, every ``W_l`` needs a gradient), the FLOPs of the
backward pass's matrix products divided by those of the forward pass's. The expected value
is measured: the engine runs the stack and its FLOP counter tallies each product
(:func:`backprop_lab.explore.what_backprop_computes.matmul_flop_tally`). The answer
returns one number; it must predict, not measure: the counter, the tally and the engine's
gradients are off limits.
"""

from __future__ import annotations

import numpy as np

from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import ENGINE_GRADIENTS, FINITE_DIFFERENCES, Bug, ValueSpec
from backprop_lab.explore.what_backprop_computes import matmul_flop_tally

MEASURING = (
    "backprop_lab.instrument.counters",
    "backprop_lab.explore.what_backprop_computes.matmul_flop_tally",
    "backprop_lab.explore.what_backprop_computes.flop_figure",
    "backprop_lab.explore.what_backprop_computes.backward_forward_ratio",
    "backprop_lab.explore.what_backprop_computes.gradient_cost_table",
)


def _draw(rng, k):
    depth = (3, 1, 5)[k]  # the second case is one layer: ratio 1 whatever the widths
    return {"widths": rng.integers(2, 300, size=depth + 1)}


def _tally(c):
    t = np.array(matmul_flop_tally(c.widths, batch=4), dtype=np.float64)
    return t[:, 0], t[:, 1]


def _measured(c):
    fwd, bwd = _tally(c)
    return np.float64(bwd.sum() / fwd.sum())


def _first_layer_free(c):
    fwd, bwd = _tally(c)
    return np.float64(bwd[1:].sum() / fwd.sum())


def _equal_layers(c):
    depth = len(c.widths) - 1
    return np.float64((2 * depth - 1) / depth)


register(
    ValueSpec(
        id="1.3",
        title="backward_flop_ratio",
        signature="backward_flop_ratio(widths)",
        inputs={"widths": (4,)},
        outputs=("ratio",),
        cases=3,
        draw=_draw,
        reference=_measured,
        rtol=1e-9,
        atol=1e-12,
        bugs=[
            Bug(
                "every layer counted twice",
                "Your ratio is 2 whatever the widths: you counted two products in the backward "
                "pass of every layer. The first layer's input is the data, which needs no "
                "gradient, so that layer's backward pass computes only its weight gradient: "
                "one product.",
                variant=lambda c: np.float64(2.0),
            ),
            Bug(
                "one product per layer",
                "Your ratio is 1: you counted one product per layer. Every layer after the "
                "first needs two, a gradient for its weights and one for its input, which the "
                "layer below it needs.",
                variant=lambda c: np.float64(1.0),
            ),
            Bug(
                "a training step, not a backward pass",
                "Yours is exactly 1 more than the right ratio: that is a whole training step "
                "(forward plus backward) in forward passes. The question asks for the "
                "backward pass alone.",
                variant=lambda c: _measured(c) + 1.0,
            ),
            Bug(
                "first layer free",
                "You left out the first layer's backward work. Its input needs no gradient, "
                "but its weights do: one product the size of its forward product.",
                variant=_first_layer_free,
            ),
            Bug(
                "layers weighted equally",
                "You weighted every layer the same, as if all had the same size. A product "
                "of a (B, m) matrix with an (m, n) one costs in proportion to m * n, so weight "
                "each layer by widths[l-1] * widths[l].",
                variant=_equal_layers,
            ),
            Bug(
                "forward over backward",
                "Yours is the reciprocal of the right ratio: divide the backward FLOPs by the "
                "forward FLOPs, not the other way round.",
                variant=lambda c: 1.0 / _measured(c),
            ),
        ],
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES + MEASURING,
    )
)
