"""Chapter 9 (vanishing gradients and initialisation): 9.1 the variance-preserving scale,
9.2 a predicted Jacobian-product norm, 9.3 the dead units that can never come back (chapter
5's exercise 5.6 detects the dead ones), 9.4 a residual block with a two-layer branch
(exercise 5.5 has a one-layer one).

9.1 is compared with second moments integrated numerically, 9.2 with a measurement of the
network it describes, 9.3 with masks known by construction (the cases plant dead units of
every kind), 9.4 with finite differences.
"""

from __future__ import annotations

import numpy as np

from backprop_lab.checks.drivers.vanishing import homogeneous, residual_mlp_block
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

# ---------------------------------------------------------------------- 9.3 stuck units
#: the planted kinds of unit that are dead now and can never come back (by construction)
_STUCK = ("dead bias", "zero", "dead bias, no way back", "upstream stuck")
_ALIVE = ("alive", "some rows")


def _draw_stuck(rng, k):
    """Three ReLU layers of width 10 on inputs in [-1, 1], with planted units:

    * layer 1: dead by a bias of -100, or by zero weights and bias (both stuck: the data
      never changes); alive on some rows only; alive everywhere (bias 5, small weights);
    * layers 2 and 3: dead by a bias of -100 with one positive weight from an alive unit
      (it can come back: that input can grow); dead by a bias of -100 with negative weights
      from every unit that can change (stuck); zero weights and bias (stuck); fed only by
      stuck units, bias 0 (stuck); dead by negative weights on alive units but with a
      bias of +1 (it can come back: those inputs can shrink); alive on some rows; alive;
    * layer 3 also: fed only by a unit of layer 2 that is dead now but can come back
      (it can come back too).
    The expected masks are the planted ones; ``extra`` records the kinds.
    """
    n_in, width, batch = 5, 10, 6
    X = rng.uniform(-1, 1, size=(batch, n_in))
    X[0, 0], X[1, 0] = 0.7, -0.7  # input 0 changes sign across the rows
    weights, biases, kinds = [], [], []
    prev_kind = None
    prev_width = n_in
    for layer in range(3):
        W = 0.05 * rng.uniform(-1, 1, size=(prev_width, width))
        b = np.full(width, 5.0)
        kind = np.array(["alive"] * width, dtype=object)
        if layer == 0:
            planted = ["dead bias", "zero", "some rows"]
        else:
            planted = ["dead bias, way back", "dead bias, no way back", "zero", "upstream stuck",
                       "positive bias", "some rows"]  # fmt: skip
            if layer == 2:
                planted.append("upstream revivable")
        for j, name in zip(rng.permutation(width), planted):
            kind[j] = name
        if prev_kind is not None:
            stuck_prev = np.isin(prev_kind, _STUCK)
            alive_prev = prev_kind == "alive"
            revivable_prev = np.flatnonzero(prev_kind == "dead bias, way back")
        for j in range(width):
            name = kind[j]
            if name == "dead bias":
                b[j] = -100.0
            elif name == "zero":
                W[:, j], b[j] = 0.0, 0.0
            elif name == "some rows":
                W[:, j], b[j] = 0.0, 0.0
                src = 0 if layer == 0 else int(np.flatnonzero(prev_kind == "some rows")[0])
                W[src, j] = 1.0
            elif name == "dead bias, way back":
                W[:, j] = -rng.uniform(0.1, 0.5, size=prev_width)
                W[int(rng.choice(np.flatnonzero(alive_prev))), j] = 1.0
                b[j] = -100.0
            elif name == "dead bias, no way back":
                W[:, j] = np.where(
                    stuck_prev,
                    rng.uniform(0.5, 1.0, prev_width),
                    -rng.uniform(0.1, 0.5, prev_width),
                )
                b[j] = -100.0
            elif name == "upstream stuck":
                W[:, j] = np.where(stuck_prev, rng.uniform(0.5, 1.0, prev_width), 0.0)
                b[j] = 0.0
            elif name == "positive bias":
                W[:, j] = np.where(alive_prev, -1.0, 0.0)
                b[j] = 1.0
            elif name == "upstream revivable":
                W[:, j] = 0.0
                W[int(revivable_prev[0]), j] = 1.0
                b[j] = 0.0
        weights.append(W)
        biases.append(b)
        kinds.append(kind)
        prev_kind, prev_width = kind, width
    return {"weights": weights, "biases": biases, "X": X, "kinds": kinds}


