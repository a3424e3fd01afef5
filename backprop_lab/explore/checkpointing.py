"""Memory and gradient checkpointing (Chapter 11): what backward keeps alive, and the trade.

* :class:`MemoryTimeline`: an engine listener that follows the saved-for-backward bytes of
  *activations* (arrays the forward pass computed; leaf tensors and constant inputs such
  as the data batch and the weights are left out, since they exist whether or not anyone
  backpropagates), event by event, with the phase of each event: ``forward``,
  ``recompute`` (a checkpointed segment re-run inside backward) or ``backward``.
* :func:`relu_stack`, :func:`run_step`, :func:`measure`: a deep ReLU network
  ``h_l = relu(h_{l-1} W_l)`` and one training step on it, plain, segment-checkpointed
  (``bl.checkpoint_sequential``) or recursively checkpointed, measured in activations
  (one activation = batch x width floats), FLOPs and seconds.
* :func:`checkpoint_recursive`: binary recursive checkpointing, O(log L) memory.
* :func:`timeline_figure`: the explorer's view (memory over the events of one step).
* :func:`numpy_stack`: the NumPy network of Exercise 11.1 (layer forward and backward as
  callables that count their calls); :func:`plain_backward` is the store-everything
  schedule that the exercise improves on.

matplotlib is imported only inside the functions that draw.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import backprop_lab as bl
from backprop_lab.instrument.memory import MemoryMeter, saved_arrays
from backprop_lab.tensor import Listener, Tensor

__all__ = [
    "MemoryTimeline",
    "saved_table",
    "relu_stack",
    "run_step",
    "measure",
    "Measurement",
    "checkpoint_recursive",
    "chunk_sizes",
    "time_steps",
    "timeline_figure",
    "sweep_figure",
    "NumpyStack",
    "numpy_stack",
    "plain_backward",
    "PHASE_COLOURS",
]

PHASE_COLOURS = {"forward": "#4c78a8", "recompute": "#f58518", "backward": "#54a24b"}


class MemoryTimeline(MemoryMeter):
    """Live saved-for-backward bytes of activations, after every recorded or freed node.

    Use as ``with MemoryTimeline() as m: ...``. Compared with ``bl.measure_memory()`` it
    leaves out arrays that were *inputs* to the computation rather than results of it:
    the data of leaf tensors (weights, the input batch) and plain arrays passed to an op.
    ``m.timeline[i]`` is the live byte count after event ``i`` and ``m.phases[i]`` says
    whether that event was a node recorded in the forward pass, a node recorded while a
    checkpointed segment was recomputed, or a node freed by backward.
    """

    def __init__(self, count_inputs: bool = False) -> None:
        super().__init__()
        self.count_inputs = count_inputs
        self.phases: list[str] = []
        self._backward_started = False

    def on_forward(self, op, node, inputs, output, params, seconds) -> None:
        if node is None:
            return
        arrays = saved_arrays(node.saved)
        if not self.count_inputs:
            given = set()
            for a in inputs:
                if type(a) is Tensor:
                    if a.is_leaf:
                        given.add(id(a.data))
                elif hasattr(a, "shape"):
                    given.add(id(a))
            arrays = [a for a in arrays if id(a) not in given]
        self.record(node, tuple(arrays))
        self.phases.append("recompute" if self._backward_started else "forward")

    def on_backward(self, node, upstream, input_grads, seconds) -> None:
        self._backward_started = True

    def on_free(self, node) -> None:
        before = len(self.timeline)
        self.free(node)
        if len(self.timeline) > before:
            self.phases.append("backward")


class _SavedLister(Listener):
    """Records, for every recorded node, what it saves and whether each array is new."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, list[str]]] = []
        self._seen: set[int] = set()
        self._keep: list[Any] = []  # keeps arrays alive so their ids stay unique

    def on_forward(self, op, node, inputs, output, params, seconds) -> None:
        if node is None:
            return
        leaves = {
            id(a.data): "a weight" if a.requires_grad else "the input batch"
            for a in inputs
            if type(a) is Tensor and a.is_leaf
        }
        words = []
        for a in saved_arrays(node.saved):
            shape = "x".join(str(n) for n in a.shape)
            if id(a) in leaves:
                words.append(f"{shape} ({leaves[id(a)]})")
            elif id(a) in self._seen:
                words.append(f"{shape} (already kept)")
            else:
                words.append(f"{shape} (new activation)")
            self._seen.add(id(a))
            self._keep.append(a)
        self.rows.append((op.name, words))


