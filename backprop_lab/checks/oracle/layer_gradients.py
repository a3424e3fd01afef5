"""Chapter 8 (layer gradients): 8.1 the affine layer over any batch shape, 8.2 stable softmax
cross-entropy, 8.3 batch normalisation, 8.4 RMS normalisation.

Expected values come from finite differences of the forward passes in
``drivers/layer_gradients.py`` (8.1, 8.3, 8.4) and from the engine's fused
``cross_entropy`` op (8.2). Wrong answers are recognised by finite differences of forward
passes with one path cut (a statistic frozen at its value), or by rescaling the expected
values: nothing here spells out a backward rule.
"""

from __future__ import annotations

import numpy as np

import backprop_lab as bl
from backprop_lab import numdiff
from backprop_lab.checks.drivers.layer_gradients import (
    BATCHNORM_EPS,
    RMSNORM_EPS,
    affine,
    batchnorm,
    rmsnorm,
)
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import (
    ENGINE_GRADIENTS,
    FINITE_DIFFERENCES,
    BackwardSpec,
    Bug,
    Cost,
    ValueSpec,
)

# ------------------------------------------------------------------------------ 8.1 affine

_AFFINE_SHAPES = [(5, 3), (2, 4, 3), (3, 2, 2, 3)]  # leading axes: none, one, two extra


def _draw_affine(rng, k):
    shape = _AFFINE_SHAPES[k % len(_AFFINE_SHAPES)]
    n, m = shape[-1], 4
    return {
        "X": rng.uniform(-2, 2, size=shape),
        "W": rng.uniform(-2, 2, size=(n, m)),
        "b": rng.uniform(-2, 2, size=(m,)),
    }


def _rows(c):
    return int(np.prod(c.X.shape[:-1]))


register(
    BackwardSpec(
        id="8.1",
        title="affine_backward",
        forward=affine,
        inputs={"X": (5, 3), "W": (3, 4), "b": (4,)},
        outputs=("dX", "dW", "db"),
        cases=3,
        draw=_draw_affine,
        arg_labels=["dY", "X", "W", "b"],
        bugs=[
            Bug(
                "mean over the rows",
                "It is the right gradient divided by the number of rows: the forward pass "
                "sums every row's contribution (each weight is used once per row), so the "
                "backward pass sums too; a mean belongs in the loss, not in this layer.",
                variant=lambda c: (None, c.expected[1] / _rows(c), c.expected[2] / _rows(c)),
            ),
        ],
        cost=Cost(multiple=12, inputs={"X": (16, 32, 256), "W": (256, 256), "b": (256,)}),
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES,
    )
)

# ------------------------------------------------------------------ 8.2 softmax cross-entropy


def _draw_ce(rng, k):
    """Case 0 ordinary logits; 1 large logits, label the largest (overflow without a shift);
    2 a label far below the row's maximum (log of an underflowed probability); 3 rows of
    very different size in one batch (a shift by the batch's maximum underflows a row)."""
    if k == 0:
        z = rng.uniform(-2, 2, size=(4, 5))
        y = rng.integers(0, 5, size=4)
    elif k == 1:
        z = rng.uniform(500, 1000, size=(3, 4))
        y = np.argmax(z, axis=1)
    elif k == 2:
        z = rng.uniform(-1, 1, size=(3, 4))
        y = rng.integers(0, 4, size=3)
        z[np.arange(3), y] = -rng.uniform(750, 900, size=3)
    else:
        z = rng.uniform(-1, 1, size=(3, 4))
        z[0] += 900.0
        z[2] -= 900.0
        y = np.argmax(z, axis=1)
    return {"logits": z, "labels": y.astype(np.int64)}


def _ce_reference(c):
    value, grad = bl.value_and_grad(lambda z: bl.cross_entropy(z, c.labels))(c.logits)
    return float(value), np.asarray(grad)


def _finite(got, name):
    a = got.get(name)
    return a is not None and bool(np.all(np.isfinite(a)))


def _matches(c, got):
    return all(
        got.get(n) is not None
        and got[n].shape == np.shape(e)
        and np.allclose(got[n], e, rtol=1e-6, atol=1e-9 * max(1.0, float(np.max(np.abs(e)))))
        for n, e in zip(("loss", "dlogits"), c.expected)
    )


def _fails_only_on(kinds):
    """Predicate: the answer is right on every case except those drawn as ``kinds``, where
    the loss or the gradient is infinite or NaN."""

    def holds(c, got):
        if c.index in kinds:
            return not (_finite(got, "loss") and _finite(got, "dlogits"))
        return _matches(c, got)

    return holds


