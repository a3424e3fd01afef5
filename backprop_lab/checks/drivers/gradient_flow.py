"""Forward pass of Exercise 5.5 (chapter 5: a residual block), NumPy in, NumPy out."""

from __future__ import annotations

import numpy as np

from backprop_lab.checks.drivers import forward_pass


@forward_pass
def residual_block(x, W):
    """``x + tanh(x @ W)``: a batch of rows ``x`` (B, n) and a square ``W`` (n, n)."""
    return x + np.tanh(x @ W)
