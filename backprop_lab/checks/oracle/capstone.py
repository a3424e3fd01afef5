"""Chapter 15 (the complete picture): 15.1 a new op for the engine, the 1-D convolution
(forward, VJP, JVP, formulas); 15.2 the backward rule of the cosine similarity of rows (a
composite: it replaced a copy of exercise 10.3's row normalisation); 15.3 the matrix
product FLOPs of a transformer training step, predicted."""

from __future__ import annotations

import numpy as np

from backprop_lab import numdiff
from backprop_lab.checks.drivers.capstone import cosine_rows
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle._chapter_specs import LabeledValueSpec
from backprop_lab.checks.oracle.spec import (
    ENGINE_GRADIENTS,
    FINITE_DIFFERENCES,
    BackwardSpec,
    Bug,
    Case,
    Cost,
)

FORBIDDEN = ENGINE_GRADIENTS + FINITE_DIFFERENCES


# --------------------------------------------------------------------------- 15.1
def conv1d_reference(x, w):
    """y[b, o, t] = sum_c sum_k w[o, c, k] x[b, c, t + k], by explicit loops over t and k."""
    B, _, T = x.shape
    C_out, _, K = w.shape
    y = np.zeros((B, C_out, T - K + 1))
    for t in range(T - K + 1):
        for k in range(K):
            y[:, :, t] += x[:, :, t + k] @ w[:, :, k].T
    return y


def _conv_draw(rng, index):
    B, C_in, C_out, T, K = [(2, 3, 4, 7, 3), (3, 2, 2, 6, 2), (1, 1, 3, 5, 5)][index]
    x = rng.standard_normal((B, C_in, T))
    w = rng.standard_normal((C_out, C_in, K))
    return {
        "x": x,
        "w": w,
        "g": rng.standard_normal((B, C_out, T - K + 1)),
        "tx": rng.standard_normal(x.shape),
        "tw": rng.standard_normal(w.shape),
    }


def _conv_reference(c: Case):
    y = conv1d_reference(c.x, c.w)
    gx, gw = numdiff.numerical_vjp(conv1d_reference, [c.x, c.w], c.g)
    # the op is linear in each input, so a centered difference along one input's tangent is
    # exact up to rounding, whatever the step: (f(x + v) - f(x - v)) / 2
    ty_x = (conv1d_reference(c.x + c.tx, c.w) - conv1d_reference(c.x - c.tx, c.w)) / 2
    ty_w = (conv1d_reference(c.x, c.w + c.tw) - conv1d_reference(c.x, c.w - c.tw)) / 2
    return y, gx, gw, gx, gw, ty_x + ty_w, ty_x, ty_w, np.array(1.0)


def _flipped(x, w):
    return conv1d_reference(x, w[:, :, ::-1])


register(
    LabeledValueSpec(
        id="15.1",
        title="conv1d_forward",
        signature="conv1d_forward(xp, x, w), conv1d_vjp(xp, g, saved, needs), "
        "conv1d_jvp(xp, tangents, inputs, out), conv1d_formulas()",
        inputs={"x": (2, 3, 7), "w": (4, 3, 3), "g": (2, 4, 5), "tx": (2, 3, 7), "tw": (4, 3, 3)},
        outputs=("y", "gx", "gw", "gx_alone", "gw_alone", "ty", "ty_x", "ty_w", "formulas"),
        arg_labels=("x", "w", "upstream", "tangent_x", "tangent_w"),
        cases=3,
        draw=_conv_draw,
        reference=_conv_reference,
        driver="op_rules",
        answers=4,
        rtol=1e-6,
        bugs=[
            Bug(
                "kernel flipped",
                "This is the convolution with the kernel flipped (w[..., K-1-k]): the op "
                "here, like the deep-learning libraries' 'convolution', pairs w[o, c, k] "
                "with x[b, c, t + k].",
                variant=lambda c: (_flipped(c.x, c.w),) + (None,) * 8,
                outputs=("y",),
            ),
            Bug(
                "weight gradient not summed over the batch",
                "gw has one kernel per example: the same w is used for every example in "
                "the batch, so sum the contributions over b (and over t).",
                predicate=lambda c, got: got["gw"] is not None and got["gw"].ndim == 4,
                outputs=("gw",),
            ),
            Bug(
                "input gradient not shifted",
                "Every input position t + k received the gradient of output t: the "
                "contribution of kernel offset k belongs at x[..., k : k + T_out], so each "
                "offset adds into a shifted window of gx.",
                variant=lambda c: (None, _unshifted_gx(c)) + (None,) * 7,
                outputs=("gx",),
            ),
            Bug(
                "JVP ignores the kernel's tangent",
                "The JVP pushes only the input's tangent: the op depends on both inputs, so "
                "y_dot = conv(x_dot, w) + conv(x, w_dot), with a term for each tangent that "
                "is not None.",
                variant=lambda c: (
                    (None,) * 5
                    + (_conv_reference(c)[6], None, np.zeros_like(_conv_reference(c)[7]), None)
                ),  # fmt: skip
                outputs=("ty", "ty_w"),
            ),
            Bug(
                "input gradient assigned, not accumulated",
                "The windows of neighbouring kernel offsets overlap, so every offset k adds "
                "its share into gx[..., k : k + T_out] (+=); an assignment keeps only the "
                "last offset's share where the windows overlap.",
                variant=lambda c: (None, _assigned_gx(c), None, _assigned_gx(c)) + (None,) * 5,
                outputs=("gx", "gx_alone"),
            ),
            Bug(
                "JVP of both tangents at once",
                "With both tangents given, the JVP is conv(x_dot, w) + conv(x, w_dot), one "
                "term per input (the product rule: the op is linear in each input "
                "separately), not conv(x_dot, w_dot).",
                variant=lambda c: (None,) * 5 + (conv1d_reference(c.tx, c.tw), None, None, None),
                outputs=("ty",),
            ),
            Bug(
                "formulas missing",
                "conv1d_formulas() must return a dict with the LaTeX strings 'formula', "
                "'vjp_formula' and 'jvp_formula', none of them empty.",
                predicate=lambda c, got: float(got["formulas"]) != 1.0,
                outputs=("formulas",),
            ),
        ],
        forbidden=FORBIDDEN,
    )
)


