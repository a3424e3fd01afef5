"""Chapter 5 (gates and gradient flow): 5.5 the backward pass of a residual block, 5.6 a
dead-unit detector, 5.7 predict the gain that keeps gradients steady.

* 5.5: ``residual_backward(upstream, x, W)`` for ``h = x + tanh(x @ W)`` returns
  ``(dx, dW)``; expected by finite differences of
  :func:`backprop_lab.checks.drivers.gradient_flow.residual_block`.
* 5.6: ``dead_units(X, W1, b1, W2, b2)`` marks the units of both hidden layers of a ReLU
  network that output 0 on every row of X; expected from the engine's forward pass, unit by
  unit (a slow, obviously correct version).
* 5.7: ``steady_gain(slope)`` predicts the weight gain at which a deep leaky-ReLU stack
  passes gradients back at a constant size. Expected: measured. The stack is positively
  homogeneous in its weights (leaky ReLU(g z) = g leaky ReLU(z) for g > 0), so multiplying
  every weight by g multiplies the input gradient by g**depth exactly; one backward pass at
  gain 1 therefore gives the steady gain as ratio**(-1/depth). The measurement is good to
  about 1.5% (finite width), so the tolerance is 3%.
"""

from __future__ import annotations

import math

import numpy as np

import backprop_lab as bl
from backprop_lab import numdiff
from backprop_lab.checks.drivers.gradient_flow import residual_block
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import (
    ENGINE_GRADIENTS,
    FINITE_DIFFERENCES,
    BackwardSpec,
    Bug,
    Cost,
    ValueSpec,
)

# --------------------------------------------------------------------------- 5.5


def _through_tanh(c, at):
    """The upstream pulled back through tanh evaluated at ``at`` (finite differences)."""
    return numdiff.numerical_vjp(np.tanh, [at], c.upstream)[0]


def _derivative_at_x(c):
    du = _through_tanh(c, c.x)
    return (c.upstream + du @ c.W.T, c.x.T @ du)


def _w_not_transposed(c):
    du = _through_tanh(c, c.x @ c.W)
    return (c.upstream + du @ c.W, None)


register(
    BackwardSpec(
        id="5.5",
        title="residual_backward",
        forward=residual_block,
        inputs={"x": (4, 5), "W": (5, 5)},
        outputs=("dx", "dW"),
        backward_order=("dW", "dx"),
        bugs=[
            Bug(
                "the skip path is missing",
                "It is only the branch's share, g J_f: the add gate also sends the upstream g "
                "straight to x along the skip path, and the two shares add up at x.",
                variant=lambda c: (c.expected[0] - c.upstream, None),
                outputs=("dx",),
            ),
            Bug(
                "the branch is missing",
                "It is g alone, the skip path's share: the branch's share g J_f (through tanh "
                "and the product with W) is missing. Both reach x and add up.",
                variant=lambda c: (c.upstream, None),
                outputs=("dx",),
            ),
            Bug(
                "tanh's derivative taken at x",
                "tanh's derivative is evaluated at x; it belongs at u = x @ W, the value tanh "
                "received in the forward pass.",
                variant=_derivative_at_x,
            ),
            Bug(
                "W instead of W.T",
                "The branch multiplies by W where the backward pass of u = x @ W needs W.T (its "
                "Jacobian is W.T in the row convention, Chapter 3); with a square W the shapes "
                "do not catch it.",
                variant=_w_not_transposed,
                outputs=("dx",),
            ),
            Bug(
                "tanh skipped for dW",
                "dW uses the upstream g directly; between the product x @ W and the block's "
                "output sits tanh, so multiply g by tanh's derivative first.",
                variant=lambda c: (None, c.x.T @ c.upstream),
                outputs=("dW",),
            ),
            Bug(
                "upstream ignored",
                "It does not change with upstream: every term is the upstream times a local "
                "derivative.",
                variant=lambda c: tuple(e / c.upstream for e in c.expected),
                rtol=1e-4,
            ),
        ],
        cost=Cost(multiple=20, inputs={"x": (500, 200), "W": (200, 200)}),
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES,
    )
)

# --------------------------------------------------------------------------- 5.6


