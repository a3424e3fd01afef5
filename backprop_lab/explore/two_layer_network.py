"""Chapter 4 (a two-layer network by hand): the forward pass, the engine's view of it, and
training on the digits.

Everything here is plain NumPy in the book's batch-major convention (one example per row)::

    Z = X @ W1 + b1        X (B, d), W1 (d, m), b1 (m,)  ->  Z (B, m)
    H = sigmoid(Z)                                       ->  H (B, m)
    Yhat = H @ W2 + b2     W2 (m, k), b2 (k,)            ->  Yhat (B, k)
    L = mean over rows of ||Yhat_i - Y_i||^2

The forward pass follows the CS231n shape ``forward(...) -> out, cache``. There is no
hand-written backward pass in this module: writing it is Exercise 4.2. Where the chapter
needs gradients (training, the explorer), :func:`engine_gradients` asks the engine.
Plotting code imports matplotlib only when called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "sigmoid",
    "two_layer_forward",
    "squared_loss",
    "engine_gradients",
    "saved_for_backward",
    "init_params",
    "replay_rows",
    "TrainingHistory",
    "train_digits",
    "plot_history",
    "outer_product_figure",
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


def squared_loss(Yhat, Y) -> float:
    """``L = (1/B) sum_i ||Yhat_i - Y_i||^2`` (a float)."""
    diff = Yhat - Y
    return float(np.sum(diff * diff) / Yhat.shape[0])


def _engine_network(X, Y, params):
    """The network and its loss in the engine: ``(loss, tensors)`` with tensors named as in
    the chapter (``X, W1, b1, Z, H, W2, b2, Yhat``)."""
    import backprop_lab as bl

    names = ("W1", "b1", "W2", "b2")
    t = {n: bl.tensor(np.asarray(p, dtype=np.float64), requires_grad=True)
         for n, p in zip(names, params)}  # fmt: skip
    t["X"] = bl.tensor(np.asarray(X, dtype=np.float64))
    t["Z"] = t["X"] @ t["W1"] + t["b1"]
    t["H"] = bl.sigmoid(t["Z"])
    t["Yhat"] = t["H"] @ t["W2"] + t["b2"]
    loss = bl.sum((t["Yhat"] - np.asarray(Y)) ** 2) / X.shape[0]
    for name, tensor in t.items():
        tensor.name = name
    loss.name = "L"
    return loss, t


def engine_gradients(X, Y, params) -> dict[str, np.ndarray]:
    """The gradients of the chapter's loss computed by the engine (``loss.backward()``):
    ``dW1, db1, dW2, db2`` and the deltas ``dZ, dH, dYhat`` (captured with hooks), plus
    ``L``. The chapter uses it where it needs gradients before Exercise 4.2."""
    from backprop_lab.instrument.plots import capture_grads

    loss, t = _engine_network(X, Y, params)
    deltas = capture_grads([t["Z"], t["H"], t["Yhat"]])
    loss.backward()
    out = {f"d{n}": np.asarray(t[n].grad) for n in ("W1", "b1", "W2", "b2")}
    out.update({f"d{n}": np.asarray(g) for n, g in zip(("Z", "H", "Yhat"), deltas)})
    out["L"] = float(np.asarray(loss.data))
    return out


def saved_for_backward(X, Y, params) -> tuple[list[tuple[str, str, int]], int, Any]:
    """Run the network's forward pass in the engine and list what each recorded op keeps
    for its backward pass: ``(op, shapes of the saved arrays, bytes)`` per node; the bytes
    of the distinct arrays saved (an array saved by two nodes counts once); and the trace,
    backward pass included (for :func:`backprop_lab.draw_graph`). Scalars and small Python
    values count 0."""
    import backprop_lab as bl
    from backprop_lab.instrument.memory import saved_arrays, saved_bytes

    rows = []
    distinct: dict[int, int] = {}
    with bl.trace() as tr:
        loss, _ = _engine_network(X, Y, params)
        for ev in tr.forward:  # before backward, which frees what the nodes saved
            if ev.node is None:
                continue
            arrays = [a for a in saved_arrays(ev.node.saved) if np.ndim(a) > 0]
            shapes = ", ".join(str(tuple(np.shape(a))) for a in arrays) or "-"
            rows.append((ev.op.name, shapes, saved_bytes(tuple(arrays))))
            distinct.update((id(a), saved_bytes((a,))) for a in arrays)
        loss.backward()
    return rows, sum(distinct.values()), tr


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
    backward=None,
) -> TrainingHistory:
    """Minibatch SGD on the two-layer network with squared loss against one-hot targets.

    Gradients come from the engine (:func:`engine_gradients`), or, if ``backward`` is
    given, from ``backward(dYhat, cache) -> (dX, dW1, db1, dW2, db2)`` (your answer to
    Exercise 4.2; ``dYhat`` is still the engine's). With ``live=True`` the loss and
    accuracy figure is redrawn in place every ``every`` epochs (in a running kernel you
    watch it grow; a stored notebook keeps the final figure). Returns the per-epoch
    history; ``history.params`` are the final weights.
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

        fig, axes = plt.subplots(1, 2, figsize=(6.5, 2.8))
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(X_train))
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            g = engine_gradients(X_train[rows], Y_train[rows], params)
            if backward is not None:
                _, cache = two_layer_forward(X_train[rows], *params)
                _, *grads = backward(g["dYhat"], cache)
            else:
                grads = [g[n] for n in ("dW1", "db1", "dW2", "db2")]
            for p, grad in zip(params, grads):
                p -= lr * grad
        Yhat, _ = two_layer_forward(X_train, *params)
        history.epoch.append(epoch)
        history.train_loss.append(squared_loss(Yhat, Y_train))
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


