"""Chapter 1 (what backprop computes): 1.1 a finite-difference gradient, 1.2 the backward
rule of a least-squares loss."""

from __future__ import annotations

import numpy as np

import backprop_lab as bl
from backprop_lab import numdiff
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import (
    ENGINE_GRADIENTS,
    FINITE_DIFFERENCES,
    BackwardSpec,
    Bug,
    ValueSpec,
)


def toy_loss(w):
    """The notebook's toy loss, NumPy in, float out."""
    return float(np.sum(np.sin(w) * w**2) + 0.5 * np.sum(w) ** 2)


def toy_loss_bl(w):
    """The same loss with the engine's ops: the reference gradient comes from bl.grad."""
    return bl.sum(bl.sin(w) * w**2) + 0.5 * bl.sum(w) ** 2


def _one_sided(w, h):
    x = np.array(w, dtype=np.float64)
    return numdiff.partials(lambda: toy_loss(x), x, eps=h, scheme="forward")


STEP = 1e-6  # the step the exercise asks for

register(
    ValueSpec(
        id="1.1",
        title="fd_gradient",
        signature="fd_gradient(w)",
        inputs={"w": (6,)},
        outputs=("grad",),
        reference=lambda c: bl.grad(toy_loss_bl)(c.w),
        # centered differences with h = 1e-6 are good to ~1e-9 here; one-sided ones are not
        rtol=1e-7,
        atol=1e-8,
        bugs=[
            Bug(
                "divided by h instead of 2h",
                "Every entry is twice the slope. The points w + h e_k and w - h e_k are 2h "
                "apart, so divide their difference by 2h, not by h.",
                variant=lambda c: 2.0 * c.expected[0],
            ),
            Bug(
                "one-sided difference",
                "These are one-sided differences, (f(w + h e_k) - f(w)) / h: their error "
                "shrinks only in proportion to h, too slowly to meet the tolerance. Evaluate "
                "at w + h e_k and at w - h e_k and divide by 2h.",
                variant=lambda c: _one_sided(c.w, STEP),
                rtol=1e-7,
                atol=1e-7,
            ),
            Bug(
                "backward one-sided difference",
                "These are one-sided differences, (f(w) - f(w - h e_k)) / h: their error "
                "shrinks only in proportion to h, too slowly to meet the tolerance. Evaluate "
                "at w + h e_k and at w - h e_k and divide by 2h.",
                variant=lambda c: _one_sided(c.w, -STEP),
                rtol=1e-7,
                atol=1e-7,
            ),
            Bug(
                "step vector not reset",
                "Entry k of your result is the sum of the first k + 1 partial derivatives: "
                "the step vector still holds the steps of the earlier entries. Start from a "
                "fresh vector of zeros for each k.",
                variant=lambda c: np.cumsum(c.expected[0]),
            ),
        ],
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES,
    )
)


# The data of Exercise 1.2, exactly as the notebook draws them.
_data = np.random.default_rng(0)
A = _data.normal(size=(8, 3))
t = _data.normal(size=8)


def lsq_loss(w):
    """Mean squared error of A @ w against t (a 0-d array)."""
    return np.mean((A @ w - t) ** 2)


register(
    BackwardSpec(
        id="1.2",
        title="lsq_backward",
        forward=lsq_loss,
        inputs={"w": (3,)},
        outputs=("dw",),
        bugs=[
            Bug(
                "factor 2 forgotten",
                "Every entry is half the right value: the derivative of a square r**2 is "
                "2 r, so the factor 2 is missing.",
                variant=lambda c: 0.5 * c.expected[0],
            ),
            Bug(
                "1/8 forgotten",
                "Every entry is 8 times too large: L is the mean over the 8 residuals, so "
                "its gradient keeps the factor 1/8.",
                variant=lambda c: 8.0 * c.expected[0],
            ),
            Bug(
                "2 and 1/8 both forgotten",
                "Every entry is 4 times too large: both the factor 2 of the square and the "
                "1/8 of the mean are missing.",
                variant=lambda c: 4.0 * c.expected[0],
            ),
            Bug(
                "upstream ignored",
                "Your gradient does not change with upstream: multiply dL/dw by upstream (it "
                "is 1 only when L is the final loss).",
                variant=lambda c: c.expected[0] / c.upstream,
            ),
        ],
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES,
    )
)