def dead_masks(c) -> list[np.ndarray]:
    """Units that output 0 on every row of X now (what chapter 5's detector finds)."""
    out, h = [], c.X
    for W, b in zip(c.weights, c.biases):
        h = np.maximum(h @ W + b, 0.0)
        out.append(np.all(h == 0.0, axis=0))
    return out


def _slipped(c, *, sign=True, bias="positive", movable="not stuck") -> tuple:
    """The masks of a stuck-unit rule with one slip, applied layer by layer so that a slip
    in one layer carries into the next as it would in an answer: ``sign=False`` counts any
    nonzero weight as a way back, ``bias`` is "positive" (a positive bias is a way back),
    "ignored" or "nonnegative", ``movable`` is which inputs can change: "not stuck",
    "alive" (alive now) or "all"."""
    out, prev = [], None
    for layer, (W, b, dead) in enumerate(zip(c.weights, c.biases, dead_masks(c))):
        if layer == 0:
            stuck = dead
        else:
            can_move = {"not stuck": ~prev[0], "alive": ~prev[1], "all": np.ones_like(prev[1])}[
                movable
            ]
            lifts = (W > 0) if sign else (W != 0)
            way_back = np.any(lifts & can_move[:, None], axis=0)
            if bias == "positive":
                way_back |= b > 0
            elif bias == "nonnegative":
                way_back |= b >= 0
            stuck = dead & ~way_back
        out.append(stuck.astype(float))
        prev = (stuck, dead)
    return tuple(out)


register(
    ValueSpec(
        id="9.3",
        title="stuck_units",
        inputs={"weights": (), "biases": (), "X": ()},
        outputs=("layer1", "layer2", "layer3"),
        cases=3,
        draw=_draw_stuck,
        reference=lambda c: tuple(np.isin(kind, _STUCK).astype(float) for kind in c.kinds),
        rtol=0.0,
        atol=1e-12,
        bugs=[
            Bug(
                "every dead unit",
                "You marked every unit that is dead now (chapter 5's detector). A dead "
                "unit's own weights and bias are frozen, but a deeper unit's inputs keep "
                "changing while the earlier layers train: some dead units can come back.",
                variant=lambda c: tuple(m.astype(float) for m in dead_masks(c)),
            ),
            Bug(
                "first layer only",
                "Only first-layer units are marked. A deeper unit is stuck too when nothing "
                "that can still change can lift its pre-activation above 0: its bias is at "
                "most 0, and every input that can change reaches it through a weight that is "
                "not positive.",
                variant=lambda c: (
                    dead_masks(c)[0].astype(float),
                    np.zeros(len(c.kinds[1])),
                    np.zeros(len(c.kinds[2])),
                ),
            ),
            Bug(
                "a positive bias ignored",
                "A dead unit with a positive bias can come back: it is held down by inputs "
                "that reach it through negative weights, and those inputs can shrink, which "
                "lets the pre-activation rise towards the bias.",
                variant=lambda c: _slipped(c, bias="ignored"),
            ),
            Bug(
                "a stuck input counted as a way back",
                "A positive weight from a unit that is stuck itself is no way back: that input "
                "stays 0 for good, whatever its weight.",
                variant=lambda c: _slipped(c, movable="all"),
            ),
            Bug(
                "only units alive now counted as inputs that can change",
                "A unit of the layer before that is dead now but can come back is a way back "
                "as well: once it revives, its positive weight lifts this unit. Decide layer "
                "by layer, from the previous layer's stuck units, not its dead ones.",
                variant=lambda c: _slipped(c, movable="alive"),
            ),
            Bug(
                "the sign of the weights ignored",
                "A negative weight from a unit that can change is no way back: the inputs are "
                "ReLU outputs, never negative, so through a negative weight they can only push "
                "the pre-activation down.",
                variant=lambda c: _slipped(c, sign=False),
            ),
            Bug(
                "a zero bias counted as a way back",
                "A bias of exactly 0 is no way back: with every input that can change held "
                "at 0, the pre-activation is 0, and relu(0) = 0. Only a positive bias lifts "
                "the unit on its own.",
                variant=lambda c: _slipped(c, bias="nonnegative"),
            ),
        ],
        forbidden=ENGINE_GRADIENTS,
    )
)

