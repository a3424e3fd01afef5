"""Recurrent networks and backpropagation through time (Chapter 12).

Everything here runs forward in the engine and lets ``backward()`` do the gradients: the
chapter's by-hand BPTT is the reader's exercise, so no NumPy backward pass lives here.

* :class:`RNN`, :class:`LSTM`: a tanh RNN ``h_t = tanh(h_{t-1} W_h + x_t W_x + b)`` whose
  recurrent matrix is ``radius`` times a random orthogonal matrix (every singular value and
  the spectral radius equal ``radius``), and an LSTM with the forget gate's bias set apart.
  ``states(X)`` returns the hidden states h_1..h_T for a batch X of shape (B, T, inputs).
* :func:`copy_gradients`: the unrolled RNN with one copy of W_h per step; the gradient of
  each copy is that step's term of the shared weight's gradient.
* :func:`state_gradient_norms`: ``||dL/dh_t||`` (and ``||dL/dc_t||`` for the LSTM) for a loss
  at the last step, from hooks on the states.
* :func:`truncated_gradient`: the W_h gradient of truncated BPTT, with the state cut off
  from the graph every ``k`` steps.
* :func:`scalar_rnn`, :func:`clip_by_global_norm`: the one-unit RNN whose loss has a cliff,
  and gradient clipping.
* :func:`train`, :func:`mse`: a small Adam loop for the adding problem.
* :func:`gradient_flow_figure`: the explorer's view.

matplotlib is imported only inside the functions that draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

import backprop_lab as bl
from backprop_lab.nn import Module
from backprop_lab.tensor import Tensor

__all__ = [
    "orthogonal",
    "RNN",
    "LSTM",
    "step_inputs",
    "copy_gradients",
    "loss_term_contributions",
    "window_gradient",
    "numpy_states",
    "state_gradient_norms",
    "truncated_gradient",
    "scalar_rnn",
    "clip_by_global_norm",
    "train",
    "mse",
    "gradient_flow_figure",
]


def orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random n x n orthogonal matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return q * np.sign(np.diag(r))


def _xavier(n_in: int, n_out: int, rng: np.random.Generator) -> np.ndarray:
    a = math.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-a, a, size=(n_in, n_out))


def step_inputs(X: Any) -> list[Tensor]:
    """The inputs of each time step, x_t = X[:, t], as constant tensors."""
    X = np.asarray(X.data if isinstance(X, Tensor) else X, dtype=float)
    if X.ndim != 3:
        raise ValueError(f"expected a batch of sequences of shape (B, T, inputs), got {X.shape}")
    return [bl.tensor(np.ascontiguousarray(X[:, t])) for t in range(X.shape[1])]


class RNN(Module):
    """``h_t = tanh(h_{t-1} W_h + x_t W_x + b)``, h_0 = 0, read out as ``h_T W_o + b_o``.

    ``W_h = radius * Q`` with Q random orthogonal, so all of W_h's singular values equal
    ``radius``. ``activation="linear"`` drops the tanh (a linear RNN, handy for checking
    the singular-value picture exactly).
    """

    def __init__(
        self,
        n_in: int,
        n_hidden: int,
        n_out: int = 1,
        radius: float = 1.0,
        activation: str = "tanh",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if activation not in ("tanh", "linear"):
            raise ValueError(f"activation must be 'tanh' or 'linear', got {activation!r}")
        rng = np.random.default_rng(seed)
        self.n_hidden = n_hidden
        self.activation = activation
        self.Wx = bl.tensor(_xavier(n_in, n_hidden, rng), requires_grad=True)
        self.Wh = bl.tensor(radius * orthogonal(n_hidden, rng), requires_grad=True)
        self.b = bl.tensor(np.zeros(n_hidden), requires_grad=True)
        self.Wo = bl.tensor(_xavier(n_hidden, n_out, rng), requires_grad=True)
        self.bo = bl.tensor(np.zeros(n_out), requires_grad=True)

    def cell(self, h: Tensor, x: Tensor, Wh: Tensor | None = None) -> Tensor:
        """One step; ``Wh`` overrides the shared recurrent matrix (for untied copies)."""
        a = h @ (self.Wh if Wh is None else Wh) + x @ self.Wx + self.b
        return bl.tanh(a) if self.activation == "tanh" else a

    def states(self, X: Any, Wh_per_step: Sequence[Tensor] | None = None) -> list[Tensor]:
        """h_1..h_T for the batch X (B, T, n_in)."""
        xs = step_inputs(X)
        h = bl.tensor(np.zeros((xs[0].shape[0], self.n_hidden)))
        hs = []
        for t, x in enumerate(xs):
            h = self.cell(h, x, None if Wh_per_step is None else Wh_per_step[t])
            hs.append(h)
        return hs

    def forward(self, X: Any) -> Tensor:
        return self.states(X)[-1] @ self.Wo + self.bo

    def __repr__(self) -> str:
        return f"RNN(hidden={self.n_hidden}, {self.activation})"


class LSTM(Module):
    """A standard LSTM: gates i, f, o = sigmoid(.), candidate g = tanh(.), from
    ``h_{t-1} W_h + x_t W_x + b`` split four ways; ``c_t = f * c_{t-1} + i * g`` and
    ``h_t = o * tanh(c_t)``. Weights are N(0, 1/fan_in); the forget gate's bias starts at
    ``forget_bias`` (the other biases at 0)."""

    def __init__(
        self,
        n_in: int,
        n_hidden: int,
        n_out: int = 1,
        forget_bias: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        H = self.n_hidden = n_hidden
        self.Wx = bl.tensor(rng.normal(size=(n_in, 4 * H)) / math.sqrt(n_in), requires_grad=True)
        self.Wh = bl.tensor(rng.normal(size=(H, 4 * H)) / math.sqrt(H), requires_grad=True)
        b = np.zeros(4 * H)
        b[H : 2 * H] = forget_bias
        self.b = bl.tensor(b, requires_grad=True)
        self.Wo = bl.tensor(_xavier(H, n_out, rng), requires_grad=True)
        self.bo = bl.tensor(np.zeros(n_out), requires_grad=True)

    def states(self, X: Any, cells: list[Tensor] | None = None) -> list[Tensor]:
        """h_1..h_T; pass a list as ``cells`` to receive c_1..c_T too."""
        xs = step_inputs(X)
        H = self.n_hidden
        h = bl.tensor(np.zeros((xs[0].shape[0], H)))
        c = bl.tensor(np.zeros((xs[0].shape[0], H)))
        hs = []
        for x in xs:
            a = h @ self.Wh + x @ self.Wx + self.b
            i = bl.sigmoid(a[:, :H])
            f = bl.sigmoid(a[:, H : 2 * H])
            g = bl.tanh(a[:, 2 * H : 3 * H])
            o = bl.sigmoid(a[:, 3 * H :])
            c = f * c + i * g  # the additive cell path
            h = o * bl.tanh(c)
            hs.append(h)
            if cells is not None:
                cells.append(c)
        return hs

    def forward(self, X: Any) -> Tensor:
        return self.states(X)[-1] @ self.Wo + self.bo

    def __repr__(self) -> str:
        return f"LSTM(hidden={self.n_hidden})"


# --------------------------------------------------------------------------------------
# Gradients through time, measured with the engine
# --------------------------------------------------------------------------------------
def copy_gradients(rnn: RNN, X: Any, upstreams: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Unroll with one fresh copy of W_h per step and backpropagate
    ``L = sum_t sum(h_t * upstreams[t])``; returns the gradient of each copy.

    Their sum is the gradient of the shared W_h. ``upstreams[t] = 0`` for every t except one
    isolates the terms that a single loss L_t contributes.
    """
    T = np.asarray(X).shape[1]
    copies = [bl.tensor(rnn.Wh.data, requires_grad=True) for _ in range(T)]
    hs = rnn.states(X, copies)
    loss = bl.sum(hs[0] * upstreams[0])
    for h, u in zip(hs[1:], upstreams[1:]):
        loss = loss + bl.sum(h * u)
    loss.backward()
    return [np.zeros(c.shape) if c.grad is None else np.array(c.grad) for c in copies]


