"""Forward passes of chapter 4's exercises (a two-layer network), NumPy in, NumPy out."""

from __future__ import annotations

import numpy as np

from backprop_lab.checks.drivers import forward_pass


@forward_pass
def squared_loss(Yhat, Y):
    """Exercise 4.1: ``L = (1/B) sum_i ||Yhat_i - Y_i||^2`` (a 0-d array)."""
    return np.sum((Yhat - Y) ** 2) / Yhat.shape[0]


def forward_with_cache(X, W1, b1, W2, b2):
    """The network of chapter 4: ``(Yhat, (X, W1, b1, W2, b2, Z, H))``."""
    Z = X @ W1 + b1
    H = 1.0 / (1.0 + np.exp(-Z))
    return H @ W2 + b2, (X, W1, b1, W2, b2, Z, H)


@forward_pass
def two_layer_output(X, W1, b1, W2, b2):
    """Exercise 4.2: the network's output ``Yhat``."""
    return forward_with_cache(X, W1, b1, W2, b2)[0]
