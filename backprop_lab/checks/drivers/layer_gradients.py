"""Forward passes of chapter 8's exercises (layer gradients), NumPy in, NumPy out."""

from __future__ import annotations

import numpy as np

from backprop_lab.checks.drivers import forward_pass
from backprop_lab.explore._blas import one_blas_thread

#: the epsilon of the normalisation exercises (passed to the answers as ``eps``)
BATCHNORM_EPS = 1e-5
RMSNORM_EPS = 1e-6


@forward_pass
@one_blas_thread
def affine(X, W, b):
    """Exercise 8.1: ``X @ W + b`` for ``X`` with any number of leading axes."""
    return X @ W + b


@forward_pass
@one_blas_thread
def batchnorm(X, gamma, beta):
    """Exercise 8.3: training-mode batch normalisation of every column of ``X`` (B, d)."""
    mu = X.mean(axis=0)
    var = ((X - mu) ** 2).mean(axis=0)
    return gamma * (X - mu) / np.sqrt(var + BATCHNORM_EPS) + beta


@forward_pass
@one_blas_thread
def rmsnorm(X, gamma):
    """Exercise 8.4: ``gamma * x / sqrt(mean(x**2) + eps)`` for every row ``x`` of ``X``."""
    r = np.sqrt((X * X).mean(axis=-1, keepdims=True) + RMSNORM_EPS)
    return gamma * X / r
