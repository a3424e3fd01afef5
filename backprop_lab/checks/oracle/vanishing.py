"""Chapter 9 (vanishing gradients and initialisation): 9.1 the variance-preserving scale,
9.2 a predicted Jacobian-product norm, 9.3 a dead-unit detector, 9.4 a residual block.

9.1 is compared with second moments integrated numerically, 9.2 with a measurement of the
network it describes, 9.3 with masks known by construction (the cases plant dead units),
9.4 with finite differences.
"""

from __future__ import annotations

import numpy as np

from backprop_lab import numdiff
from backprop_lab.checks.drivers.vanishing import homogeneous, residual_block
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import (
    ENGINE_GRADIENTS,
    FINITE_DIFFERENCES,
    BackwardSpec,
    Bug,
    Cost,
    ValueSpec,
)
from backprop_lab.explore._blas import one_blas_thread

# ------------------------------------------------------------------ 9.1 preserving scale

_SLOPES = [(1.0, 0.0), (1.0, 0.2), (1.0, -1.0), (1.0, 1.0), (2.0, -0.5), (0.5, 0.1)]
_FANS = [(256, 256), (128, 512), (300, 100)]


def _draw_std(rng, k):
    a, b = _SLOPES[int(rng.integers(len(_SLOPES)))] if k >= 3 else _SLOPES[k]
    fan_in, fan_out = _FANS[k % len(_FANS)]
    return {"slope_pos": a, "slope_neg": b, "fan_in": fan_in, "fan_out": fan_out}


def _moments(c):
    """E[phi(z)^2] and E[phi'(z)^2] for z ~ N(0, 1), by the trapezoid rule on [-12, 12]."""
    z = np.linspace(-12.0, 12.0, 480_001)
    density = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    phi = homogeneous(c.slope_pos, c.slope_neg)
    h = 1e-7
    slope = (phi(z + h) - phi(z - h)) / (2 * h)
    return _trapezoid(phi(z) ** 2 * density, z), _trapezoid(slope**2 * density, z)


def _trapezoid(y, z):
    return float(np.sum((y[1:] + y[:-1]) * np.diff(z)) / 2)


def _negative_side_ignored(c, got):
    """The scales computed with phi(-1) taken as 0."""
    a = c.slope_pos
    want = (np.sqrt(2 / (c.fan_in * a * a)), np.sqrt(2 / (c.fan_out * a * a)))
    return all(
        got.get(n) is not None and np.allclose(got[n], w, rtol=2e-3)
        for n, w in zip(("forward_std", "backward_std"), want)
    )


def _std_reference(c):
    m_forward, m_backward = _moments(c)
    return (1 / np.sqrt(c.fan_in * m_forward), 1 / np.sqrt(c.fan_out * m_backward))


register(
    ValueSpec(
        id="9.1",
        title="preserving_std",
        inputs={"slope_pos": (), "slope_neg": (), "fan_in": (), "fan_out": ()},
        outputs=("forward_std", "backward_std"),
        cases=5,
        draw=_draw_std,
        reference=_std_reference,
        driver="homogeneous_activation",
        signature="preserving_std(phi, fan_in, fan_out)",
        rtol=2e-3,
        atol=1e-12,
        bugs=[
            Bug(
                "phi ignored",
                "Your scales do not depend on phi: they are Xavier-style 1/sqrt(fan). The "
                "activation changes both second moments: work out E[phi(z)^2] and "
                "E[phi'(z)^2] for z ~ N(0, q) from phi(1) and phi(-1), as Section 9.4 did "
                "for ReLU.",
                variant=lambda c: (1 / np.sqrt(c.fan_in), 1 / np.sqrt(c.fan_out)),
            ),
            Bug(
                "fan-in for both",
                "Your backward scale uses the fan-in; going backward, each gradient entry "
                "is a sum over fan_out terms, so the backward condition has fan_out.",
                variant=lambda c: (None, c.expected[0]),
                outputs=("backward_std",),
            ),
            Bug(
                "fans swapped",
                "Your two scales have their fans swapped: going forward each z is a sum of "
                "fan_in terms, going backward each gradient entry a sum of fan_out terms.",
                variant=lambda c: (
                    c.expected[0] * np.sqrt(c.fan_in / c.fan_out),
                    c.expected[1] * np.sqrt(c.fan_out / c.fan_in),
                ),
            ),
            Bug(
                "negative side ignored",
                "Your scales are right for ReLU but not when phi(-1) is not 0: the negative "
                "half of z contributes to E[phi(z)^2] and E[phi'(z)^2] too, through phi(-1).",
                predicate=lambda c, got: _negative_side_ignored(c, got),
            ),
            Bug(
                "averaged fans",
                "Both scales use the average of the two fans (Glorot's compromise); the "
                "exercise asks for the exact scale of each pass: fan_in forward, fan_out "
                "backward.",
                variant=lambda c: (
                    c.expected[0] * np.sqrt(2 * c.fan_in / (c.fan_in + c.fan_out)),
                    c.expected[1] * np.sqrt(2 * c.fan_out / (c.fan_in + c.fan_out)),
                ),
            ),
            Bug(
                "variance, not std",
                "You returned variances; the exercise asks for standard deviations (their "
                "square roots).",
                variant=lambda c: (c.expected[0] ** 2, c.expected[1] ** 2),
            ),
            Bug(
                "half forgotten",
                "Your scales are sqrt(2) times too small: z is positive only half of the "
                "time, so E[phi(z)^2] = (phi(1)^2 + phi(-1)^2) / 2 E[z^2], with the 1/2.",
                variant=lambda c: (c.expected[0] / np.sqrt(2), c.expected[1] / np.sqrt(2)),
            ),
        ],
        forbidden=ENGINE_GRADIENTS,
    )
)