def _wrong_only_on(kinds):
    """Predicate: right on every case except those drawn as ``kinds``, wrong there (finite
    or not)."""

    def holds(c, got):
        return (not _matches(c, got)) if c.index in kinds else _matches(c, got)

    return holds


def _both_times_batch(c, got):
    B = c.logits.shape[0]
    loss, grad = got.get("loss"), got.get("dlogits")
    return (
        loss is not None
        and grad is not None
        and grad.shape == c.expected[1].shape
        and np.allclose(loss, c.expected[0] * B, rtol=1e-6)
        and np.allclose(grad, c.expected[1] * B, rtol=1e-6, atol=1e-9 * B)
    )


def _onehot_over_batch(c):
    B, C = c.logits.shape
    y = np.zeros((B, C))
    y[np.arange(B), c.labels] = 1.0
    return y / B


register(
    ValueSpec(
        id="8.2",
        title="softmax_cross_entropy",
        inputs={"logits": (4, 5), "labels": (4,)},
        outputs=("loss", "dlogits"),
        cases=4,
        draw=_draw_ce,
        reference=_ce_reference,
        rtol=1e-6,
        atol=1e-9,
        bugs=[
            Bug(
                "no shift",
                "Right on ordinary logits, but infinite or NaN on logits in the hundreds: "
                "exp overflows (or underflows to 0 for a whole row). Subtract each row's "
                "maximum before exponentiating (softmax does not change), and compute log p "
                "as z - logsumexp(z), never as log(p).",
                predicate=_fails_only_on({1, 2, 3}),
            ),
            Bug(
                "log of the probability",
                "Right unless the label's probability underflows to 0 (a logit far below the "
                "row's maximum): then log(p) is -inf, or, if you clip p to a tiny number, a "
                "loss that is finite but wrong. Compute log p_label = z_label - "
                "logsumexp(z) directly, without forming p first.",
                predicate=_wrong_only_on({2}),
            ),
            Bug(
                "one shift for the whole batch",
                "Right unless the rows of a batch differ a lot in size: shifting by the "
                "maximum of the whole batch leaves a row far below it with exp(...) = 0 "
                "everywhere. Subtract each row's own maximum (axis=1, keepdims=True).",
                predicate=_fails_only_on({3}),
            ),
            Bug(
                "sum instead of mean",
                "Both the loss and its gradient are the batch size times too large: the loss "
                "is the mean over the batch, so the gradient carries a factor 1/B.",
                predicate=_both_times_batch,
            ),
            Bug(
                "gradient not divided by B",
                "Your loss is right, but its gradient is the batch size times too large: the "
                "loss is the mean over the batch, so each row's p - y carries the factor 1/B "
                "too.",
                variant=lambda c: (None, c.expected[1] * c.logits.shape[0]),
                outputs=("dlogits",),
            ),
            Bug(
                "one-hot not subtracted",
                "The gradient is softmax(z) / B: the target is missing. The gradient of "
                "the cross-entropy with respect to the logits is (p - y) / B.",
                variant=lambda c: (None, c.expected[1] + _onehot_over_batch(c)),
                outputs=("dlogits",),
            ),
        ],
        forbidden=ENGINE_GRADIENTS
        + FINITE_DIFFERENCES
        + (
            # the ops' own forward rules: the public bl.cross_entropy shares its code with
            # reshape, stack, where, ... (one generated wrapper), so it is named by its rule
            "backprop_lab.ops.cross_entropy.forward",
            "backprop_lab.ops.log_softmax.forward",
            "backprop_lab.ops.softmax.forward",
            "backprop_lab.functional.log_softmax",
            "backprop_lab.functional.softmax",
            "backprop_lab.explore.layer_gradients.softmax_cross_entropy",
        ),
    )
)

# --------------------------------------------------------------------------- 8.3 batch norm


def _draw_bn(rng, k):
    B, d = [(6, 4), (2, 3), (9, 5)][k % 3]
    loc, scale = rng.uniform(-3, 3, size=d), rng.uniform(0.5, 3, size=d)
    return {
        "X": loc + scale * rng.normal(size=(B, d)),
        "gamma": rng.uniform(0.5, 2.0, size=d) * rng.choice([-1.0, 1.0], size=d),
        "beta": rng.uniform(-1, 1, size=d),
    }