def outer_product_figure(X, dZ, dW1, example, unit, images=None, labels=None, predicted=None,
                         image_shape=(8, 8)) -> Any:  # fmt: skip
    """Three panels for example ``i = example`` and hidden unit ``j = unit``: the image, the
    example's contribution ``dZ[i, j] * x_i`` to column ``j`` of the weight gradient, and
    that whole column of ``dW1`` (given, e.g. from :func:`engine_gradients`)."""
    from matplotlib.figure import Figure

    B = dZ.shape[0]
    x = X[example]
    delta = dZ[example, unit]
    contrib = x * delta
    fig = Figure(figsize=(6.5, 2.7))
    axes = fig.subplots(1, 3)
    shown = x if images is None else np.asarray(images)[example]
    axes[0].imshow(np.reshape(shown, image_shape), cmap="gray_r")
    label = "" if labels is None else f": label {int(labels[example])}"
    if predicted is not None:
        label += f", predicted {int(predicted[example])}"
    axes[0].set_title(f"example {example}{label}", fontsize=8)
    lim = max(float(np.abs(contrib).max()), 1e-12)
    axes[1].imshow(contrib.reshape(image_shape), cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[1].set_title(f"$\\bar z_{{{example},{unit}}}$ = {delta:+.4f} times $x_{{{example}}}$",
                      fontsize=8)  # fmt: skip
    column = np.asarray(dW1)[:, unit]
    lim = max(float(np.abs(column).max()), 1e-12)
    axes[2].imshow(column.reshape(image_shape), cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[2].set_title(f"column {unit} of $\\bar W_1$ (all {B} examples)", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def outer_product_explorer(X, dZ, dW1, examples, units=(0, 1, 2, 3), **kwargs) -> Any:
    """Explorer over a few ``examples`` and hidden ``units``; see :func:`outer_product_figure`
    (``images``, ``labels``, ``predicted``, ``image_shape`` are passed on)."""
    from backprop_lab.explorer import Explorer

    def render(example: int, unit: int) -> Any:
        return outer_product_figure(X, dZ, dW1, example, unit, **kwargs)

    examples = [int(i) for i in examples]
    return Explorer(
        render,
        controls={"example": examples, "unit": [int(j) for j in units]},
        value={"example": examples[0], "unit": int(units[0])},
        title="One example's share of a hidden unit's weight gradient",
    )
