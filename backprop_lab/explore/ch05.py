"""Chapter 5 helpers: the four gates, and measurements of gradient flow through deep stacks.

* :data:`GATES` and :func:`gate_backward`: forward value and backward rule of the add,
  multiply, max and sigmoid gates, on plain floats (the library's reference for the figures;
  the exercises ask the reader to write the same rules on arrays).
* :func:`draw_gate`, :func:`gate_explorer`: a circuit picture with forward values and
  gradients, and an ipywidgets explorer around it.
* :func:`layer_grad_norms`, :func:`gain_figure`, :func:`gain_explorer`: the gradient norm
  reaching each layer of a deep sigmoid/tanh/ReLU stack, as a function of the weight scale
  (an :class:`backprop_lab.explorer.Explorer`).
* :func:`dead_relu_run`: the dead-ReLU experiment on the digits.

matplotlib and ipywidgets are imported only inside the functions that draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

import backprop_lab as bl
from backprop_lab.instrument.plots import capture_grads, dead_relu_fraction

__all__ = [
    "GATES",
    "gate_forward",
    "gate_backward",
    "draw_gate",
    "gate_explorer",
    "layer_grad_norms",
    "gain_figure",
    "gain_explorer",
    "dead_relu_run",
]


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# name -> (forward(x, y), backward(g, x, y) -> (dx, dy), local d out/dx as a function of x, y)
GATES: dict[str, tuple[Callable, Callable, Callable]] = {
    "add": (
        lambda x, y: x + y,
        lambda g, x, y: (g, g),
        lambda x, y: 1.0,
    ),
    "multiply": (
        lambda x, y: x * y,
        lambda g, x, y: (g * y, g * x),
        lambda x, y: y,
    ),
    "max": (
        lambda x, y: max(x, y),
        lambda g, x, y: (g if x >= y else 0.0, g if y > x else 0.0),
        lambda x, y: 1.0 if x >= y else 0.0,
    ),
    "sigmoid": (
        lambda x, y: _sig(x),
        lambda g, x, y: (g * _sig(x) * (1.0 - _sig(x)), None),
        lambda x, y: _sig(x) * (1.0 - _sig(x)),
    ),
}

_SYMBOL = {"add": "+", "multiply": "×", "max": "max", "sigmoid": "σ"}


def gate_forward(gate: str, x: float, y: float = 0.0) -> float:
    """The gate's output (``sigmoid`` ignores ``y``)."""
    return float(GATES[gate][0](x, y))


def gate_backward(gate: str, g: float, x: float, y: float = 0.0) -> tuple[float, float | None]:
    """``(dL/dx, dL/dy)`` for upstream ``g``; ``dL/dy`` is None for the one-input sigmoid."""
    dx, dy = GATES[gate][1](g, x, y)
    return float(dx), None if dy is None else float(dy)


def draw_gate(gate: str, x: float, y: float, g: float, axes: Any = None) -> Any:
    """Left: the gate as a circuit, forward values (green, above the wires) and gradients
    (red, below). Right: the local derivative d out / d x as x varies, y held fixed."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 2.7), gridspec_kw={"width_ratios": [1.3, 1]})
    else:
        fig = axes[0].figure
    ax, ax2 = axes
    out = gate_forward(gate, x, y)
    dx, dy = gate_backward(gate, g, x, y)
    two = gate != "sigmoid"
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 6)
    ax.axis("off")
    ax.add_patch(plt.Circle((5, 3), 0.9, fc="#eeeeee", ec="black"))
    ax.text(5, 3, _SYMBOL[gate], ha="center", va="center", fontsize=12 if two else 14)
    wires = [("x", 4.5 if two else 3.0, x, dx)] + ([("y", 1.5, y, dy)] if two else [])
    for name, yy, val, grad in wires:
        ax.plot([0.8, 3.4], [yy, yy], color="black", lw=1)
        ax.annotate("", xy=(4.15, 3 + (yy - 3) * 0.3), xytext=(3.4, yy),
                    arrowprops={"arrowstyle": "->"})  # fmt: skip
        ax.text(0.5, yy, name, ha="right", va="center", fontsize=11)
        ax.text(2.1, yy + 0.2, f"{val:+.3f}", color="green", ha="center", fontsize=10)
        ax.text(2.1, yy - 0.2, f"{grad:+.3f}", color="red", ha="center", va="top", fontsize=10)
    ax.annotate("", xy=(9.2, 3), xytext=(5.9, 3), arrowprops={"arrowstyle": "->"})
    ax.text(7.5, 3.25, f"{out:+.3f}", color="green", ha="center", fontsize=10)
    ax.text(7.5, 2.35, f"g = {g:+.3f}", color="red", ha="center", fontsize=10)
    ax.set_title(f"{gate} gate: forward (green), backward (red)", fontsize=10)

    xs = np.linspace(-6, 6, 241)
    local = GATES[gate][2]
    ax2.plot(xs, [local(v, y) for v in xs], color="#4c78a8")
    ax2.plot([x], [local(x, y)], "o", color="red")
    ax2.axhline(0, color="gray", lw=0.5)
    ax2.set_xlabel("x" + ("" if not two else f"   (y = {y:+.2f})"))
    ax2.set_ylabel("local  d out / d x")
    ax2.set_title("dL/dx = g × local", fontsize=10)
    fig.tight_layout()
    return fig


def gate_explorer() -> Any:
    """Dropdown (gate) and sliders (x, y, upstream g) around :func:`draw_gate`.

    The default view is drawn when the cell runs; moving the controls needs a live kernel.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt

    gate = w.Dropdown(options=list(GATES), value="multiply", description="gate")
    x = w.FloatSlider(value=1.5, min=-6, max=6, step=0.1, description="x")
    y = w.FloatSlider(value=-2.0, min=-6, max=6, step=0.1, description="y")
    g = w.FloatSlider(value=1.0, min=-2, max=2, step=0.1, description="upstream g")

    def show(gate: str, x: float, y: float, g: float) -> None:
        draw_gate(gate, x, y, g)
        plt.show()

    out = w.interactive_output(show, {"gate": gate, "x": x, "y": y, "g": g})
    return w.VBox([w.HBox([gate, g]), w.HBox([x, y]), out])