def _draw_network(rng, k):
    """A ReLU network with planted dead units: some biases far below zero, one unit whose
    pre-activation is exactly 0 on every example, and inputs >= 0 like pixels."""
    B, d, m1, m2 = 10, 6, 8, 6
    X = rng.uniform(0.0, 1.0, size=(B, d))
    X[:, 0] = 0.0  # a blank pixel
    W1 = rng.normal(size=(d, m1))
    b1 = rng.normal(scale=0.5, size=m1)
    b1[1 + k] = -20.0  # dead by its bias
    W1[1:, 5] = -np.abs(W1[1:, 5])  # a unit that adds up non-negative pixels with weights
    b1[5] = -0.1  # <= 0: dead
    W1[:, 6] = 0.0
    b1[6] = 0.0  # pre-activation exactly 0 on every example: output 0, gradient 0
    W2 = rng.normal(size=(m1, m2))
    b2 = rng.normal(scale=0.5, size=m2)
    b2[2] = -20.0
    # unit 4 of layer 2 listens only to dead units of layer 1 (negative weights on the
    # others): dead once the ReLU zeros them, alive on the raw pre-activations
    W2[:, 4] = -np.abs(W2[:, 4])
    W2[[1 + k, 5, 6], 4] = 3.0
    b2[4] = -0.05
    return {"X": X, "W1": W1, "b1": b1, "W2": W2, "b2": b2}


def _outputs(c, relu_between=True, exact_zero_alive=False):
    """Each hidden layer's outputs by the engine's forward pass; with ``exact_zero_alive``
    an output whose pre-activation is exactly 0 is replaced by 1 (the 'strictly negative'
    reading of dead)."""
    Z1 = bl.tensor(c.X) @ bl.tensor(c.W1) + bl.tensor(c.b1)
    H1 = bl.relu(Z1)
    Z2 = (H1 if relu_between else Z1) @ bl.tensor(c.W2) + bl.tensor(c.b2)
    H2 = bl.relu(Z2)
    outs = [np.asarray(H1.data), np.asarray(H2.data)]
    if exact_zero_alive:
        outs = [np.where(np.asarray(Z.data) == 0.0, 1.0, H) for Z, H in zip((Z1, Z2), outs)]
    return tuple(outs)


def _dead(outputs, every=True):
    """Unit by unit: 1.0 when the unit outputs 0 on every example (``every``) or on at least
    one (``every=False``)."""
    B, m = outputs.shape
    flags = []
    for j in range(m):
        zeros = [outputs[i, j] == 0.0 for i in range(B)]
        flags.append(float(all(zeros) if every else any(zeros)))
    return np.array(flags)


def _reference(c):
    H1, H2 = _outputs(c)
    return _dead(H1), _dead(H2)


def _variant_any(c):
    H1, H2 = _outputs(c)
    return _dead(H1, every=False), _dead(H2, every=False)


def _variant_preactivation(c):
    _, H2 = _outputs(c, relu_between=False)
    return None, _dead(H2)


def _variant_strict(c):
    H1, H2 = _outputs(c, exact_zero_alive=True)
    return _dead(H1), _dead(H2)


def _variant_per_example(c):
    H1, H2 = _outputs(c)
    return _dead(H1.T), _dead(H2.T)


register(
    ValueSpec(
        id="5.6",
        title="dead_units",
        signature="dead_units(X, W1, b1, W2, b2)",
        inputs={"X": (10, 6), "W1": (6, 8), "b1": (8,), "W2": (8, 6), "b2": (6,)},
        outputs=("dead1", "dead2"),
        cases=3,
        draw=_draw_network,
        reference=_reference,
        rtol=0.0,
        atol=1e-9,
        bugs=[
            Bug(
                "any instead of all",
                "You marked units that output 0 on some example; a unit is dead when it "
                "outputs 0 on every example of the batch (np.all over the examples, not "
                "np.any).",
                variant=_variant_any,
            ),
            Bug(
                "one entry per example",
                "You returned one entry per example; the detector answers for each unit, so "
                "reduce over the examples (axis 0) and return one entry per unit.",
                variant=_variant_per_example,
            ),
            Bug(
                "layer 2 fed with pre-activations",
                "Your second layer reads the first layer's pre-activations X @ W1 + b1; it "
                "reads their ReLU, which is 0 wherever those are negative. A unit that "
                "listens only to dead units is dead too.",
                variant=_variant_preactivation,
                outputs=("dead2",),
            ),
            Bug(
                "strictly negative",
                "A pre-activation of exactly 0 also gives output 0 (and gradient 0): a unit "
                "is dead when its pre-activation is <= 0 on every example, not < 0. Test the "
                "ReLU's output for 0.",
                variant=_variant_strict,
            ),
            Bug(
                "alive instead of dead",
                "Your 1s and 0s are swapped: mark the dead units with 1 (True).",
                variant=lambda c: tuple(1.0 - e for e in c.expected),
            ),
        ],
        forbidden=ENGINE_GRADIENTS
        + FINITE_DIFFERENCES
        + (
            "backprop_lab.instrument.plots.dead_relu_fraction",
            "backprop_lab.explore.gates.dead_relu_run",
            "backprop_lab.explore.gates.silenced_unit_run",
        ),
    )
)

