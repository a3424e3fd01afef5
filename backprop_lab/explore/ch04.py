"""Chapter 4 helpers: a two-layer network written out by hand, trained on the digits.

Everything here is plain NumPy in the book's batch-major convention (one example per row)::

    Z = X @ W1 + b1        X (B, d), W1 (d, m), b1 (m,)  ->  Z (B, m)
    H = sigmoid(Z)                                       ->  H (B, m)
    Yhat = H @ W2 + b2     W2 (m, k), b2 (k,)            ->  Yhat (B, k)
    L = mean over rows of ||Yhat_i - Y_i||^2

The functions follow the CS231n shape ``forward(...) -> out, cache`` and
``backward(dout, cache) -> grads``. Plotting and widget code imports matplotlib and
ipywidgets only when called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "sigmoid",
    "two_layer_forward",
    "two_layer_backward",
    "squared_loss",
    "init_params",
    "replay_rows",
    "TrainingHistory",
    "train_digits",
    "plot_history",
    "outer_product_explorer",
]


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function 1 / (1 + e^-z), elementwise."""
    return 1.0 / (1.0 + np.exp(-z))


def two_layer_forward(X, W1, b1, W2, b2):
    """Forward pass; returns ``(Yhat, cache)`` with ``cache = (X, W1, b1, W2, b2, Z, H)``."""
    Z = X @ W1 + b1
    H = sigmoid(Z)
    Yhat = H @ W2 + b2
    return Yhat, (X, W1, b1, W2, b2, Z, H)


def two_layer_backward(dYhat, cache):
    """Backward pass: from ``dYhat`` = dL/dYhat (B, k) to ``(dX, dW1, db1, dW2, db2)``."""
    X, W1, b1, W2, b2, Z, H = cache
    dW2 = H.T @ dYhat  # (m, B) @ (B, k): a sum of B outer products
    db2 = dYhat.sum(axis=0)  # b2 was broadcast over the rows, so its gradient sums them
    dH = dYhat @ W2.T  # (B, k) @ (k, m)
    dZ = dH * H * (1.0 - H)  # diagonal Jacobian: an elementwise product
    dW1 = X.T @ dZ
    db1 = dZ.sum(axis=0)
    dX = dZ @ W1.T
    return dX, dW1, db1, dW2, db2


def squared_loss(Yhat, Y):
    """``L = (1/B) sum_i ||Yhat_i - Y_i||^2`` and its gradient ``dL/dYhat = 2 (Yhat - Y) / B``."""
    B = Yhat.shape[0]
    diff = Yhat - Y
    return float(np.sum(diff * diff) / B), 2.0 * diff / B


def init_params(d: int, m: int, k: int, seed: int = 0):
    """Xavier-uniform weights and zero biases: ``[W1, b1, W2, b2]``."""
    rng = np.random.default_rng(seed)
    a1, a2 = np.sqrt(6.0 / (d + m)), np.sqrt(6.0 / (m + k))
    return [
        rng.uniform(-a1, a1, size=(d, m)),
        np.zeros(m),
        rng.uniform(-a2, a2, size=(m, k)),
        np.zeros(k),
    ]


def replay_rows(trace: Any) -> list[tuple[str, str, str, str, float]]:
    """For every backward step of a :class:`~backprop_lab.trace.Trace`, check the pattern
    *downstream = upstream x local Jacobian* with the Jacobian built explicitly.

    Returns one row per (step, input) that received a gradient:
    ``(op, upstream shape, local Jacobian shape, downstream shape, max |difference|)``,
    where the difference compares ``upstream.ravel() @ J`` with the engine's downstream.
    """
    rows = []
    for step in trace.replay():
        up = np.asarray(step.upstream, dtype=float)
        for i, down in enumerate(step.downstream):
            if down is None:
                continue
            J = np.asarray(step.local_jacobian(i), dtype=float)
            down = np.asarray(down, dtype=float)
            diff = float(np.max(np.abs(up.reshape(-1) @ J - down.reshape(-1))))
            rows.append(
                (
                    f"{step.op.name} (input {i})",
                    str(tuple(up.shape)),
                    str(tuple(J.shape)),
                    str(tuple(down.shape)),
                    diff,
                )
            )
    return rows


