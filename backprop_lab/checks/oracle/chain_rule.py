"""Chapter 2 (the chain rule): 2.1 the backward rule of sin(w**2)**3, 2.2 two paths."""

from __future__ import annotations

import numpy as np

from backprop_lab import numdiff
from backprop_lab.checks.drivers.chain_rule import sin_cubed, two_paths
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import (
    ENGINE_GRADIENTS,
    FINITE_DIFFERENCES,
    BackwardSpec,
    Bug,
    Cost,
)

UPSTREAM_IGNORED = Bug(
    "upstream ignored",
    "Your gradient does not change with upstream: multiply the product of the local "
    "derivatives by upstream.",
    variant=lambda c: c.expected[0] / c.upstream,
)


def _cos_at_w(c):
    # the chapter's pitfall: every factor right except cos, taken at w instead of z = w**2
    with np.errstate(all="ignore"):
        return c.expected[0] * np.cos(c.w) / np.cos(c.w**2)


register(
    BackwardSpec(
        id="2.1",
        title="sin_cubed_backward",
        forward=sin_cubed,
        inputs={"w": (5,)},
        outputs=("dw",),
        bugs=[
            Bug(
                "cos taken at w",
                "The factor cos is evaluated at w; it belongs at z = w**2, the value the sin "
                "step received in the forward pass. Compute z = w**2 first and use cos(z).",
                variant=_cos_at_w,
            ),
            Bug(
                "3a**2 taken at w",
                "The outer factor 3a**2 is evaluated at w; it belongs at a = sin(w**2), the "
                "value the cube received in the forward pass.",
                variant=lambda c: c.upstream * 3 * c.w**2 * np.cos(c.w**2) * 2 * c.w,
            ),
            Bug(
                "inner derivative dropped",
                "The factor dz/dw = 2w of the first step is missing: the chain has three "
                "steps, so the product has three local factors.",
                variant=lambda c: c.expected[0] / (2 * c.w),
            ),
            UPSTREAM_IGNORED,
        ],
        cost=Cost(multiple=10, inputs={"w": (200_000,)}),
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES,
    )
)


def _direct_only(c):
    """The gradient along the direct path alone: y held at its forward value."""
    y0 = c.x**2
    return numdiff.numerical_vjp(lambda x: x * y0 + np.sin(y0), [c.x], c.upstream)[0]


def _through_y_only(c):
    """The gradient along the path through y alone: the direct x held fixed."""
    x0 = c.x.copy()
    return numdiff.numerical_vjp(lambda x: x0 * x**2 + np.sin(x**2), [c.x], c.upstream)[0]


def _without_dy_dx(c):
    """Direct path plus dz/dy, with the factor dy/dx of the second path left out."""
    x0, y0 = c.x.copy(), c.x**2
    dz_dy = numdiff.numerical_vjp(lambda y: x0 * y + np.sin(y), [y0], c.upstream)[0]
    return _direct_only(c) + dz_dy


register(
    BackwardSpec(
        id="2.2",
        title="two_paths_backward",
        forward=two_paths,
        inputs={"x": (4,)},
        outputs=("dx",),
        bugs=[
            Bug(
                "only the direct path",
                "Your gradient is the direct path alone, dz/dx with y held fixed (= y). The "
                "path through y, (dz/dy)(dy/dx), is missing or was overwritten: add the two "
                "contributions (+=, not =).",
                variant=_direct_only,
            ),
            Bug(
                "only the path through y",
                "Your gradient is the path through y alone, (dz/dy)(dy/dx). The direct term, "
                "dz/dx with y held fixed (= y), is missing or was overwritten: add the two "
                "contributions (+=, not =).",
                variant=_through_y_only,
            ),
            Bug(
                "dy/dx missing on the second path",
                "The path through y lacks its last factor, dy/dx = 2x: that path's "
                "contribution is (dz/dy)(dy/dx).",
                variant=_without_dy_dx,
            ),
            UPSTREAM_IGNORED,
        ],
        cost=Cost(multiple=10, inputs={"x": (200_000,)}),
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES,
    )
)