def _assigned_gx(c: Case):
    K = c.w.shape[2]
    T_out = c.g.shape[2]
    gx = np.zeros_like(c.x)
    for k in range(K):
        gx[:, :, k : k + T_out] = np.einsum("oc,bot->bct", c.w[:, :, k], c.g)
    return gx


def _unshifted_gx(c: Case):
    K = c.w.shape[2]
    T_out = c.g.shape[2]
    gx = np.zeros_like(c.x)
    for k in range(K):
        gx[:, :, :T_out] += np.einsum("oc,bot->bct", c.w[:, :, k], c.g)
    return gx


# --------------------------------------------------------------------------- 15.2
def _cosine_draw(rng, index):
    a = rng.standard_normal((5, 4))
    b = rng.standard_normal((5, 4))
    a[0] *= 0.1  # rows of different lengths: a bug in the power of a norm shows
    b[1] *= 3.0
    b[2] = (0.7 if index == 0 else -2.5) * a[2]  # parallel rows: the cosine is extreme there
    return {"a": a, "b": b}


def _cosine_large(rng):
    return {"a": rng.standard_normal((2000, 500)), "b": rng.standard_normal((2000, 500))}


def _cos_parts(c: Case):
    na = np.linalg.norm(c.a, axis=1, keepdims=True)
    nb = np.linalg.norm(c.b, axis=1, keepdims=True)
    ua, ub = c.a / na, c.b / nb
    s = np.sum(ua * ub, axis=1, keepdims=True)
    return na, nb, ua, ub, s, c.upstream[:, None]


def _cos_variant(c: Case, *, sign=-1.0, power=1, upstream=True, project=True, dot=False):
    """Hand-written rules with one slip each (trusted side: the oracle is hidden from the
    grading kernel)."""
    na, nb, ua, ub, s, g = _cos_parts(c)
    g = g if upstream else np.ones_like(g)
    if dot:
        return g * c.b, g * c.a
    if not project:
        return g * ub / na, g * ua / nb
    return g * (ub + sign * s * ua) / na**power, g * (ua + sign * s * ub) / nb**power


def _cos_swapped(c: Case):
    da, db = c.expected
    return db, da


register(
    BackwardSpec(
        id="15.2",
        title="cosine_vjp",
        signature="cosine_vjp(upstream, a, b)",
        forward=cosine_rows,
        inputs={"a": (5, 4), "b": (5, 4)},
        outputs=("da", "db"),
        draw=_cosine_draw,
        cases=2,
        bugs=[
            Bug(
                "the dot product's gradient",
                "It is upstream * b (and upstream * a): the gradient of the dot product alone. "
                "The cosine divides by both norms, and they depend on a and b too.",
                variant=lambda c: _cos_variant(c, dot=True),
            ),
            Bug(
                "norms held fixed",
                "It treats the norms as constants: upstream * b / (||a|| ||b||). A change of "
                "a along itself only stretches a and leaves the cosine alone, so da must be "
                "orthogonal to a in every row: remove the part along a (Exercise 10.3's rule "
                "does that).",
                variant=lambda c: _cos_variant(c, project=False),
            ),
            Bug(
                "projection added",
                "The part along the unit vector is added where it must be removed: "
                "da_n is proportional to b_hat - s_n a_hat, which is orthogonal to a_n.",
                variant=lambda c: _cos_variant(c, sign=+1.0),
            ),
            Bug(
                "divided by the squared norm",
                "It is divided by ||a||^2 (and ||b||^2): the unit vector a / ||a|| scales a's "
                "small changes by 1 / ||a||, once.",
                variant=lambda c: _cos_variant(c, power=2),
            ),
            Bug(
                "upstream left out",
                "The upstream gradient is missing: each row's gradient is upstream_n times "
                "the row's local derivative (upstream[:, None] broadcasts it over the row).",
                variant=lambda c: _cos_variant(c, upstream=False),
            ),
            Bug(
                "da and db swapped",
                "da and db are swapped: a's gradient is the part of b_hat across a, divided "
                "by ||a||; b's is the part of a_hat across b, divided by ||b||.",
                variant=_cos_swapped,
            ),
        ],
        cost=Cost(multiple=40, inputs={"a": (2000, 500), "b": (2000, 500)}, draw=_cosine_large),
        forbidden=FORBIDDEN,
    )
)


