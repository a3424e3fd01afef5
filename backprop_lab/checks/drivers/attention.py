"""Forward passes of chapter 13's exercises (attention), NumPy in, NumPy out."""

from __future__ import annotations

import numpy as np

from backprop_lab.checks.drivers import forward_pass


def _weights(S):
    P = np.exp(S - np.max(S, axis=1, keepdims=True))
    return P / np.sum(P, axis=1, keepdims=True)


@forward_pass
def attention(Q, K, V):
    """Exercises 13.1 and 13.2: ``softmax(Q K^T / sqrt(d)) V``."""
    return _weights(Q @ K.T / np.sqrt(Q.shape[1])) @ V


@forward_pass
def causal_attention(Q, K, V):
    """Exercise 13.1 with ``causal=True``: scores above the diagonal are -inf."""
    S = Q @ K.T / np.sqrt(Q.shape[1])
    S = np.where(np.tril(np.ones(S.shape, dtype=bool)), S, -np.inf)
    return _weights(S) @ V


def temperature_attention(Q, K, V, tau):
    """Exercise 13.3: ``softmax(tau Q K^T) V``."""
    return _weights(tau * (Q @ K.T)) @ V
