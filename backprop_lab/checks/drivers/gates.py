"""Forward passes of chapter 5's exercises (gates), NumPy in, NumPy out."""

from __future__ import annotations

import numpy as np

from backprop_lab.checks.drivers import forward_pass


@forward_pass
def add(x, y):
    """Exercise 5.1: ``x + y``, ``y`` broadcast over the rows of ``x``."""
    return x + y


@forward_pass
def multiply(x, y):
    """Exercise 5.2: the elementwise product."""
    return x * y


@forward_pass
def maximum(x, y):
    """Exercise 5.3: the elementwise maximum."""
    return np.maximum(x, y)


@forward_pass
def sigmoid(x):
    """Exercise 5.4: ``1 / (1 + exp(-x))`` elementwise."""
    return 1.0 / (1.0 + np.exp(-x))
