"""Forward passes of chapter 14's exercises (batches), NumPy in, NumPy out."""

from __future__ import annotations

from backprop_lab.checks.drivers import forward_pass


@forward_pass
def linear_over_sequences(W, b, X):
    """Exercise 14.1: ``X @ W + b`` for X of shape (B, T, d_in)."""
    return X @ W + b
