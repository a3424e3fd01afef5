"""Forward passes of chapter 2's exercises (the chain rule), NumPy in, NumPy out."""

from __future__ import annotations

import numpy as np

from backprop_lab.checks.drivers import forward_pass


@forward_pass
def sin_cubed(w):
    """Exercise 2.1: ``sin(w**2)**3`` elementwise."""
    return np.sin(w**2) ** 3


@forward_pass
def two_paths(x):
    """Exercise 2.2: ``y = x**2``, then ``x * y + sin(y)`` elementwise."""
    y = x**2
    return x * y + np.sin(y)