# -------------------------------------------------------------- 9.2 predicted product norm

_WIDTH, _BATCH = 256, 32


def _draw_predict(rng, k):
    kinds = ["linear", "relu", "tanh", "residual", "relu"]
    kind = kinds[k % len(kinds)]
    depth = int(rng.integers(10, 31))
    gain = {
        "linear": rng.uniform(0.7, 1.3),
        "relu": rng.uniform(1.0, 2.0),
        "tanh": rng.uniform(0.3, 0.5),
        "residual": rng.uniform(0.2, 0.5),
    }[kind]
    return {"kind": kind, "depth": depth, "gain": float(round(gain, 3))}


@one_blas_thread
def measure_ratio(kind: str, depth: int, gain: float, seed: int = 0) -> float:
    """||dL/dh_0|| / ||dL/dh_depth|| of the network the exercise describes, measured."""
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(_BATCH, _WIDTH))
    weights, slopes = [], []
    for _ in range(depth):
        W = gain / np.sqrt(_WIDTH) * rng.normal(size=(_WIDTH, _WIDTH))
        z = h @ W
        if kind == "linear":
            d, h = np.ones_like(z), z
        elif kind == "relu":
            d, h = (z > 0).astype(float), np.maximum(z, 0.0)
        elif kind == "tanh":
            h = np.tanh(z)
            d = 1.0 - h * h
        else:  # residual: h + h W
            d, h = np.ones_like(z), h + z
        weights.append(W)
        slopes.append(d)
    g = rng.normal(size=(_BATCH, _WIDTH))
    top = np.linalg.norm(g)
    for W, d in zip(reversed(weights), reversed(slopes)):
        branch = (g * d) @ W.T
        g = g + branch if kind == "residual" else branch
    return float(np.linalg.norm(g) / top)


def _only_kind_wrong(c, got, kind):
    r = got.get("ratio")
    if r is None or np.shape(r) != np.shape(c.expected[0]):
        return False
    right = bool(np.allclose(r, c.expected[0], rtol=0.5, atol=1e-12))
    return right != (c.kind == kind)


def _per_kind(c, value, kinds):
    """The expected ratio, except ``value`` on cases of the named kinds."""
    return value if c.kind in kinds else c.expected[0]