def loss_term_contributions(rnn: RNN, X: Any, upstreams: Sequence[np.ndarray]) -> np.ndarray:
    """``table[t, s]``: the gradient that the loss term ``L_t = sum(h_t * upstreams[t])``
    sends to the copy of W_h used at step ``s`` (zero for s > t), shape (T, T, H, H).

    One backward pass per loss term. The sum over the whole table is the gradient of the
    shared W_h; the diagonal alone is what a gradient keeps that ignores every path through
    later hidden states.
    """
    T = len(upstreams)
    table = np.zeros((T, T, *rnn.Wh.shape))
    zero = np.zeros_like(np.asarray(upstreams[0]))
    for t in range(T):
        only_t = [upstreams[t] if s == t else zero for s in range(T)]
        for s, g in enumerate(copy_gradients(rnn, X, only_t)):
            table[t, s] = g
    return table


def window_gradient(table: np.ndarray, k: int) -> np.ndarray:
    """The W_h gradient when every loss term sends gradient back at most ``k - 1`` steps
    before its own (the terms ``t - k < s <= t`` of :func:`loss_term_contributions`)."""
    T = table.shape[0]
    t, s = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
    keep = (s <= t) & (s > t - k)
    return np.einsum("ts,tsij->ij", keep.astype(float), table)


