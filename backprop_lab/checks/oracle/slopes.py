"""Chapter 2 (the chain rule), Exercise 2.3: predict where the slope of L = sin(c w^2)^3
vanishes.

The answer ``flat_points(c, w_max)`` returns, in increasing order, every w in [0, w_max]
where dL/dw = 0. The expected points are found numerically from the engine's gradient,
with no formula: on a fine grid, every sign change of dL/dw is refined by bisection and
every local minimum of |dL/dw| by a golden-section search, and a minimum counts as a zero
only when |dL/dw| falls below 1e-9 of its largest value on the interval.
"""

from __future__ import annotations

import math

import numpy as np

import backprop_lab as bl
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import ENGINE_GRADIENTS, FINITE_DIFFERENCES, Bug, ValueSpec

GRID = 20_001


def _slopes(c: float, w):
    """dL/dw of L = sin(c w^2)^3 at every entry of ``w``, by the engine's backward pass."""
    wt = bl.tensor(np.asarray(w, dtype=np.float64), requires_grad=True)
    bl.sum(bl.sin(c * wt**2) ** 3).backward()
    return np.asarray(wt.grad, dtype=np.float64)


def _slope(c: float, w: float) -> float:
    return float(_slopes(c, np.array([w]))[0])


def _bisect(c, lo, hi):
    f_lo = _slope(c, lo)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        f_mid = _slope(c, mid)
        if f_mid == 0.0 or hi - lo < 1e-15:
            return mid
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _golden(c, lo, hi):
    r = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    x1, x2 = b - r * (b - a), a + r * (b - a)
    f1, f2 = abs(_slope(c, x1)), abs(_slope(c, x2))
    for _ in range(120):
        if b - a < 1e-14:
            break
        if f1 <= f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - r * (b - a)
            f1 = abs(_slope(c, x1))
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + r * (b - a)
            f2 = abs(_slope(c, x2))
    return 0.5 * (a + b)


def zeros_of_slope(c: float, w_max: float) -> np.ndarray:
    """Every w in [0, w_max] with dL/dw = 0 for L = sin(c w^2)^3, found numerically."""
    w = np.linspace(0.0, w_max, GRID)
    s = _slopes(c, w)
    big = float(np.max(np.abs(s)))
    found = []
    if s[0] == 0.0:
        found.append(0.0)
    for k in np.flatnonzero(s[:-1] * s[1:] < 0):
        found.append(_bisect(c, w[k], w[k + 1]))
    a = np.abs(s)
    for k in np.flatnonzero((a[1:-1] <= a[:-2]) & (a[1:-1] <= a[2:])) + 1:
        x = _golden(c, w[k - 1], w[k + 1])
        if abs(_slope(c, x)) < 1e-9 * big:
            found.append(x)
    found.sort()
    out = []
    for x in found:  # a point found both ways, or by two neighbouring minima, counts once
        if not out or x - out[-1] > 1e-6:
            out.append(x)
    return np.array(out)


def _draw(rng, k):
    c = (0.8, 1.6, 2.5)[k] * rng.uniform(0.9, 1.1)
    return {"c": np.float64(c), "w_max": np.float64(rng.uniform(2.0, 2.6))}


def _where(c, points, factor):
    """The expected points at which ``factor`` (a forward value) vanishes."""
    z = c.c * points**2
    value = {"a": np.sin(z), "cos": np.cos(z)}[factor]
    return np.abs(value) < 1e-6


def _without(c, drop):
    pts = c.expected[0]
    keep = np.ones(pts.shape, dtype=bool)
    if "a" in drop:
        keep &= ~(_where(c, pts, "a") & (pts > 0))
    if "cos" in drop:
        keep &= ~_where(c, pts, "cos")
    if "zero" in drop:
        keep &= pts > 0
    return pts[keep]


register(
    ValueSpec(
        id="2.3",
        title="flat_points",
        signature="flat_points(c, w_max)",
        inputs={"c": (), "w_max": ()},
        outputs=("points",),
        cases=3,
        draw=_draw,
        reference=lambda c: zeros_of_slope(float(c.c), float(c.w_max)),
        rtol=1e-6,
        atol=1e-8,
        bugs=[
            Bug(
                "missed the points where a = 0",
                "You found the points where the slope changes sign, but not those where it "
                "touches zero and comes back: where a = sin(c w**2) = 0 (w > 0), the factor "
                "dL/da = 3a**2 vanishes without changing sign. A search for sign changes "
                "misses them; ask of each factor where it is zero.",
                variant=lambda c: _without(c, ("a",)),
                rtol=1e-4,  # a grid search for sign changes finds the rest only roughly
            ),
            Bug(
                "missed w = 0",
                "w = 0 is missing: there z = 0, so dz/dw = 2cw and a = sin(z) are both 0.",
                variant=lambda c: _without(c, ("zero",)),
            ),
            Bug(
                "only where cos z = 0",
                "You have only the points where cos z = 0 (the peaks and troughs of sin). The "
                "slope is a product of three factors, and it vanishes wherever any of them "
                "does: also where 2cw = 0 and where a = sin(z) = 0.",
                variant=lambda c: _without(c, ("a", "zero")),
            ),
            Bug(
                "c left out",
                "These are the points for c = 1: the first step is z = c w**2, so every "
                "condition on z moves when c changes.",
                variant=lambda c: zeros_of_slope(1.0, float(c.w_max)),
            ),
            Bug(
                "outside [0, w_max]",
                "Some of your points lie outside [0, w_max]: return only those with "
                "0 <= w <= w_max, in increasing order.",
                predicate=lambda c, got: (
                    got["points"] is not None
                    and np.size(got["points"]) > 0
                    and bool(
                        np.any(np.asarray(got["points"]) < -1e-12)
                        or np.any(np.asarray(got["points"]) > float(c.w_max) + 1e-12)
                    )
                ),
            ),
        ],
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES,
    )
)