# ------------------------------------------------------------------- 9.4 residual block


def _away_from_kinks(rng, B, n, m):
    """x, W1, b1, W2 whose pre-activations x W1 + b1 stay at least 0.2 from 0 (so that finite
    differences and directional derivatives never straddle the ReLU's kink)."""
    x = rng.uniform(-1.0, 1.0, size=(B, n))
    W1 = rng.uniform(-1.0, 1.0, size=(n, m)) * 0.3 / n
    b1 = rng.choice([-1.0, 1.0], size=m) * rng.uniform(0.5, 1.0, size=m)
    W2 = rng.uniform(-1.0, 1.0, size=(m, n))
    return {"x": x, "W1": W1, "b1": b1, "W2": W2}


def _draw_residual(rng, k):
    B, n, m = [(4, 3, 5), (2, 5, 3), (6, 4, 7)][k % 3]
    while True:  # no pre-activation within 0.05 of the ReLU's kink
        x = rng.uniform(-1.5, 1.5, size=(B, n))
        W1 = rng.uniform(-1, 1, size=(n, m))
        b1 = rng.uniform(-0.5, 0.5, size=m)
        if np.abs(x @ W1 + b1).min() > 0.05:
            return {"x": x, "W1": W1, "b1": b1, "W2": rng.uniform(-1, 1, size=(m, n))}


def _mlp_pieces(c, mask=True, a_for_dW2=True):
    """The backward pass of the branch with the classic slips (trusted side only)."""
    z = c.x @ c.W1 + c.b1
    a = np.maximum(z, 0.0)
    da = c.upstream @ c.W2.T
    dz = da * (z > 0) if mask else da
    dW2 = (a if a_for_dW2 else z).T @ c.upstream
    return dz @ c.W1.T, c.x.T @ dz, dz.sum(axis=0), dW2


def _mlp_variant(**slips):
    def variant(c):
        dx_branch, dW1, db1, dW2 = _mlp_pieces(c, **slips)
        return c.upstream + dx_branch, dW1, db1, dW2

    return variant


register(
    BackwardSpec(
        id="9.4",
        title="residual_mlp_backward",
        forward=residual_mlp_block,
        inputs={"x": (4, 3), "W1": (3, 5), "b1": (5,), "W2": (5, 3)},
        outputs=("dx", "dW1", "db1", "dW2"),
        backward_order=("dW2", "db1", "dW1", "dx"),
        cases=3,
        draw=_draw_residual,
        bugs=[
            Bug(
                "skip path missing",
                "dx misses the skip path: the add gate copies the upstream gradient to x "
                "directly, so dx = g + (the branch's contribution), the g + g J_f of "
                "Section 9.3.",
                variant=lambda c: (c.expected[0] - c.upstream, None, None, None),
                outputs=("dx",),
            ),
            Bug(
                "branch missing",
                "dx is the upstream gradient alone: that is the skip path; the branch "
                "relu(x W1 + b1) W2 also depends on x and adds its own term.",
                variant=lambda c: (c.upstream, None, None, None),
                outputs=("dx",),
            ),
            Bug(
                "ReLU mask missing",
                "The gradient passes the ReLU as if it were the identity: multiply by "
                "(x W1 + b1 > 0), the ReLU's slope at each unit's own pre-activation, before "
                "it reaches W1, b1 and x.",
                variant=_mlp_variant(mask=False),
            ),
            Bug(
                "dW2 from the pre-activation",
                "dW2 uses the pre-activation x W1 + b1; W2 multiplies the ReLU's output "
                "relu(x W1 + b1), so dW2 = relu(x W1 + b1)^T g.",
                variant=lambda c: (None, None, None, _mlp_pieces(c, a_for_dW2=False)[3]),
                outputs=("dW2",),
            ),
        ],
        cost=Cost(
            multiple=12,
            inputs={"x": (512, 256), "W1": (256, 512), "b1": (512,), "W2": (512, 256)},
            draw=lambda rng: _away_from_kinks(rng, 512, 256, 512),
        ),
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES,
    )
)
