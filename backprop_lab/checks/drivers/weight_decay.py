"""Forward pass of Exercise 4.3 (chapter 4: the two-layer network with weight decay), NumPy
in, NumPy out."""

from __future__ import annotations

import numpy as np

from backprop_lab.checks.drivers import forward_pass

#: The data and the decay strength of Exercise 4.3, exactly as the notebook draws them.
_data = np.random.default_rng(43)
X_WD = _data.normal(size=(6, 3))
Y_WD = _data.normal(size=(6, 2))
LAM = 0.1


@forward_pass
def penalized_loss(W1, b1, W2, b2):
    """``(1/B) sum_i ||yhat_i - y_i||^2 + (LAM / 2) (||W1||^2 + ||W2||^2)`` on ``X_WD, Y_WD``
    for the sigmoid network of chapter 4 (a 0-d array)."""
    H = 1.0 / (1.0 + np.exp(-(X_WD @ W1 + b1)))
    Yhat = H @ W2 + b2
    data = np.sum((Yhat - Y_WD) ** 2) / X_WD.shape[0]
    return data + 0.5 * LAM * (np.sum(W1 * W1) + np.sum(W2 * W2))
