"""Chapter 11 (memory and gradient checkpointing): segment checkpointing by hand (11.1), the
meter's peak predicted (11.2), the best segment count under a memory budget (11.3).

Expected values come from finite differences (11.1, small networks), from plain
backpropagation through the same trusted layer functions (11.1, the large network), and
from measuring ``bl.checkpoint_sequential`` with the memory meter and ``bl.count`` (11.2,
11.3): never from a copy of an answer.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from backprop_lab import numdiff
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import ENGINE_GRADIENTS, FINITE_DIFFERENCES, Bug, ValueSpec
from backprop_lab.explore import checkpointing as ck

# Measuring instead of predicting: 11.2 and 11.3 ask for reasoning, so an answer may not run
# the meter, a checkpointed step or the engine's checkpointing.
MEASURING = (
    "backprop_lab.explore.checkpointing.measure",
    "backprop_lab.explore.checkpointing.run_step",
    "backprop_lab.explore.checkpointing.time_steps",
    "backprop_lab.explore.checkpointing.timeline_figure",
    "backprop_lab.explore.checkpointing.MemoryTimeline",
    "backprop_lab.instrument.memory",
    "backprop_lab.instrument.checkpoint",
)


# ------------------------------------------------------------------------------------ 11.1
def _stack_output(x, *weights):
    h = x
    for W in weights:
        h = np.maximum(h @ W, 0.0)
    return h


def _draw_schedule(rng, k):
    """Two small networks (gradients by finite differences), then a 64-layer one whose
    memory and forward calls are measured."""
    if k < 2:
        L, B, w, seg = [(5, 3, 3, 2), (7, 2, 3, 3)][k]
        memory_limit = None
    else:
        L, B, w = 64, 256, 16
        seg = int(rng.choice([4, 6, 8, 10, 16]))
        # checkpoints + one segment + the weight gradients + a few temporaries
        memory_limit = math.ceil(L / seg) + seg + L * w * w / (B * w) + 4
    weights = [rng.normal(size=(w, w)) * math.sqrt(2.0 / w) for _ in range(L)]
    return {
        "weights": weights,
        "x": rng.normal(size=(B, w)),
        "g_out": rng.normal(size=(B, w)),
        "k": seg,
        "memory_limit": memory_limit,
        "forward_limit": 2 * L,
    }


def _plain(case):
    net = ck.NumpyStack([W.copy() for W in case.weights], case.x.copy(), case.g_out.copy())
    dx, dWs = ck.plain_backward(net.x, net.n_layers, net.forward, net.backward, net.upstream)
    return dx, np.stack(dWs)


def _expected_schedule(case):
    if case.memory_limit is None:
        grads = numdiff.numerical_vjp(
            _stack_output, [case.x.copy(), *[W.copy() for W in case.weights]], case.g_out
        )
        dx, dW = grads[0], np.stack(grads[1:])
    else:
        dx, dW = _plain(case)
    return dx, dW, np.ones(1), np.ones(1)


def _segments_restart(case):
    """Each segment backpropagated from ``upstream`` itself instead of the gradient that
    reaches its output from the later segments."""
    L, k = len(case.weights), case.k
    dWs = []
    dx = None
    for start in range(0, L, k):
        stop = min(start + k, L)
        h = case.x
        for W in case.weights[:start]:
            h = np.maximum(h @ W, 0.0)
        net = ck.NumpyStack([W.copy() for W in case.weights[start:stop]], h, case.g_out)
        g, part = ck.plain_backward(h, net.n_layers, net.forward, net.backward, net.upstream)
        dWs.extend(part)
        if start == 0:
            dx = g
    return dx, np.stack(dWs), None, None


def _num(x) -> float:
    """The one number in ``x`` (a number or an array of one entry)."""
    return float(np.asarray(x, dtype=np.float64).reshape(-1)[0])


def _peak_over(case, got):
    """The measured peak in activations (None when within the limit or not measured)."""
    ratio = got.get("peak_memory")
    if case.memory_limit is None or ratio is None or _num(ratio) <= 1.0:
        return None
    return _num(ratio) * case.memory_limit


register(
    ValueSpec(
        id="11.1",
        title="checkpointed_backward",
        signature="checkpointed_backward(x, n_layers, forward, backward, upstream, k)",
        inputs={
            "weights": (),
            "x": (),
            "g_out": (),
            "k": (),
            "memory_limit": (),
            "forward_limit": (),
        },
        outputs=("dx", "dW", "peak_memory", "forward_calls"),
        cases=3,
        draw=_draw_schedule,
        driver="checkpoint_schedule",
        reference=_expected_schedule,
        rtol=1e-6,
        atol=1e-8,
        bugs=[
            Bug(
                "keeps every activation",
                "Your function keeps about as many activations alive as the network has "
                "layers, which is what plain backprop does: during the forward pass keep only "
                "the inputs of layers 0, k, 2k, ..., and in the backward pass recompute one "
                "segment at a time from its checkpoint, letting it go before the next.",
                predicate=lambda c, got: (
                    c.memory_limit is None or (_peak_over(c, got) or 0.0) >= 0.8 * len(c.weights)
                ),
                outputs=("peak_memory",),
            ),
            Bug(
                "more than one segment's activations",
                "Your function's peak memory is above about L/k + k activations, though below "
                "plain backprop's L: does it keep the outputs of the first forward pass, or a "
                "recomputed segment while the next one is recomputed? Only the checkpoints and "
                "the one segment being backpropagated need to be alive.",
                predicate=lambda c, got: (
                    c.memory_limit is None
                    or (_peak_over(c, got) or len(c.weights)) < 0.8 * len(c.weights)
                ),
                outputs=("peak_memory",),
            ),
            Bug(
                "recomputes from the input",
                "Your function calls forward about L^2/2 times: it recomputes every layer "
                "from the network's input. Recompute each segment once, from its own "
                "checkpoint, during the backward pass: at most 2L forward calls in all.",
                predicate=lambda c, got: (
                    _num(got.get("forward_calls", 0.0)) * c.forward_limit
                    >= 0.2 * len(c.weights) ** 2
                ),
                outputs=("forward_calls",),
            ),
            Bug(
                "weight gradients in reverse order",
                "The weight gradients are right but in reverse order: return them as "
                "[dW_0, ..., dW_{L-1}], layer 0 first, although the backward pass finds them "
                "last layer first.",
                variant=lambda c: (None, c.expected[1][::-1], None, None),
                outputs=("dW",),
            ),
            Bug(
                "each segment starts from upstream",
                "Each segment is backpropagated from upstream itself: the gradient that "
                "enters a segment's last layer is the one that left the first layer of the "
                "segment after it, so carry it from segment to segment.",
                variant=_segments_restart,
                outputs=("dx", "dW"),
            ),
        ],
        forbidden=ENGINE_GRADIENTS
        + FINITE_DIFFERENCES
        + ("backprop_lab.instrument.checkpoint", "backprop_lab.explore.checkpointing.run_step"),
    )
)


# ------------------------------------------------------------------------------------ 11.2
@functools.lru_cache(maxsize=4096)
def measured(n_layers: int, segments: int) -> tuple[float, int]:
    """(peak live activations, recomputed FLOPs) of one checkpointed step, by measurement."""
    m = ck.measure(n_layers, width=2, batch=1, segments=segments)
    return m.peak_activations, m.recompute_flops


def _chunks(L, s):
    return ck.chunk_sizes(L, s)


def _draw_peak(rng, k):
    """Six kinds of setting: divisible, an uneven last chunk, fewer chunks than segments,
    a layer per chunk, one segment, and anything."""
    while True:
        L = int(rng.integers(4, 41))
        s = int(rng.integers(1, L + 3))
        chunks = _chunks(L, s)
        kind = [
            len(chunks) == s and len(set(chunks)) == 1 and 1 < s < L,
            len(chunks) == s and chunks[-1] < chunks[0],
            1 < len(chunks) < s,
            s >= L,
            s == 1,
            True,
        ][k]
        if kind:
            return {"n_layers": L, "segments": s}


def _peak_variant(formula):
    def variant(c):
        chunks = _chunks(c.n_layers, c.segments)
        return np.array([formula(c.n_layers, c.segments, len(chunks), chunks[0], chunks[-1])])

    return variant


register(
    ValueSpec(
        id="11.2",
        title="predicted_peak",
        signature="predicted_peak(n_layers, segments)",
        inputs={"n_layers": (), "segments": ()},
        outputs=("peak",),
        cases=6,
        draw=_draw_peak,
        driver="number",
        reference=lambda c: np.array([measured(c.n_layers, c.segments)[0]]),
        rtol=0.0,
        atol=1e-9,
        bugs=[
            Bug(
                "the model L/k + k",
                "These are the model L/k + k, not the meter's count: count arrays, not a "
                "formula. At the end of the forward pass, which checkpoints and which "
                "activations are alive? And while one chunk is recomputed?",
                variant=_peak_variant(lambda L, s, n, k, r: L / k + k),
            ),
            Bug(
                "the model L/s + s",
                "These are L/segments + segments, the model written with the segment count; "
                "the meter counts whole arrays, and checkpoint_sequential cuts the layers into "
                "chunks of ceil(L/segments), which can be fewer than the segments asked for.",
                variant=_peak_variant(lambda L, s, n, k, r: L / s + s),
            ),
            Bug(
                "segments instead of chunks",
                "You counted with the number of segments asked for, but checkpoint_sequential "
                "can make fewer chunks (16 layers in 5 segments gives 4 chunks of 4): use "
                "len(ck.chunk_sizes(n_layers, segments)).",
                variant=_peak_variant(
                    lambda L, s, n, k, r: L if n == 1 else max(s - 1 + r, s - 2 + k)
                ),
            ),
            Bug(
                "end of the forward pass only",
                "Right at the end of the forward pass, but the peak can come later: while a "
                "full-length chunk is recomputed, its activations can outnumber the last "
                "(shorter) chunk's.",
                variant=_peak_variant(lambda L, s, n, k, r: L if n == 1 else n - 1 + r),
            ),
            Bug(
                "a checkpoint too many during recomputation",
                "While chunk j is recomputed, the checkpoint of chunk j+1 has already been "
                "freed (backward went through that chunk first): count only the checkpoints "
                "of chunks 2..j.",
                variant=_peak_variant(
                    lambda L, s, n, k, r: L if n == 1 else max(n - 1 + r, n - 1 + k)
                ),
            ),
            Bug(
                "the input batch counted",
                "One too many: the input batch is not counted (it is an input of the "
                "computation, like the weights), and the first chunk needs no checkpoint of "
                "its own.",
                variant=lambda c: c.expected[0] + 1,
            ),
            Bug(  # last: a single number has no telling ratio
                "no single slip",
                "No single slip explains your numbers. Count whole arrays, not a formula, at "
                "the two moments the exercise names (the end of the forward pass, and the "
                "recomputation of one chunk), and mind the case of a single chunk.",
                predicate=lambda c, got: got.get("peak") is not None,
            ),
        ],
        forbidden=MEASURING,
    )
)


# ------------------------------------------------------------------------------------ 11.3
def _fits(L, batch, width, budget, s, bytes_per_number=8):
    return measured(L, s)[0] * bytes_per_number * batch * width <= budget


def _best(L, batch, width, budget, bytes_per_number=8):
    best, cost = 0, None
    for s in range(1, L + 1):
        if _fits(L, batch, width, budget, s, bytes_per_number):
            r = measured(L, s)[1]
            if cost is None or r < cost:
                best, cost = s, r
    return best


def _smallest_fitting(L, batch, width, budget):
    return next((s for s in range(1, L + 1) if _fits(L, batch, width, budget, s)), 0)


def _least_memory(L, batch, width, budget):
    s = min(range(1, L + 1), key=lambda s: (measured(L, s)[0], s))
    return s if _fits(L, batch, width, budget, s) else 0


@functools.lru_cache(maxsize=256)
def _lowest(L):
    return min(measured(L, s)[0] for s in range(1, L + 1))


def _draw_budget(rng, k):
    """Case 0: 25 layers and a budget of 9 activations, where the fewest segments that fit
    (4: chunks 7, 7, 7, 4) recompute more than 5 segments of 5; 1: a budget the plain step
    meets; 2: no count fits; 3: a budget between the smallest peak and the plain one."""
    batch, width = int(rng.choice([16, 32, 64, 128])), int(rng.choice([32, 64, 128]))
    act = 8 * batch * width
    while True:
        L = 25 if k == 0 else int(rng.integers(8, 25))
        lowest = _lowest(L)
        if k == 0:
            budget = int(9 * act + rng.integers(0, act))
        elif k == 1:
            budget = int(L * act + rng.integers(0, act))
        elif k == 2:
            budget = int((lowest - 1) * act + rng.integers(0, act))
        else:
            budget = int(rng.integers(int(lowest), L) * act + rng.integers(0, act))
        if k == 3 and _best(L, batch, width, budget) in (0, 1):
            continue
        return {"n_layers": L, "batch": batch, "width": width, "budget_bytes": budget}


def _args(c):
    return c.n_layers, c.batch, c.width, c.budget_bytes


register(
    ValueSpec(
        id="11.3",
        title="best_segments",
        signature="best_segments(n_layers, batch, width, budget_bytes)",
        inputs={"n_layers": (), "batch": (), "width": (), "budget_bytes": ()},
        outputs=("segments",),
        cases=4,
        draw=_draw_budget,
        driver="number",
        reference=lambda c: np.array([float(_best(*_args(c)))]),
        rtol=0.0,
        atol=1e-9,
        bugs=[
            Bug(
                "the fewest segments that fit",
                "You return the fewest segments that fit. Usually that recomputes least, but "
                "not always: recomputation is every layer except the last chunk's, so a short "
                "last chunk costs more (25 layers in 4 segments are chunks of 7, 7, 7, 4 and "
                "recompute 21 layers; 5 segments of 5 recompute 20).",
                variant=lambda c: np.array([float(_smallest_fitting(*_args(c)))]),
            ),
            Bug(
                "the least memory",
                "You return the setting with the smallest peak. It fits whenever anything "
                "fits, but it is rarely the cheapest: with memory to spare, fewer segments "
                "recompute fewer layers.",
                variant=lambda c: np.array([float(_least_memory(*_args(c)))]),
            ),
            Bug(
                "4 bytes a number",
                "You counted 4 bytes a number; the stack is float64, 8 bytes a number, so "
                "one activation is 8 * batch * width bytes.",
                variant=lambda c: np.array([float(_best(*_args(c), bytes_per_number=4))]),
            ),
            Bug(
                "no 0 when nothing fits",
                "Right whenever a segment count fits, but when none does (the budget is "
                "below the smallest possible peak) return 0.",
                predicate=lambda c, got: (
                    (_num(c.expected[0]) == 0) != (_num(got["segments"]) == _num(c.expected[0]))
                ),
            ),
        ],
        forbidden=MEASURING,
    )
)