def saved_table(depth: int = 3, width: int = 3, batch: int = 2) -> list[tuple[str, str]]:
    """``(op, what its node saves)`` for every node of one step of a small :func:`relu_stack`."""
    _, layers = relu_stack(depth, width)
    X = bl.tensor(np.ones((batch, width)))
    with _SavedLister() as lister:
        h = X
        for layer in layers:
            h = layer(h)
        bl.sum(h * h)
    return [(name, ", ".join(words) if words else "nothing") for name, words in lister.rows]


# --------------------------------------------------------------------------------------
# The model: a deep ReLU stack, and one training step on it
# --------------------------------------------------------------------------------------
def relu_stack(
    depth: int, width: int, seed: int = 0
) -> tuple[list[Tensor], list[Callable[[Tensor], Tensor]]]:
    """``depth`` layers ``h -> relu(h @ W_l)`` with He-normal W_l ~ N(0, 2/width), no biases.

    Returns the weight tensors and the layers as callables (each closes over its W_l), the
    form ``bl.checkpoint_sequential`` takes. Each layer's backward reads one array of its
    own: its output (relu's backward reads where the output is positive, and the next
    layer's matmul reads the same array as its input), so a plain step keeps ``depth``
    activations alive.
    """
    rng = np.random.default_rng(seed)
    weights = [
        bl.tensor(rng.normal(size=(width, width)) * math.sqrt(2.0 / width), requires_grad=True)
        for _ in range(depth)
    ]

    def layer(W: Tensor) -> Callable[[Tensor], Tensor]:
        def relu_layer(h: Tensor) -> Tensor:
            return bl.relu(h @ W)

        return relu_layer

    return weights, [layer(W) for W in weights]


def checkpoint_recursive(layers: Sequence[Callable[[Tensor], Tensor]], x: Tensor) -> Tensor:
    """Binary recursive checkpointing: checkpoint the first half, recurse into the second.

    At the end of the forward pass only the boundaries at L/2, 3L/4, 7L/8, ... are kept;
    when backward recomputes a checkpointed half it splits that half the same way. Memory
    grows like log2(L) activations, compute by about log2(L)/2 extra forward passes.
    """
    layers = list(layers)
    if len(layers) == 1:
        return layers[0](x)
    half = len(layers) // 2
    first, second = layers[:half], layers[half:]

    def first_half(h: Tensor) -> Tensor:
        return checkpoint_recursive(first, h)

    mid = bl.checkpoint(first_half, x)
    return checkpoint_recursive(second, mid)


