"""Forward passes of Chapter 12's exercises (backpropagation through time), NumPy in and out.

Time is the first axis: ``xs[t]`` is the input of step t + 1, shape (B, d).
"""

from __future__ import annotations

import numpy as np

from backprop_lab.checks.drivers import forward_pass


@forward_pass
def rnn_states(xs, h0, Wx, Wh, b):
    """Exercise 12.1: the states H_1..H_T, shape (T, B, n), of
    ``H_t = tanh(H_{t-1} Wh + x_t Wx + b)`` from ``H_0 = h0``."""
    h = h0
    out = []
    for x in xs:
        h = np.tanh(h @ Wh + x @ Wx + b)
        out.append(h)
    return np.stack(out)


@forward_pass
def cell_states(f, i, g, c0):
    """Exercise 12.3: the cell states c_1..c_T, shape (T, B, n), of
    ``c_t = f_t * c_{t-1} + i_t * g_t`` from ``c_0 = c0``."""
    c = c0
    out = []
    for ft, it, gt in zip(f, i, g):
        c = ft * c + it * gt
        out.append(c)
    return np.stack(out)
