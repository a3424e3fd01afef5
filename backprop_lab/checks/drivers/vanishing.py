"""Forward passes and drivers of chapter 9's exercises (vanishing gradients, initialisation)."""

from __future__ import annotations

import numpy as np

from backprop_lab.checks.drivers import driver, forward_pass
from backprop_lab.explore._blas import one_blas_thread


@forward_pass
@one_blas_thread
def residual_block(x, W, b):
    """Exercise 9.4: ``x + tanh(x @ W + b)``."""
    return x + np.tanh(x @ W + b)


def homogeneous(slope_pos: float, slope_neg: float):
    """The positively homogeneous function ``slope_pos * z`` for z >= 0, ``slope_neg * z``
    for z < 0, as a NumPy function (ReLU is (1, 0), |z| is (1, -1))."""
    a, b = float(slope_pos), float(slope_neg)

    def phi(z):
        z = np.asarray(z, dtype=np.float64)
        return np.where(z >= 0, a * z, b * z)

    phi.__name__ = f"phi_{a:g}_{b:g}"
    return phi


@driver("homogeneous_activation")
def call_with_activation(answers, args):
    """Exercise 9.1: ``answer(phi, fan_in, fan_out)`` with phi built from its two slopes."""
    slope_pos, slope_neg, fan_in, fan_out = args
    return answers[0](homogeneous(slope_pos, slope_neg), int(fan_in), int(fan_out))