def _bn_cut(c, freeze_mean, freeze_var):
    """dX by finite differences of batch norm with the named statistics held at their
    values: the gradient along the paths that remain."""
    mu0, var0 = c.X.mean(axis=0), c.X.var(axis=0)

    def forward(X):
        mu = mu0 if freeze_mean else X.mean(axis=0)
        var = var0 if freeze_var else ((X - mu) ** 2).mean(axis=0)
        return c.gamma * (X - mu) / np.sqrt(var + BATCHNORM_EPS) + c.beta

    return numdiff.numerical_vjp(forward, [c.X], c.upstream)[0]


def _bn_no_eps(c):
    def forward(X, gamma, beta):
        mu = X.mean(axis=0)
        return gamma * (X - mu) / np.sqrt(((X - mu) ** 2).mean(axis=0)) + beta

    return tuple(numdiff.numerical_vjp(forward, [c.X, c.gamma, c.beta], c.upstream))


def _bn_variance_sign(c):
    first_two = _bn_cut(c, False, True)
    return first_two - (c.expected[0] - first_two), None, None


def _bn_unbiased(c):
    def forward(X, gamma, beta):
        mu = X.mean(axis=0)
        var = X.var(axis=0, ddof=1)
        return gamma * (X - mu) / np.sqrt(var + BATCHNORM_EPS) + beta

    return tuple(numdiff.numerical_vjp(forward, [c.X, c.gamma, c.beta], c.upstream))


register(
    BackwardSpec(
        id="8.3",
        title="batchnorm_backward",
        forward=batchnorm,
        inputs={"X": (6, 4), "gamma": (4,), "beta": (4,)},
        outputs=("dX", "dgamma", "dbeta"),
        backward_order=("dbeta", "dgamma", "dX"),
        cases=3,
        draw=_draw_bn,
        arguments=lambda c: (c.upstream, c.X, c.gamma, BATCHNORM_EPS),
        arg_labels=["dY", "X", "gamma", "eps"],
        bugs=[
            Bug(
                "direct path only",
                "dX is the direct path alone, gamma * dY / sqrt(var + eps): the paths through "
                "the batch mean and the batch variance are missing (with them, every column "
                "of dX sums to zero).",
                variant=lambda c: (_bn_cut(c, True, True), None, None),
                outputs=("dX",),
            ),
            Bug(
                "mean path missing",
                "dX has the direct path and the path through the variance, but not the one "
                "through the batch mean: its columns do not sum to zero. Path 2 subtracts the "
                "batch mean of the direct contributions from every row.",
                variant=lambda c: (_bn_cut(c, True, False), None, None),
                outputs=("dX",),
            ),
            Bug(
                "variance path missing",
                "dX has the direct path and the path through the mean (its columns sum to "
                "zero), but the path through the variance is missing: a term proportional "
                "to x-hat, with one coefficient per column.",
                variant=lambda c: (_bn_cut(c, False, True), None, None),
                outputs=("dX",),
            ),
            Bug(
                "unbiased variance",
                "Your rule uses the unbiased variance (dividing by B - 1); batch "
                "normalisation uses the biased one, the mean of the squared deviations "
                "(divide by B), in the forward pass and therefore in its derivative.",
                variant=_bn_unbiased,
            ),
            Bug(
                "variance path with the wrong sign",
                "The path through the variance has the wrong sign: a larger spread of a column "
                "makes every |x-hat| in it smaller, so that path subtracts "
                "x-hat * mean(g * x-hat) / s.",
                variant=_bn_variance_sign,
                outputs=("dX",),
            ),
            Bug(
                "eps left out",
                "Close, but your rule leaves out eps: the forward pass divides by "
                "s = sqrt(var + eps), so x-hat and every path of the derivative use that s, "
                "not sqrt(var).",
                variant=_bn_no_eps,
                rtol=1e-7,
            ),
            Bug(
                "dbeta or dgamma averaged",
                "dbeta and dgamma are sums over the batch, not means: beta and gamma are used "
                "once in every row, and each use adds its share.",
                variant=lambda c: (
                    None,
                    c.expected[1] / c.X.shape[0],
                    c.expected[2] / c.X.shape[0],
                ),
                outputs=("dgamma", "dbeta"),
            ),
            Bug(
                "gamma forgotten",
                "dX is the right gradient divided by gamma: the gradient arriving at x-hat "
                "is gamma * dY, not dY.",
                variant=lambda c: (c.expected[0] / c.gamma, None, None),
                outputs=("dX",),
            ),
            Bug(
                "dgamma from x",
                "dgamma multiplies dY by the input x; gamma multiplies the normalised x-hat, "
                "so dgamma = sum over the batch of dY * x-hat.",
                variant=lambda c: (None, np.sum(c.upstream * c.X, axis=0), None),
                outputs=("dgamma",),
            ),
        ],
        cost=Cost(multiple=15, inputs={"X": (2048, 256), "gamma": (256,), "beta": (256,)}),
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES,
    )
)

