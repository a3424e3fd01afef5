"""Forward passes and drivers of chapter 9's exercises (vanishing gradients, initialisation)."""

from __future__ import annotations

import numpy as np

from backprop_lab.checks.drivers import driver, forward_pass
from backprop_lab.explore._blas import one_blas_thread


@forward_pass
@one_blas_thread
def residual_mlp_block(x, W1, b1, W2):
    """Exercise 9.4: ``x + relu(x @ W1 + b1) @ W2``, a residual block with an MLP branch."""
    return x + np.maximum(x @ W1 + b1, 0.0) @ W2


def homogeneous(slope_pos: float, slope_neg: float):
    """The positively homogeneous function ``slope_pos * z`` for z >= 0, ``slope_neg * z``
    for z < 0, as a NumPy function (ReLU is (1, 0), |z| is (1, -1))."""
    a, b = float(slope_pos), float(slope_neg)

    def phi(z):
        z = np.asarray(z, dtype=np.float64)
        return np.where(z >= 0, a * z, b * z)

    phi.__name__ = f"phi_{a:g}_{b:g}"
    return phi


#: how many points an answer to 9.1 may evaluate phi at: a derivation needs phi(1) and
#: phi(-1); estimating the moments by sampling or numerical integration needs thousands
PHI_POINTS = 64


class _CountedActivation:
    """phi, refusing to be evaluated at more than ``PHI_POINTS`` points in all."""

    def __init__(self, phi):
        self.phi = phi
        self.points = 0
        self.__name__ = phi.__name__

    def __call__(self, z):
        self.points += int(np.size(z))
        if self.points > PHI_POINTS:
            raise RuntimeError(
                f"preserving_std evaluated phi at more than {PHI_POINTS} points: that is "
                "estimating the second moments by sampling or numerical integration. Derive "
                "them instead: a positively homogeneous phi is fixed by phi(1) and phi(-1), "
                "and so are E[phi(z)^2] and E[phi'(z)^2] (Section 9.4 did it for ReLU)."
            )
        return self.phi(z)


@driver("homogeneous_activation")
def call_with_activation(answers, args):
    """Exercise 9.1: ``answer(phi, fan_in, fan_out)`` with phi built from its two slopes."""
    slope_pos, slope_neg, fan_in, fan_out = args
    phi = _CountedActivation(homogeneous(slope_pos, slope_neg))
    return answers[0](phi, int(fan_in), int(fan_out))