def layer_grad_norms(
    activation: str = "sigmoid",
    depth: int = 10,
    width: int = 64,
    gain: float = 1.0,
    batch: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """``||dL/dh_l||`` for l = 1..depth in a plain stack ``h_l = act(h_{l-1} W_l)``.

    Weights are Xavier-uniform times ``gain``, no biases, inputs standard normal; the loss
    is ``sum(h_depth * R)`` with a fixed random R, so ``dL/dh_depth = R`` has the same size
    in every configuration and the norms show what the layers do to it on the way back.
    """
    rng = np.random.default_rng(seed)
    act = {"sigmoid": bl.sigmoid, "tanh": bl.tanh, "relu": bl.relu}[activation]
    h = bl.tensor(rng.normal(size=(batch, width)))
    hs = []
    for _ in range(depth):
        a = math.sqrt(6.0 / (2 * width))
        W = bl.tensor(gain * rng.uniform(-a, a, size=(width, width)), requires_grad=True)
        h = act(h @ W)
        hs.append(h)
    R = rng.normal(size=(batch, width))
    grads = capture_grads(hs)
    bl.sum(h * R).backward()
    return np.array([float(np.linalg.norm(np.asarray(gr))) for gr in grads])


GAIN_GRID = [0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]


def gain_figure(activation: str = "sigmoid", gain: float = 1.0, depth: int = 10) -> Any:
    """Bar chart of ``||dL/dh_l||`` per layer (log scale) for one activation and gain."""
    from matplotlib.figure import Figure

    norms = layer_grad_norms(activation, depth=depth, gain=gain)
    fig = Figure(figsize=(6.5, 3.2))
    ax = fig.subplots()
    ax.bar(range(1, depth + 1), norms, color="#4c78a8")
    ax.set_yscale("log")
    ax.set_ylim(min(1e-8, norms.min() / 3), max(1e6, norms.max() * 3))
    ax.axhline(norms[-1], color="gray", lw=0.8, ls="--")
    ax.set_xticks(range(1, depth + 1))
    ax.tick_params(labelsize=9)
    ax.set_xlabel("layer l (input side on the left)", fontsize=10)
    ax.set_ylabel(r"$\|\partial L/\partial h_l\|$", fontsize=10)
    ax.set_title(
        f"{activation}, gain {gain:g}: layer 1 gets {norms[0] / norms[-1]:.2e} "
        f"of layer {depth}'s gradient",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def gain_explorer(depth: int = 10) -> Any:
    """Explorer: the weight gain (a slider over :data:`GAIN_GRID`) and the activation; bar
    chart of ``||dL/dh_l||`` per layer (log scale), see :func:`gain_figure`."""
    from backprop_lab.explorer import Explorer

    def render(activation: str, gain: float) -> Any:
        return gain_figure(activation, gain, depth=depth)

    return Explorer(
        render,
        controls={"activation": ["sigmoid", "tanh", "relu"], "gain": GAIN_GRID},
        value={"activation": "sigmoid", "gain": 1.0},
        title=f"Gradient norm reaching each of {depth} layers",
    )


def dead_relu_run(
    X, y, big_lr: float, hidden: int = 64, recover_steps: int = 50, lr: float = 0.1, seed: int = 0
) -> dict[str, Any]:
    """One full-batch SGD step with ``big_lr`` on a 64-hidden-unit ReLU MLP (cross-entropy),
    then ``recover_steps`` steps with a normal ``lr``.

    Returns the dead fraction (units that output 0 on *every* training example) at
    initialisation, after the big step and after recovery, the largest gradient any dead
    unit's incoming weights received during recovery, and the final model.
    """
    model = bl.nn.MLP([X.shape[1], hidden, int(y.max()) + 1], activation="relu", seed=seed)
    Xt = bl.tensor(X)

    def hidden_out():
        with bl.no_grad():
            return bl.relu(model[0](Xt)).data

    def step(rate: float) -> None:
        loss = bl.cross_entropy(model(Xt), y)
        loss.backward()
        for p in model.parameters():
            p.data -= rate * p.grad
            p.grad = None

    result: dict[str, Any] = {"init": dead_relu_fraction(hidden_out())}
    step(big_lr)
    H = hidden_out()
    dead = (H == 0).all(axis=0)
    result["after_big_step"] = dead_relu_fraction(H)
    worst = 0.0
    for _ in range(recover_steps):
        loss = bl.cross_entropy(model(Xt), y)
        loss.backward()
        W1 = model[0].W
        worst = max(worst, float(np.abs(np.asarray(W1.grad)[:, dead]).max(initial=0.0)))
        for p in model.parameters():
            p.data -= lr * p.grad
            p.grad = None
    result["after_recovery"] = dead_relu_fraction(hidden_out())
    result["max_grad_into_dead_units"] = worst
    result["model"] = model
    return result
