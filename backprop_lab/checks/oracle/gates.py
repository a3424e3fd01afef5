"""Chapter 5 (gates and gradient flow): the backward rules of add (with broadcasting),
multiply, max (ties go to x) and sigmoid."""

from __future__ import annotations

import numpy as np

from backprop_lab.checks.drivers.gates import add, maximum, multiply, sigmoid
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import (
    ENGINE_GRADIENTS,
    FINITE_DIFFERENCES,
    BackwardSpec,
    Bug,
    Cost,
)

GATE_HELPERS = (
    "backprop_lab.explore.gates.gate_gradients",
    "backprop_lab.explore.gates.local_derivative_curve",
)
FORBIDDEN = ENGINE_GRADIENTS + FINITE_DIFFERENCES + GATE_HELPERS
LARGE = (1000, 200)


def _upstream_ignored(message):
    return Bug(
        "upstream ignored",
        message,
        variant=lambda c: tuple(e / c.upstream for e in c.expected),
    )


register(
    BackwardSpec(
        id="5.1",
        title="add_backward",
        forward=add,
        inputs={"x": (3, 4), "y": (4,)},
        outputs=("dx", "dy"),
        bugs=[
            Bug(
                "mean instead of sum",
                "It is the mean over the 3 rows; y was added to every row, so its gradient "
                "is the sum over the rows (sum, not mean).",
                variant=lambda c: (None, c.expected[1] / 3.0),
                outputs=("dy",),
            ),
            Bug(
                "summed over the wrong axis",
                "It sums across each row (axis 1); y was broadcast down the rows, so sum over "
                "axis 0.",
                variant=lambda c: (None, c.upstream.sum(axis=1)),
                outputs=("dy",),
            ),
        ],
        cost=Cost(multiple=10, inputs={"x": LARGE, "y": (LARGE[1],)}),
        forbidden=FORBIDDEN,
    )
)

register(
    BackwardSpec(
        id="5.2",
        title="multiply_backward",
        forward=multiply,
        inputs={"x": (3, 4), "y": (3, 4)},
        outputs=("dx", "dy"),
        bugs=[
            Bug(
                "gradients swapped",
                "dx and dy are swapped: the multiply gate sends each input the upstream "
                "times the OTHER input.",
                variant=lambda c: (c.expected[1], c.expected[0]),
            ),
            _upstream_ignored(
                "It does not change with upstream: each gradient is upstream times the "
                "local derivative."
            ),
        ],
        cost=Cost(multiple=10, inputs={"x": LARGE, "y": LARGE}),
        forbidden=FORBIDDEN,
    )
)


def _apart(rng, shape):
    """x and y at least 1e-3 apart: clear of the kink for finite differences."""
    x = rng.uniform(-2.0, 2.0, size=shape)
    y = rng.uniform(-2.0, 2.0, size=shape)
    return x, np.where(np.abs(x - y) < 1e-3, y + 0.01, y)


def _draw_max(rng, k):
    x, y = _apart(rng, (3, 4))
    if k == 2:  # the third case has ties, so the tie rule is tested
        tie = rng.random((3, 4)) < 0.5
        tie[0, 0] = True
        y = np.where(tie, x, y)
    return {"x": x, "y": y}


def _draw_max_large(rng):
    x, y = _apart(rng, LARGE)
    return {"x": x, "y": y}


def _max_expected(c):
    """Finite differences away from ties; at a tie (x == y) the stated rule: all to x."""
    dx, dy = c.fd()
    tie = c.x == c.y
    return np.where(tie, c.upstream, dx), np.where(tie, 0.0, dy)


def _at_ties(to_x, to_y):
    def variant(c):
        tie = c.x == c.y
        dx, dy = c.expected
        return np.where(tie, to_x * c.upstream, dx), np.where(tie, to_y * c.upstream, dy)

    return variant


register(
    BackwardSpec(
        id="5.3",
        title="max_backward",
        forward=maximum,
        inputs={"x": (3, 4), "y": (3, 4)},
        outputs=("dx", "dy"),
        cases=3,
        draw=_draw_max,
        expected=_max_expected,
        bugs=[
            Bug(
                "tie sent to y",
                "At a tie (x == y) your rule sends the gradient to y; this exercise sends ties "
                "to x (compare with x >= y).",
                variant=_at_ties(0.0, 1.0),
            ),
            Bug(
                "tie split in half",
                "At a tie (x == y) you split the gradient in half; this exercise sends all of "
                "it to x.",
                variant=_at_ties(0.5, 0.5),
            ),
            Bug(
                "tie sent to both",
                "At a tie (x == y) you send the full gradient to both x and y, which counts "
                "it twice; send it to x only.",
                variant=_at_ties(1.0, 1.0),
            ),
            Bug(
                "tie sent nowhere",
                "At a tie (x == y) your rule sends the gradient nowhere; send it to x.",
                variant=_at_ties(0.0, 0.0),
            ),
            Bug(
                "routed to the loser",
                "The gradient goes to the smaller input; the max passes it to the input that "
                "won and nothing to the other.",
                variant=lambda c: (
                    np.where(c.x >= c.y, 0.0, c.upstream),
                    np.where(c.x >= c.y, c.upstream, 0.0),
                ),
            ),
            _upstream_ignored(
                "Each gradient is upstream times the 0/1 indicator of the winner; you returned "
                "the indicator alone."
            ),
        ],
        cost=Cost(multiple=10, inputs={"x": LARGE, "y": LARGE}, draw=_draw_max_large),
        forbidden=FORBIDDEN,
    )
)

register(
    BackwardSpec(
        id="5.4",
        title="sigmoid_backward",
        forward=sigmoid,
        inputs={"x": (3, 4)},
        outputs=("dx",),
        bugs=[
            Bug(
                "derivative taken at x",
                "sigma'(x) = s (1 - s) with s = sigma(x): evaluate it at s, not at x.",
                variant=lambda c: c.upstream * c.x * (1.0 - c.x),
            ),
            Bug(
                "factor (1 - s) missing",
                "The local derivative is s (1 - s); the factor (1 - s) is missing.",
                variant=lambda c: c.upstream * c.forward_value,
            ),
            _upstream_ignored(
                "It does not change with upstream: multiply the local derivative s (1 - s) "
                "by upstream."
            ),
        ],
        cost=Cost(multiple=10, inputs={"x": (500, 400)}),
        forbidden=FORBIDDEN,
    )
)