register(
    ValueSpec(
        id="9.2",
        title="predict_ratio",
        inputs={"kind": (), "depth": (), "gain": ()},
        outputs=("ratio",),
        cases=5,
        draw=_draw_predict,
        reference=lambda c: measure_ratio(c.kind, c.depth, c.gain),
        rtol=0.5,
        atol=1e-12,
        bugs=[
            Bug(
                "ReLU's half ignored",
                "Your ReLU predictions are too large by about sqrt(2) per layer: a ReLU passes "
                "the gradient through only the units that are on, about half of them, so "
                "E[relu'(z)^2] = 1/2 and each layer multiplies by gain / sqrt(2).",
                variant=lambda c: _per_kind(c, c.gain**c.depth, {"relu"}),
                rtol=0.5,
            ),
            Bug(
                "skip path ignored",
                "Your residual predictions ignore the skip path: each block passes g + g J_f, "
                "not g J_f alone.",
                variant=lambda c: _per_kind(c, c.gain**c.depth, {"residual"}),
                rtol=0.5,
            ),
            Bug(
                "norms added",
                "Your residual predictions add the lengths of the two terms, (1 + gain) per "
                "block. The skip term g and the branch term g W^T are uncorrelated, so their "
                "squared norms add: sqrt(1 + gain**2) per block.",
                variant=lambda c: _per_kind(c, (1 + c.gain) ** c.depth, {"residual"}),
                rtol=0.5,
            ),
            Bug(
                "ReLU's factor inverted",
                "Your ReLU predictions grow by sqrt(2) per layer where the gradient loses a "
                "factor sqrt(2): only about half of the units are on, so the gradient's "
                "squared norm keeps about half of its size at every ReLU.",
                variant=lambda c: _per_kind(c, (c.gain * np.sqrt(2)) ** c.depth, {"relu"}),
                rtol=0.5,
            ),
            Bug(
                "residual: variance, not norm",
                "Your residual predictions are the squares of the measured ratios: (1 + "
                "gain**2) per block is what the squared norm gains; the norm gains its square "
                "root.",
                variant=lambda c: _per_kind(c, (1 + c.gain**2) ** c.depth, {"residual"}),
                rtol=0.5,
            ),
            Bug(
                "squared ratio",
                "Your predictions are the square of the measured ratios: you predicted the "
                "ratio of squared norms (the variance argument's quantity); take its square "
                "root.",
                variant=lambda c: c.expected[0] ** 2,
                rtol=0.5,
            ),
            *[
                Bug(
                    f"{kind} only",
                    f"Your predictions are within 50% for the other kinds of layer but not for "
                    f"the {kind} layers: redo the variance argument of Section 9.4 for one "
                    f"{kind} layer (what multiplies the gradient's squared norm?).",
                    predicate=lambda c, got, kind=kind: _only_kind_wrong(c, got, kind),
                )
                for kind in ("linear", "relu", "tanh", "residual")
            ],
        ],
        forbidden=ENGINE_GRADIENTS,
    )
)

# ---------------------------------------------------------------------- 9.3 dead units


def _draw_dead(rng, k):
    """Three hidden layers of width 8 on inputs in [-1, 1], with planted units:

    * dead by a large negative bias;
    * dead with a pre-activation of exactly 0 on every row (zero weights, zero bias);
    * dead in layer 2 or 3 only because every unit feeding it (with a positive weight) is
      dead in the layer before, its bias 0;
    * alive on some rows only (bias 0, weight 1 from an input that changes sign);
    * alive everywhere (bias +5, small weights).
    The expected masks are the planted ones; ``extra`` records which kind each unit is.
    """
    n_in, width, batch = 5, 8, 6
    X = rng.uniform(-1, 1, size=(batch, n_in))
    X[0, 0], X[1, 0] = 0.7, -0.7  # input 0 changes sign across the rows
    weights, biases, masks, kinds = [], [], [], []
    prev_dead = np.zeros(n_in, dtype=bool)
    prev_width = n_in
    for layer in range(3):
        W = 0.05 * rng.uniform(-1, 1, size=(prev_width, width))
        b = np.full(width, 5.0)
        kind = np.array(["alive"] * width, dtype=object)
        order = rng.permutation(width)
        kind[order[0]] = "bias"
        kind[order[1]] = "zero"
        kind[order[2]] = "some rows"
        if layer > 0:
            kind[order[3]] = "upstream"
        for j in range(width):
            if kind[j] == "bias":
                b[j] = -100.0
            elif kind[j] == "zero":
                W[:, j], b[j] = 0.0, 0.0
            elif kind[j] == "some rows":
                W[:, j], b[j] = 0.0, 0.0
                if layer == 0:
                    W[0, j] = 1.0
                else:  # fed by the previous layer's "some rows" unit, which varies
                    W[int(np.flatnonzero(kinds[-1] == "some rows")[0]), j] = 1.0
            elif kind[j] == "upstream":
                W[:, j] = 0.0
                W[prev_dead, j] = rng.uniform(0.5, 1.0, size=int(prev_dead.sum()))
                b[j] = 0.0
        dead = np.isin(kind, ["bias", "zero", "upstream"])
        weights.append(W)
        biases.append(b)
        masks.append(dead)
        kinds.append(kind)
        prev_dead, prev_width = dead, width
    return {"weights": weights, "biases": biases, "X": X, "masks": masks, "kinds": kinds}