@dataclass
class TrainingHistory:
    """Per-epoch records of :func:`train_digits`."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    params: list[np.ndarray] = field(default_factory=list)


def _accuracy(params, X, y) -> float:
    Yhat, _ = two_layer_forward(X, *params)
    return float(np.mean(Yhat.argmax(axis=1) == y))


def plot_history(history: TrainingHistory, axes: Any = None) -> Any:
    """Two panels: training loss, and training/test accuracy, against the epoch."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    else:
        fig = axes[0].figure
    ax_loss, ax_acc = axes
    ax_loss.clear()
    ax_acc.clear()
    ax_loss.plot(history.epoch, history.train_loss, color="#4c78a8")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss $L$")
    ax_acc.plot(history.epoch, history.train_acc, label="train", color="#4c78a8")
    ax_acc.plot(history.epoch, history.test_acc, label="test", color="#f58518")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def train_digits(
    X_train,
    y_train,
    X_test,
    y_test,
    hidden: int = 32,
    lr: float = 0.02,
    epochs: int = 50,
    batch: int = 32,
    seed: int = 0,
    live: bool = True,
    every: int = 5,
    backward=two_layer_backward,
) -> TrainingHistory:
    """Minibatch SGD on the two-layer network with squared loss against one-hot targets.

    Gradients come from ``backward`` (the hand-written :func:`two_layer_backward` by
    default). With ``live=True`` the loss and accuracy figure is redrawn in place every
    ``every`` epochs (in a running kernel you watch it grow; a stored notebook keeps the
    final figure). Returns the per-epoch history; ``history.params`` are the final weights.
    """
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    k = int(max(y_train.max(), y_test.max())) + 1
    Y_train = np.eye(k)[y_train]
    params = init_params(X_train.shape[1], hidden, k, seed)
    history = TrainingHistory()
    handle = fig = None
    if live:
        from IPython.display import display

        fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(X_train))
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            Yhat, cache = two_layer_forward(X_train[rows], *params)
            _, dYhat = squared_loss(Yhat, Y_train[rows])
            _, dW1, db1, dW2, db2 = backward(dYhat, cache)
            for p, g in zip(params, (dW1, db1, dW2, db2)):
                p -= lr * g
        Yhat, _ = two_layer_forward(X_train, *params)
        history.epoch.append(epoch)
        history.train_loss.append(squared_loss(Yhat, Y_train)[0])
        history.train_acc.append(float(np.mean(Yhat.argmax(axis=1) == y_train)))
        history.test_acc.append(_accuracy(params, X_test, y_test))
        if live and (epoch % every == 0 or epoch == epochs):
            plot_history(history, axes)
            if handle is None:
                handle = display(fig, display_id=True)
            else:
                handle.update(fig)
    if fig is not None:
        plt.close(fig)
    history.params = params
    return history


def outer_product_explorer(X, dZ, images=None, labels=None, predicted=None, image_shape=(8, 8)):
    """Widget: the gradient of one hidden unit's incoming weights, example by example.

    ``X`` (B, d) are the inputs of a batch and ``dZ`` (B, m) the deltas at the hidden
    pre-activations. For example ``i`` and unit ``j`` the figure shows the input image
    (``images[i]`` if given, e.g. the raw pixels, else ``x_i``), the scalar ``dZ[i, j]``
    times ``x_i`` (column ``j`` of the outer product ``x_i^T dZ_i``) and the whole batch's
    column ``j`` of ``dW1 = X^T dZ``. ``labels`` and ``predicted`` (B,) go into the first
    title. The default
    view is drawn when the cell runs; the sliders need a live kernel.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt

    B, m = dZ.shape
    full = X.T @ dZ

    def show(example: int, unit: int) -> None:
        x = X[example]
        delta = dZ[example, unit]
        contrib = x * delta
        fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.6))
        shown = x if images is None else np.asarray(images)[example]
        axes[0].imshow(np.reshape(shown, image_shape), cmap="gray_r")
        label = "" if labels is None else f": label {int(labels[example])}"
        if predicted is not None:
            label += f", predicted {int(predicted[example])}"
        axes[0].set_title(f"example {example}{label}", fontsize=9)
        lim = max(float(np.abs(contrib).max()), 1e-12)
        axes[1].imshow(contrib.reshape(image_shape), cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[1].set_title(
            f"$\\bar z_{{{example},{unit}}}$ = {delta:+.4f} times $x_{{{example}}}$",
            fontsize=9,
        )
        lim = max(float(np.abs(full[:, unit]).max()), 1e-12)
        axes[2].imshow(full[:, unit].reshape(image_shape), cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[2].set_title(f"column {unit} of $\\bar W_1$ (sum over {B})", fontsize=9)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        plt.show()

    example = w.IntSlider(value=0, min=0, max=B - 1, description="example i")
    unit = w.IntSlider(value=0, min=0, max=m - 1, description="hidden unit j")
    out = w.interactive_output(show, {"example": example, "unit": unit})
    return w.VBox([w.HBox([example, unit]), out])
