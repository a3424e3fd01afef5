"""Chapter 5 (gates and gradient flow): the four gates as the engine runs them, and
measurements of gradient flow through deep stacks.

* :func:`gate_gradients`, :func:`local_derivative_curve`: what the engine's backward pass
  sends to each input of the add, multiply, max and sigmoid gates (no rule is written
  here: every number comes from ``backward``; writing the rules is the chapter's exercises);
* :func:`draw_gate`, :func:`gate_explorer`: a circuit picture with forward values and
  gradients, as an :class:`~backprop_lab.explorer.Explorer`;
* :func:`layer_grad_norms`, :func:`gain_figure`, :func:`gain_explorer`: the gradient norm
  reaching each layer of a deep sigmoid/tanh/ReLU stack, as a function of the weight scale;
* :func:`dead_relu_run`: the dead-ReLU experiment on the digits, and
  :func:`silenced_unit_run`: a silenced unit in the first and in the second hidden layer;
* :func:`stack_grad_ratio`: plain against residual tanh stacks.

matplotlib is imported only inside the functions that draw.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import backprop_lab as bl
from backprop_lab.instrument.plots import capture_grads, dead_relu_fraction

__all__ = [
    "GATE_NAMES",
    "gate_gradients",
    "local_derivative_curve",
    "draw_gate",
    "gate_explorer",
    "layer_grad_norms",
    "GAIN_GRID",
    "gain_figure",
    "gain_explorer",
    "dead_relu_run",
    "silenced_unit_run",
    "stack_grad_ratio",
]

GATE_NAMES = ("add", "multiply", "max", "sigmoid")


def _gate_op(gate: str):
    return {
        "add": lambda a, b: a + b,
        "multiply": lambda a, b: a * b,
        "max": bl.maximum,
        "sigmoid": lambda a, b: bl.sigmoid(a),
    }[gate]


def gate_gradients(gate: str, x: float, y: float, g: float) -> tuple[float, float, float | None]:
    """``(output, dL/dx, dL/dy)`` of one gate for upstream ``g``, from the engine's
    ``backward`` (``dL/dy`` is None for the one-input sigmoid)."""
    xt, yt = bl.tensor(float(x), requires_grad=True), bl.tensor(float(y), requires_grad=True)
    z = _gate_op(gate)(xt, yt)
    z.backward(np.array(float(g)))
    dy = None if gate == "sigmoid" else (0.0 if yt.grad is None else float(yt.grad))
    return float(z.data), float(xt.grad), dy


def local_derivative_curve(gate: str, xs: Any, y: float) -> np.ndarray:
    """``d out / d x`` at every ``x`` in ``xs`` with ``y`` fixed, from one engine backward
    pass (the gates act elementwise, so upstream ones give the local derivatives)."""
    xt = bl.tensor(np.asarray(xs, dtype=np.float64), requires_grad=True)
    z = _gate_op(gate)(xt, bl.tensor(float(y)))
    z.backward(np.ones(z.shape))
    return np.asarray(xt.grad)


_SYMBOL = {"add": "+", "multiply": "×", "max": "max", "sigmoid": "σ"}


def draw_gate(gate: str, x: float, y: float, g: float) -> Any:
    """Left: the gate as a circuit, forward values (green, above the wires) and gradients
    (red, below). Right: the local derivative d out / d x as x varies, y held fixed."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 2.8))
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1.3, 1])
    out, dx, dy = gate_gradients(gate, x, y, g)
    two = gate != "sigmoid"
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 6)
    ax.axis("off")
    ax.add_patch(plt.Circle((5, 3), 0.9, fc="#eeeeee", ec="black"))
    ax.text(5, 3, _SYMBOL[gate], ha="center", va="center", fontsize=11 if two else 13)
    wires = [("x", 4.5 if two else 3.0, x, dx)] + ([("y", 1.5, y, dy)] if two else [])
    for name, yy, val, grad in wires:
        ax.plot([0.8, 3.4], [yy, yy], color="black", lw=1)
        ax.annotate("", xy=(4.15, 3 + (yy - 3) * 0.3), xytext=(3.4, yy),
                    arrowprops={"arrowstyle": "->"})  # fmt: skip
        ax.text(0.5, yy, name, ha="right", va="center", fontsize=10)
        ax.text(2.1, yy + 0.2, f"{val:+.3f}", color="green", ha="center", fontsize=9)
        ax.text(2.1, yy - 0.2, f"{grad:+.3f}", color="red", ha="center", va="top", fontsize=9)
    ax.annotate("", xy=(9.2, 3), xytext=(5.9, 3), arrowprops={"arrowstyle": "->"})
    ax.text(7.5, 3.25, f"{out:+.3f}", color="green", ha="center", fontsize=9)
    ax.text(7.5, 2.35, f"g = {g:+.3f}", color="red", ha="center", fontsize=9)
    ax.set_title(f"{gate}: forward (green), backward (red)", fontsize=9)

    xs = np.linspace(-6, 6, 241)
    ax2.plot(xs, local_derivative_curve(gate, xs, y), color="#4c78a8")
    ax2.plot([x], [local_derivative_curve(gate, [x], y)[0]], "o", color="red")
    ax2.axhline(0, color="gray", lw=0.5)
    ax2.set_xlabel("x" + ("" if not two else f"   (y = {y:+.2f})"), fontsize=9)
    ax2.set_ylabel("local  d out / d x", fontsize=9)
    ax2.set_title("the engine's local derivative", fontsize=9)
    ax2.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def gate_explorer(g: float = 2.0) -> Any:
    """Explorer: the gate, x and y (upstream ``g`` fixed); see :func:`draw_gate`."""
    from backprop_lab.explorer import Explorer

    return Explorer(
        lambda gate, x, y: draw_gate(gate, x, y, g),
        controls={"gate": list(GATE_NAMES), "x": [-3.0, -1.0, 0.5, 2.0, 4.0], "y": [-2.0, 1.0]},
        value={"gate": "multiply", "x": 2.0, "y": -2.0},
        title=f"Four gates, upstream g = {g:g}",
    )


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