# --------------------------------------------------------------------------- 5.7

DEPTH, WIDTH, BATCH = 24, 128, 64


def measured_steady_gain(slope: float, seed: int) -> float:
    """The gain that keeps the input gradient of a DEPTH-layer leaky-ReLU stack (Xavier-
    uniform weights, width WIDTH) at the size of the upstream gradient, measured once."""
    rng = np.random.default_rng(seed)
    x = bl.tensor(rng.normal(size=(BATCH, WIDTH)), requires_grad=True)
    h = x
    a = math.sqrt(6.0 / (2 * WIDTH))
    for _ in range(DEPTH):
        z = h @ bl.tensor(rng.uniform(-a, a, size=(WIDTH, WIDTH)))
        h = bl.maximum(z, slope * z)
    R = rng.normal(size=(BATCH, WIDTH))
    bl.sum(h * R).backward()
    ratio = float(np.linalg.norm(np.asarray(x.grad)) / np.linalg.norm(R))
    return ratio ** (-1.0 / DEPTH)


def _draw_slope(rng, k):
    slope = 0.0 if k == 0 else float(rng.uniform(0.45, 0.75))
    return {"slope": np.float64(slope), "seed": np.int64(rng.integers(2**31))}


def _steady(c):
    return np.float64(measured_steady_gain(float(c.slope), int(c.seed)))


def _scaled(power):
    """Variants of the form expected * (1 + slope**2) ** power."""
    return lambda c: c.expected[0] * (1.0 + float(c.slope) ** 2) ** power


register(
    ValueSpec(
        id="5.7",
        title="steady_gain",
        signature="steady_gain(slope)",
        inputs={"slope": ()},
        outputs=("gain",),
        cases=3,
        draw=_draw_slope,
        arguments=lambda c: (float(c.slope),),
        reference=_steady,
        rtol=0.03,
        atol=0.0,
        bugs=[
            Bug(
                "the slope ignored",
                "Your gain ignores the slope: a leaky ReLU passes a fraction slope of the "
                "gradient where the unit is off, so on average it keeps more than half of the "
                "squared gradient, and the gain needed is smaller.",
                variant=_scaled(0.5),
                rtol=0.03,
            ),
            Bug(
                "gain 1",
                "A gain of 1 keeps the weights' own variance, 1 / width; the (leaky) ReLU "
                "still removes part of the squared gradient in every layer, and the weights "
                "must make that part up.",
                predicate=lambda c, got: (
                    got["gain"] is not None
                    and np.allclose(np.asarray(got["gain"], dtype=float), 1.0)
                ),
            ),
            Bug(
                "variance, not standard deviation",
                "Your number fixes the variance: the gain multiplies the weights, so the "
                "squared gradient grows with the gain squared. Take the square root.",
                variant=lambda c: c.expected[0] ** 2,
                rtol=0.06,
            ),
            Bug(
                "the slope not squared",
                "The part of a gradient that a leaky unit passes when it is off is slope "
                "times that gradient, so its share of the squared norm is slope**2, not slope.",
                variant=lambda c: (
                    c.expected[0] * math.sqrt((1.0 + float(c.slope) ** 2) / (1.0 + float(c.slope)))
                ),
                rtol=0.03,
            ),
        ],
        forbidden=ENGINE_GRADIENTS
        + FINITE_DIFFERENCES
        + (
            "backprop_lab.explore.gates.layer_grad_norms",
            "backprop_lab.explore.gates.gain_figure",
        ),
    )
)