# ---------------------------------------------------------------------------- 8.4 RMS norm


def _draw_rms(rng, k):
    B, d = [(4, 5), (3, 8), (5, 3)][k % 3]
    return {
        "X": rng.normal(size=(B, d)) * rng.uniform(0.5, 2.0, size=(B, 1)),
        "gamma": rng.uniform(0.5, 2.0, size=d) * rng.choice([-1.0, 1.0], size=d),
    }


def _rms_direct(c):
    """dX by finite differences with the root mean square held at its value."""
    r0 = np.sqrt((c.X * c.X).mean(axis=-1, keepdims=True) + RMSNORM_EPS)
    return numdiff.numerical_vjp(lambda X: c.gamma * X / r0, [c.X], c.upstream)[0]


def _rms_path_times(c, factor):
    direct = _rms_direct(c)
    return direct + factor * (c.expected[0] - direct)


def _rms_no_eps(c):
    r0 = np.sqrt((c.X * c.X).mean(axis=-1, keepdims=True))
    return (
        tuple(
            numdiff.numerical_vjp(
                lambda X, gamma: gamma * X / np.sqrt((X * X).mean(axis=-1, keepdims=True)),
                [c.X, c.gamma],
                c.upstream,
            )
        )
        if np.all(r0 > 0)
        else (None, None)
    )


def _rows_centred(c, got):
    """dX sums to zero over every row, where the right one does not: layer norm's rule."""
    dX = got.get("dX")
    return (
        dX is not None
        and dX.shape == c.X.shape
        and bool(np.all(np.abs(dX.sum(axis=-1)) < 1e-8 * max(1.0, float(np.abs(dX).max()))))
        and bool(np.any(np.abs(c.expected[0].sum(axis=-1)) > 1e-6))
    )


register(
    BackwardSpec(
        id="8.4",
        title="rmsnorm_backward",
        forward=rmsnorm,
        inputs={"X": (4, 5), "gamma": (5,)},
        outputs=("dX", "dgamma"),
        backward_order=("dgamma", "dX"),
        cases=3,
        draw=_draw_rms,
        arguments=lambda c: (c.upstream, c.X, c.gamma, RMSNORM_EPS),
        arg_labels=["dY", "X", "gamma", "eps"],
        bugs=[
            Bug(
                "path through r missing",
                "dX is the direct path alone, gamma * dY / r: every x_j also changes r, which "
                "divides every output of its row. Add the path through r.",
                variant=lambda c: (_rms_direct(c), None),
                outputs=("dX",),
            ),
            Bug(
                "sum instead of mean in r",
                "The path through r is d times too large (d = the number of features): "
                "r is the square root of the *mean* of x**2, so dr/dx_j = x_j / (d r).",
                variant=lambda c: (_rms_path_times(c, c.X.shape[-1]), None),
                outputs=("dX",),
            ),
            Bug(
                "path through r with the wrong sign",
                "The path through r has the wrong sign: a larger |x_j| makes r larger, which "
                "makes every output of the row smaller.",
                variant=lambda c: (_rms_path_times(c, -1.0), None),
                outputs=("dX",),
            ),
            Bug(
                "a mean subtracted",
                "Every row of your dX sums to zero, as layer normalisation's does. RMS "
                "normalisation subtracts no mean, so there is no path through a mean: x_j "
                "reaches the outputs directly and through r only, and the row sums of dX are "
                "not zero in general (what holds instead is that dX is orthogonal to x in "
                "every row when eps = 0).",
                predicate=_rows_centred,
                outputs=("dX",),
            ),
            Bug(
                "eps left out",
                "Close, but your rule leaves out eps: r = sqrt(mean(x**2) + eps) in the forward "
                "pass, so the same r appears in every term of the derivative.",
                variant=_rms_no_eps,
                rtol=1e-7,
            ),
            Bug(
                "dgamma averaged",
                "dgamma is a sum over the batch, not a mean: gamma is used once in every row, "
                "and each use adds its share.",
                variant=lambda c: (None, c.expected[1] / c.X.shape[0]),
                outputs=("dgamma",),
            ),
            Bug(
                "dgamma without r",
                "dgamma is sum(dY * x) over the rows: gamma multiplies x / r, so each row's "
                "term carries its 1 / r.",
                variant=lambda c: (None, np.sum(c.upstream * c.X, axis=0)),
                outputs=("dgamma",),
            ),
        ],
        cost=Cost(multiple=30, inputs={"X": (2048, 256), "gamma": (256,)}),
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES,
    )
)