GAIN_GRID = [0.25, 0.5, 1.0, 1.2, 1.4, 1.6, 2.0, 4.0, 8.0]


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
    """One full-batch SGD step with ``big_lr`` on a ReLU MLP ``d -> hidden -> classes``
    (cross-entropy), then ``recover_steps`` steps with a normal ``lr``.

    Returns the dead fraction (units that output 0 on *every* training example,
    :func:`backprop_lab.instrument.plots.dead_relu_fraction`) at initialisation, after the big
    step and after recovery; ``frozen``, the fraction of hidden units whose incoming weights
    and bias did not change by a single bit during recovery; and the final model.
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
    result["after_big_step"] = dead_relu_fraction(hidden_out())
    W1, b1 = model[0].W, model[0].b
    before = np.vstack([np.asarray(W1.data), np.asarray(b1.data)[None, :]]).copy()
    for _ in range(recover_steps):
        step(lr)
    after = np.vstack([np.asarray(W1.data), np.asarray(b1.data)[None, :]])
    result["after_recovery"] = dead_relu_fraction(hidden_out())
    result["frozen"] = float(np.mean(np.all(after == before, axis=0)))
    result["model"] = model
    return result


def silenced_unit_run(X, y, layer: int, unit: int = 0, margin: float = 0.05, steps: int = 60,
                      lr: float = 0.1, hidden: int = 32, seed: int = 0) -> np.ndarray:  # fmt: skip
    """Silence one ReLU unit and train: its largest pre-activation over the data, per step.

    A ReLU MLP ``d -> hidden -> hidden -> classes`` is trained for 20 full-batch steps; then
    unit ``unit`` of hidden layer ``layer`` (1 or 2) gets its bias lowered until its largest
    pre-activation over ``X`` is ``-margin``, so that it outputs 0 on every example. Then
    ``steps`` more steps run. Returns the unit's largest pre-activation before each of those
    steps and after the last (``steps + 1`` numbers): while it is negative the unit is dead.
    """
    model = bl.nn.MLP([X.shape[1], hidden, hidden, int(y.max()) + 1], activation="relu",
                      seed=seed)  # fmt: skip
    Xt = bl.tensor(X)
    target = model[2 * (layer - 1)]  # Linear layers sit at 0, 2, 4 (ReLUs in between)

    def largest() -> float:
        with bl.no_grad():
            h = Xt
            for module in list(model)[: 2 * (layer - 1)]:
                h = module(h)
            z = np.asarray(target(h).data)
        return float(z[:, unit].max())

    def step() -> None:
        loss = bl.cross_entropy(model(Xt), y)
        loss.backward()
        for p in model.parameters():
            p.data -= lr * p.grad
            p.grad = None

    for _ in range(20):
        step()
    target.b.data[unit] -= largest() + margin
    trace = [largest()]
    for _ in range(steps):
        step()
        trace.append(largest())
    return np.array(trace)


def stack_grad_ratio(residual: bool, scale: float, depth: int = 20, width: int = 32,
                     seed: int = 1) -> float:  # fmt: skip
    """``||dL/dx|| / ||dL/dh_depth||`` through ``depth`` tanh layers ``tanh(h W)`` (weights
    normal with standard deviation ``scale / sqrt(width)``), plain (``h = tanh(h W)``) or
    residual (``h = h + tanh(h W)``), for a batch of 16 and a fixed random upstream."""
    rng = np.random.default_rng(seed)
    x = bl.tensor(rng.normal(size=(16, width)), requires_grad=True)
    h = x
    for _ in range(depth):
        W = bl.tensor(rng.normal(size=(width, width)) * scale / np.sqrt(width))
        out = bl.tanh(h @ W)
        h = h + out if residual else out
    R = rng.normal(size=h.shape)
    bl.sum(h * R).backward()
    return float(np.linalg.norm(np.asarray(x.grad)) / np.linalg.norm(R))