def chunk_sizes(depth: int, segments: int) -> list[int]:
    """The layer counts of the chunks ``bl.checkpoint_sequential(layers, segments, x)`` runs."""
    size = -(-depth // segments)
    return [min(size, depth - i) for i in range(0, depth, size)]


def run_step(
    layers: Sequence[Callable[[Tensor], Tensor]],
    X: Tensor,
    segments: int | None = None,
    recursive: bool = False,
) -> float:
    """One forward and backward pass of ``loss = sum(h_L * h_L)``; returns the loss.

    ``segments=None``: plain; ``segments=s``: ``bl.checkpoint_sequential(layers, s, X)``;
    ``recursive=True``: :func:`checkpoint_recursive`.
    """
    if recursive:
        h = checkpoint_recursive(layers, X)
    elif segments is None:
        h = X
        for layer in layers:
            h = layer(h)
    else:
        h = bl.checkpoint_sequential(layers, segments, X)
    loss = bl.sum(h * h)
    loss.backward()
    return float(loss.item())


@dataclass
class Measurement:
    """Memory and compute of one training step (see :func:`measure`)."""

    depth: int
    width: int
    batch: int
    segments: int | None
    recursive: bool
    activation_bytes: int  # one batch x width array
    peak_bytes: int
    timeline: np.ndarray  # live activation bytes after each event
    phases: list[str] = field(repr=False)
    forward_flops: int = 0  # first pass only
    recompute_flops: int = 0
    backward_flops: int = 0
    grads: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def peak_activations(self) -> float:
        """The peak in units of one activation (batch x width floats)."""
        return self.peak_bytes / self.activation_bytes

    @property
    def total_flops(self) -> int:
        return self.forward_flops + self.recompute_flops + self.backward_flops

    @property
    def recompute_passes(self) -> float:
        """Recomputed FLOPs in units of one forward pass."""
        return self.recompute_flops / self.forward_flops


def measure(
    depth: int,
    width: int = 32,
    batch: int = 64,
    segments: int | None = None,
    recursive: bool = False,
    seed: int = 0,
) -> Measurement:
    """Run one step on a fresh :func:`relu_stack` and measure activation memory and FLOPs."""
    weights, layers = relu_stack(depth, width, seed)
    X = bl.tensor(np.random.default_rng(seed + 1).normal(size=(batch, width)))
    with MemoryTimeline() as m, bl.count() as c:
        run_step(layers, X, segments, recursive)
    return Measurement(
        depth=depth,
        width=width,
        batch=batch,
        segments=segments,
        recursive=recursive,
        activation_bytes=batch * width * X.data.itemsize,
        peak_bytes=m.peak,
        timeline=np.array(m.timeline, dtype=np.int64),
        phases=list(m.phases),
        forward_flops=c.forward_flops - c.recompute_flops,
        recompute_flops=c.recompute_flops,
        backward_flops=c.backward_flops,
        grads=[np.array(W.grad) for W in weights],
    )


def time_steps(
    depth: int,
    width: int,
    batch: int,
    configs: Sequence[int | str | None],
    repeats: int = 5,
    seed: int = 0,
) -> dict[Any, float]:
    """CPU seconds of one step of a :func:`relu_stack`, the least of ``repeats`` runs, for
    each config: ``None`` (plain), an int (that many segments), ``"recursive"``, or
    ``"forward"`` (a forward pass alone, not recorded).

    The clock is the thread's CPU time, which does not run while the thread waits for a
    busy core, and BLAS is held to one thread, so all the work is done by the timed thread
    (on a shared 2-core machine, wall-clock times and threads that spin against each other
    make comparisons meaningless). The configs take turns within each repeat.
    """
    from threadpoolctl import threadpool_limits

    _, layers = relu_stack(depth, width, seed)
    X = bl.tensor(np.random.default_rng(seed + 1).normal(size=(batch, width)))

    def forward_only() -> None:
        with bl.no_grad():
            h = X
            for layer in layers:
                h = layer(h)

    best = {c: math.inf for c in configs}
    with threadpool_limits(1):
        for _ in range(repeats):
            for c in configs:
                t0 = time.thread_time()
                if c == "forward":
                    forward_only()
                else:
                    run_step(layers, X, None if c == "recursive" else c, c == "recursive")
                best[c] = min(best[c], time.thread_time() - t0)
    return best


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------
def _draw_timeline(ax: Any, m: Measurement, label_phases: bool = True) -> None:
    y = m.timeline / m.activation_bytes
    x = np.arange(1, len(y) + 1)
    phases = np.array(m.phases)
    for phase, colour in PHASE_COLOURS.items():
        mask = phases == phase
        if mask.any():
            ax.scatter(x[mask], y[mask], s=4, color=colour, label=phase if label_phases else None)
    ax.step(x, y, where="post", color="0.6", lw=0.6, zorder=0)
    ax.axhline(m.peak_activations, color="#e45756", lw=0.8, ls="--")
    ax.set_xlabel("event (op recorded or node freed)")
    ax.set_ylabel("live activations")
    ax.set_ylim(0, None)


def timeline_figure(depth: int = 16, segments: int = 4, width: int = 16, batch: int = 32) -> Any:
    """The explorer's view: the memory timeline of one checkpointed step next to the plain one.

    Left: live activations (units of batch x width floats) after each event of the step,
    coloured by phase, with the peak dashed. Right: the peak and the FLOPs of both runs.
    """
    import matplotlib.pyplot as plt

    plain = measure(depth, width, batch, None)
    ck = measure(depth, width, batch, segments)
    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(6.8, 3.3), gridspec_kw={"width_ratios": [2.2, 1]}, dpi=90
    )
    _draw_timeline(ax, ck)
    ax.plot(
        np.arange(1, len(plain.timeline) + 1),
        plain.timeline / plain.activation_bytes,
        color="0.75",
        lw=0.8,
        ls=":",
        label="plain",
    )
    ax.set_ylim(0, depth * 1.08 + 1)
    ax.legend(fontsize=9, loc="upper right", markerscale=3)
    chunks = chunk_sizes(depth, segments)
    ax.set_title(
        f"{depth} layers in {len(chunks)} chunk{'s' if len(chunks) > 1 else ''} "
        f"of {chunks[0]}: peak {ck.peak_activations:.0f} (plain {plain.peak_activations:.0f})",
        fontsize=10,
    )
    names = ["forward", "recompute", "backward"]
    base = [plain.forward_flops, plain.recompute_flops, plain.backward_flops]
    mine = [ck.forward_flops, ck.recompute_flops, ck.backward_flops]
    unit = plain.forward_flops
    left = np.zeros(2)
    for name, a, b in zip(names, base, mine):
        vals = np.array([a, b]) / unit
        bx.barh([1, 0], vals, left=left, color=PHASE_COLOURS[name], label=name)
        left += vals
    bx.set_yticks([1, 0], ["plain", "checkpointed"])
    bx.set_xlabel("FLOPs / one forward pass")
    bx.set_xlim(0, 5.0)
    ratio = ck.total_flops / plain.total_flops
    bx.set_title(f"recomputed {ck.recompute_passes:.2f} F,\nstep {ratio:.2f}x plain", fontsize=10)
    for i, v in zip([1, 0], left):
        bx.text(v + 0.05, i, f"{v:.2f}", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def sweep_figure(rows: Sequence[dict[str, float]], depth: int) -> Any:
    """Measured peak memory and step cost against the chunk length k, with the models
    ``L/k + k`` (memory) and ``1 + (1 - k/L)/3`` (cost relative to a plain step).

    ``rows``: dicts with ``k``, ``peak`` (activations), ``flops`` (relative to the plain
    step) and, for the settings that were timed, ``seconds`` (relative to the plain step).
    """
    import matplotlib.pyplot as plt

    k = np.array([r["k"] for r in rows], dtype=float)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(6.8, 3.0), dpi=90)
    kk = np.linspace(1, depth, 200)
    ax.plot(kk, depth / kk + kk, color="0.6", lw=1, label="model L/k + k")
    ax.plot(k, [r["peak"] for r in rows], "o", color="#4c78a8", label="measured peak")
    ax.axvline(math.sqrt(depth), color="0.8", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("chunk length k (layers between checkpoints)")
    ax.set_ylabel("peak live activations")
    ax.legend(fontsize=9)
    bx.plot(kk, 1 + (1 - kk / depth) / 3, color="0.6", lw=1, label="model 1 + (1 - k/L)/3")
    bx.plot(k, [r["flops"] for r in rows], "s", color="#f58518", label="FLOPs (counted)")
    timed = [r for r in rows if "seconds" in r]
    if timed:
        bx.plot(
            [r["k"] for r in timed],
            [r["seconds"] for r in timed],
            "^",
            color="#54a24b",
            label="CPU time (timed)",
        )
    bx.axhline(2.0, color="#e45756", lw=0.8, ls="--")
    bx.text(1.05, 2.0, "the essay's 'factor of 2'", fontsize=9, va="bottom", color="#e45756")
    bx.set_xscale("log", base=2)
    bx.set_ylim(0.9, 2.2)
    bx.set_xlabel("chunk length k")
    bx.set_ylabel("step cost / plain step")
    bx.legend(fontsize=9, loc="center right")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# The NumPy network of Exercise 11.1
# --------------------------------------------------------------------------------------
@dataclass
class NumpyStack:
    """A ReLU stack in NumPy whose layer functions count how often they run.

    ``forward(i, h)`` returns layer i's output ``relu(h @ W_i)``; ``backward(i, g, h_in,
    h_out)`` turns the gradient ``g`` at layer i's output into ``(g_in, dW_i)`` and needs
    the layer's input and output. ``x`` is the input batch, ``upstream`` the gradient of the
    loss with respect to the last output.
    """

    weights: list[np.ndarray]
    x: np.ndarray
    upstream: np.ndarray
    forward_calls: int = 0
    backward_calls: int = 0

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    def forward(self, i: int, h: np.ndarray) -> np.ndarray:
        self.forward_calls += 1
        return np.maximum(h @ self.weights[i], 0.0)

    def backward(
        self, i: int, g: np.ndarray, h_in: np.ndarray, h_out: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        self.backward_calls += 1
        gz = g * (h_out > 0)
        return gz @ self.weights[i].T, h_in.T @ gz


def numpy_stack(depth: int, width: int, batch: int, seed: int = 0) -> NumpyStack:
    """A fresh :class:`NumpyStack` with N(0, 2/width) weights and standard-normal data."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=(width, width)) * math.sqrt(2.0 / width) for _ in range(depth)]
    x = rng.normal(size=(batch, width))
    upstream = rng.normal(size=(batch, width))
    return NumpyStack(weights, x, upstream)


def plain_backward(
    x: np.ndarray,
    n_layers: int,
    forward: Callable[[int, np.ndarray], np.ndarray],
    backward: Callable[..., tuple[np.ndarray, np.ndarray]],
    upstream: np.ndarray,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Ordinary backprop: keep every layer's output, then walk back. Returns (dx, [dW_i])."""
    hs = [x]
    for i in range(n_layers):
        hs.append(forward(i, hs[-1]))
    g = upstream
    dWs: list[Any] = [None] * n_layers
    for i in reversed(range(n_layers)):
        g, dWs[i] = backward(i, g, hs[i], hs[i + 1])
    return g, dWs