# --------------------------------------------------------------------------- 15.3
def _flops_draw(rng, index):
    sizes = [(4, 6, 8, 16, 5), (2, 9, 12, 20, 7), (3, 5, 4, 10, 3)][index]
    return dict(zip(("B", "T", "d", "hidden", "vocab"), (np.array(s) for s in sizes)))


def _counted_matmul_flops(c: Case):
    """Run the model's step under a listener that counts matmul FLOPs both ways."""
    import backprop_lab as bl
    from backprop_lab.explore import transformer as tf

    B, T, d, hidden, vocab = (int(c.inputs[n]) for n in ("B", "T", "d", "hidden", "vocab"))
    model = tf.TinyTransformer(vocab=vocab, d=d, hidden=hidden, max_len=T, seed=0)
    tokens, targets = tf.copy_back_task(B, T, vocab, seed=1)
    with bl.trace() as tr:
        model.loss(tokens, targets).backward()
    forward = backward = 0
    for ev in tr.forward:
        if ev.op_name == "matmul":
            forward += 2 * int(ev.input_shapes[0][-1]) * int(np.prod(ev.output_shape))
    for ev in tr.backward:
        if ev.op_name == "matmul":
            f = 2 * int(ev.forward.input_shapes[0][-1]) * int(np.prod(ev.forward.output_shape))
            backward += f * sum(g is not None for g in ev.input_grads)
    return forward, backward


def _flops_reference(c: Case):
    f, b = _counted_matmul_flops(c)
    return np.array(float(f)), np.array(float(b))


def _flops_bug(kind):
    def variant(c: Case):
        B, T, d, hidden, vocab = (int(c.inputs[n]) for n in ("B", "T", "d", "hidden", "vocab"))
        rows = B * T
        embed = 2 * rows * vocab * d
        rest = 8 * rows * d * d + 4 * B * T * T * d + 4 * rows * d * hidden + 2 * rows * d * vocab
        if kind == "backward_once":
            return np.array(float(embed + rest)), np.array(float(embed + rest))
        if kind == "backward_twice_everywhere":
            return None, np.array(float(2 * (embed + rest)))
        if kind == "no_attention_products":
            rest -= 4 * B * T * T * d
            return np.array(float(embed + rest)), np.array(float(embed + 2 * rest))
        if kind == "attention_once_per_batch":
            rest -= 4 * (B - 1) * T * T * d
            return np.array(float(embed + rest)), np.array(float(embed + 2 * rest))
        raise ValueError(kind)

    return variant


register(
    LabeledValueSpec(
        id="15.3",
        title="predict_matmul_flops",
        signature="predict_matmul_flops(B, T, d, hidden, vocab)",
        inputs={"B": (), "T": (), "d": (), "hidden": (), "vocab": ()},
        outputs=("forward", "backward"),
        arg_labels=("B", "T", "d", "hidden", "vocab"),
        cases=3,
        draw=_flops_draw,
        arguments=lambda c: tuple(int(c.inputs[n]) for n in ("B", "T", "d", "hidden", "vocab")),
        reference=_flops_reference,
        rtol=1e-12,
        atol=0.0,
        bugs=[
            Bug(
                "backward counted once",
                "The backward pass is counted like the forward pass. A product whose two "
                "inputs both need a gradient costs two products backward (one for each "
                "input's gradient), so backward is about twice forward.",
                variant=_flops_bug("backward_once"),
                outputs=("backward",),
            ),
            Bug(
                "every product counted twice backward",
                "Every product is counted twice in the backward pass, the embedding too. "
                "Its input is the one-hot matrix of the tokens, which needs no gradient: "
                "that product costs one product backward.",
                variant=_flops_bug("backward_twice_everywhere"),
                outputs=("backward",),
            ),
            Bug(
                "attention's T x T products left out",
                "The two products inside attention are missing: Q K^T and P V, each "
                "2 T^2 d FLOPs per sequence.",
                variant=_flops_bug("no_attention_products"),
            ),
            Bug(
                "attention counted for one sequence",
                "Attention's products are counted for one sequence: Q K^T and P V are "
                "batched, one T x T product per sequence, so multiply by B.",
                variant=_flops_bug("attention_once_per_batch"),
            ),
        ],
        forbidden=ENGINE_GRADIENTS
        + (
            "backprop_lab.count",
            "backprop_lab.Trace",
            # the counter itself, and the FLOP rule it applies (a prediction counts nothing)
            "backprop_lab.instrument.counters.Counter",
            "backprop_lab.instrument.counters",
        ),
    )
)