def numpy_states(xs: np.ndarray, h0: np.ndarray, Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray):
    """The forward pass in NumPy: ``xs`` (T, B, d), ``h0`` (B, H) -> states (T + 1, B, H),
    h_0 first: ``h_t = tanh(h_{t-1} Wh + x_t Wx + b)``."""
    hs = [h0]
    for x in xs:
        hs.append(np.tanh(hs[-1] @ Wh + x @ Wx + b))
    return np.stack(hs)


def state_gradient_norms(
    model: RNN | LSTM, X: Any, upstream: np.ndarray | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """``||dL/dh_t||`` for t = 1..T (and ``||dL/dc_t||`` for an LSTM), where the loss sits
    at the last step only: ``L = sum(h_T * upstream)`` (a fixed random upstream by default,
    so ``dL/dh_T = upstream``)."""
    cells: list[Tensor] | None = [] if isinstance(model, LSTM) else None
    hs = model.states(X, cells) if cells is not None else model.states(X)
    if upstream is None:
        upstream = np.random.default_rng(seed).normal(size=hs[-1].shape)
    store: dict[str, list[Any]] = {"h": [None] * len(hs)}
    watched = {"h": hs}
    if cells is not None:
        store["c"] = [None] * len(cells)
        watched["c"] = cells
    for key, tensors in watched.items():
        for t, v in enumerate(tensors):

            def keep(g: Any, key: str = key, t: int = t) -> None:
                store[key][t] = g

            v.register_hook(keep)
    bl.sum(hs[-1] * upstream).backward()
    return {
        k: np.array([0.0 if g is None else float(np.linalg.norm(np.asarray(g))) for g in v])
        for k, v in store.items()
    }


def truncated_gradient(rnn: RNN, X: Any, upstreams: Sequence[np.ndarray], k: int) -> np.ndarray:
    """The W_h gradient of truncated BPTT for ``L = sum_t sum(h_t * upstreams[t])``: the
    state is cut off from the graph (detached) every ``k`` steps, so each loss term sends
    gradient back only to the start of its chunk. ``k >= T`` gives full BPTT."""
    xs = step_inputs(X)
    h = bl.tensor(np.zeros((xs[0].shape[0], rnn.n_hidden)))
    rnn.Wh.grad = None
    loss = None
    for t, x in enumerate(xs):
        if t > 0 and t % k == 0:
            h = h.detach()
        h = rnn.cell(h, x)
        term = bl.sum(h * upstreams[t])
        loss = term if loss is None else loss + term
    loss.backward()
    g = np.array(rnn.Wh.grad)
    bl.zero_grad(rnn)
    return g


def scalar_rnn(w: float, T: int = 30, h0: float = 0.5, b: float = 0.0, target: float = 0.0):
    """The one-unit RNN ``h_t = tanh(w h_{t-1} + b)``; returns ``(loss, dloss/dw, h_T)``
    for ``loss = (h_T - target)^2``."""
    wt = bl.tensor(float(w), requires_grad=True)
    h = bl.tensor(float(h0))
    for _ in range(T):
        h = bl.tanh(wt * h + b)
    loss = (h - target) ** 2
    loss.backward()
    return float(loss.item()), float(wt.grad), float(h.item())


def clip_by_global_norm(grads: Sequence[np.ndarray], max_norm: float) -> tuple[list, float]:
    """Scale all gradients by one factor so that their joint norm is at most ``max_norm``
    (the direction is kept). Returns the clipped list and the norm before clipping."""
    norm = math.sqrt(sum(float(np.sum(np.asarray(g) ** 2)) for g in grads))
    scale = min(1.0, max_norm / norm) if norm > 0 else 1.0
    return [np.asarray(g) * scale for g in grads], norm


def mse(model: RNN | LSTM, X: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error of the model's last-step output on (X, y), without recording."""
    with bl.no_grad():
        return float(bl.mean((model(X) - y) ** 2).item())


def train(
    model: RNN | LSTM,
    X: np.ndarray,
    y: np.ndarray,
    steps: int = 250,
    batch: int = 32,
    lr: float = 0.01,
    clip: float | None = None,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Adam on minibatches of (X, y); returns the loss and the gradient norm of every step.

    ``clip`` applies :func:`clip_by_global_norm` before each update.
    """
    opt = bl.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    losses, norms = [], []
    for _ in range(steps):
        idx = rng.choice(len(X), batch, replace=False)
        opt.zero_grad()
        loss = bl.mean((model(X[idx]) - y[idx]) ** 2)
        loss.backward()
        params = model.parameters()
        grads = [p.grad for p in params]
        clipped, norm = clip_by_global_norm(grads, clip if clip is not None else math.inf)
        if clip is not None:
            for p, g in zip(params, clipped):
                p.grad = g
        opt.step()
        losses.append(float(loss.item()))
        norms.append(norm)
    return {"loss": losses, "grad_norm": norms}


# --------------------------------------------------------------------------------------
# The explorer's view
# --------------------------------------------------------------------------------------
def gradient_flow_figure(
    radius: float = 1.0, length: int = 40, hidden: int = 16, batch: int = 8, seed: int = 0
) -> Any:
    """``||dL/dh_t||`` against t for a loss at the last step, for a tanh RNN and a linear
    RNN whose W_h has every singular value equal to ``radius``, with ``radius^(T-t)``.

    The inputs are small (standard deviation 0.1) so that the tanh starts near its linear
    range; the gap between the two curves is what tanh' < 1 takes away.
    """
    import matplotlib.pyplot as plt

    X = 0.1 * np.random.default_rng(seed + 1).normal(size=(batch, length, 4))
    fig, ax = plt.subplots(figsize=(6.5, 3.4), dpi=90)
    t = np.arange(1, length + 1)
    results = {}
    for activation, colour in [("linear", "#9d9d9d"), ("tanh", "#4c78a8")]:
        rnn = RNN(4, hidden, radius=radius, activation=activation, seed=seed)
        norms = state_gradient_norms(rnn, X, seed=seed)["h"]
        norms = norms / norms[-1]
        results[activation] = norms
        ax.semilogy(t, norms, "o-", ms=3, lw=1, color=colour, label=f"{activation} RNN")
    ax.semilogy(t, radius ** (length - t), ls="--", lw=1, color="#e45756", label=r"radius$^{T-t}$")
    ax.set_xlabel("time step t (the loss sits at t = T)")
    ax.set_ylabel(r"$\|\partial L/\partial h_t\| \,/\, \|\partial L/\partial h_T\|$")
    lo = min(1e-6, float(np.min(results["tanh"][results["tanh"] > 0])) / 3)
    ax.set_ylim(lo, max(1e6, float(np.max(results["linear"])) * 3))
    first = results["tanh"][0]
    ax.set_title(
        f"radius {radius:g}, T = {length}: the tanh RNN's h_1 gets {first:.1e} of h_T's gradient",
        fontsize=10,
    )
    ax.legend(fontsize=9, loc="lower right" if radius < 1 else "upper right")
    fig.tight_layout()
    return fig