def _preactivation_masks(c):
    """Masks of a detector that feeds each layer the previous layer's pre-activations."""
    out, z = [], c.X
    for W, b in zip(c.weights, c.biases):
        z = z @ W + b
        out.append(np.all(np.maximum(z, 0.0) == 0.0, axis=0).astype(float))
    return tuple(out)


def _mask_with(c, extra_kinds, drop_kinds=()):
    out = []
    for mask, kind in zip(c.masks, c.kinds):
        m = mask.copy()
        m |= np.isin(kind, list(extra_kinds))
        m &= ~np.isin(kind, list(drop_kinds))
        out.append(m.astype(float))
    return tuple(out)


register(
    ValueSpec(
        id="9.3",
        title="dead_units",
        inputs={"weights": (), "biases": (), "X": ()},
        outputs=("layer1", "layer2", "layer3"),
        cases=3,
        draw=_draw_dead,
        reference=lambda c: tuple(m.astype(float) for m in c.masks),
        rtol=0.0,
        atol=1e-12,
        bugs=[
            Bug(
                "strict inequality",
                "Units whose pre-activation is exactly 0 on every row are missing from your "
                "masks (for example units fed only by dead units, with bias 0): relu(0) = 0, "
                "so they output nothing and receive no gradient. Test the output == 0, or "
                "z <= 0.",
                variant=lambda c: _mask_with(c, (), ("zero", "upstream")),
            ),
            Bug(
                "any instead of all",
                "Your masks also flag units that are zero on some rows only. A unit is dead "
                "when it is zero on every row: use all over the batch axis, not any.",
                variant=lambda c: _mask_with(c, ("some rows",)),
            ),
            Bug(
                "next layer fed with pre-activations",
                "A layer of your detector reads the previous layer's pre-activations h W + b; "
                "it reads their ReLU, which is 0 wherever those are negative. A unit that "
                "listens only to dead units is dead too.",
                variant=lambda c: _preactivation_masks(c),
            ),
            Bug(
                "alive instead of dead",
                "Your True and False are swapped: mark the dead units with True.",
                variant=lambda c: tuple(1.0 - m for m in c.expected),
            ),
            Bug(
                "one entry per example",
                "Your mask has one entry per example; being dead is a property of a unit. "
                "Reduce over the examples (axis 0), leaving one entry per unit.",
                predicate=lambda c, got: all(
                    got.get(n) is not None and got[n].shape == (c.X.shape[0],)
                    for n in ("layer1", "layer2", "layer3")
                ),
            ),
        ],
        forbidden=ENGINE_GRADIENTS,
    )
)

# ------------------------------------------------------------------- 9.4 residual block


def _draw_residual(rng, k):
    B, n = [(4, 3), (2, 5), (6, 4)][k % 3]
    return {
        "x": rng.uniform(-1.5, 1.5, size=(B, n)),
        "W": rng.uniform(-1, 1, size=(n, n)),
        "b": rng.uniform(-0.5, 0.5, size=n),
    }


def _branch_dz(c):
    """The gradient at z = x W + b, by finite differences of tanh at z."""
    z = c.x @ c.W + c.b
    return numdiff.numerical_vjp(np.tanh, [z], c.upstream)[0]


register(
    BackwardSpec(
        id="9.4",
        title="residual_backward",
        forward=residual_block,
        inputs={"x": (4, 3), "W": (3, 3), "b": (3,)},
        outputs=("dx", "dW", "db"),
        backward_order=("db", "dW", "dx"),
        cases=3,
        draw=_draw_residual,
        bugs=[
            Bug(
                "skip path missing",
                "dx misses the skip path: the add gate copies the upstream gradient to x "
                "directly, so dx = g + (the branch's contribution), the g + g J_f of "
                "Section 9.3.",
                variant=lambda c: (c.expected[0] - c.upstream, None, None),
                outputs=("dx",),
            ),
            Bug(
                "branch missing",
                "dx is the upstream gradient alone: that is the skip path; the branch "
                "tanh(x W + b) also depends on x and adds its own term.",
                variant=lambda c: (c.upstream, None, None),
                outputs=("dx",),
            ),
            Bug(
                "W not transposed",
                "dx multiplies the branch's gradient by W; pulling a gradient back through "
                "x @ W multiplies by W.T (the adjoint).",
                variant=lambda c: (c.upstream + _branch_dz(c) @ c.W, None, None),
                outputs=("dx",),
            ),
        ],
        cost=Cost(multiple=12, inputs={"x": (512, 512), "W": (512, 512), "b": (512,)}),
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES,
    )
)
