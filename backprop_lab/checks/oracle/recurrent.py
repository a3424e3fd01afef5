"""Chapter 12 (backpropagation through time): BPTT by hand (12.1), the worst-case
amplification over d steps (12.2), the LSTM cell path backward (12.3).

Expected values come from finite differences of the forward passes (12.1, 12.3) and from
the engine's Jacobian of the unrolled steps (12.2). The planted bugs are computed by the
engine on a modified graph (a state detached, a tanh slope taken from another step, one
private copy of a shared weight per step), never by a hand-written backward pass.
"""

from __future__ import annotations

import numpy as np

import backprop_lab as bl
from backprop_lab.checks.drivers.recurrent import cell_states, rnn_states
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import (
    ENGINE_GRADIENTS,
    FINITE_DIFFERENCES,
    BackwardSpec,
    Bug,
    Cost,
    ValueSpec,
)

CHAPTER_HELPERS = (
    "backprop_lab.explore.recurrent.copy_gradients",
    "backprop_lab.explore.recurrent.loss_term_contributions",
    "backprop_lab.explore.recurrent.truncated_gradient",
    "backprop_lab.explore.recurrent.state_gradient_norms",
)
FORBIDDEN = ENGINE_GRADIENTS + FINITE_DIFFERENCES + CHAPTER_HELPERS


def _surrogate(a, slope):
    """Has the value tanh(a) but the derivative ``slope`` (a constant array) with respect to a."""
    return bl.tanh(a).detach() + (a - a.detach()) * slope


# ------------------------------------------------------------------------------------ 12.1
def _draw_rnn(rng, k):
    T, B, d, n = 5, 2, 3, 4
    return {
        "xs": rng.uniform(-1.0, 1.0, size=(T, B, d)),
        "h0": rng.uniform(-0.5, 0.5, size=(B, n)),
        "Wx": rng.uniform(-0.7, 0.7, size=(d, n)),
        "Wh": rng.uniform(-0.7, 0.7, size=(n, n)),
        "b": rng.uniform(-0.3, 0.3, size=(n,)),
    }


def _draw_rnn_large(rng):
    """The cost check's long sequence (T = 200), with weights small enough that the network
    forgets (recurrent gain below 1): drawn like the small cases, 200 tanh steps with
    uniform(-0.6, 0.6) weights are chaotic, and a finite difference along a direction that
    moves every entry at once then no longer measures the derivative of a right answer."""
    T, B, d, n = 200, 16, 8, 32
    return {
        "xs": rng.uniform(-1.0, 1.0, size=(T, B, d)),
        "h0": rng.uniform(-0.5, 0.5, size=(B, n)),
        "Wx": rng.uniform(-1.0, 1.0, size=(d, n)) / np.sqrt(d),
        "Wh": rng.uniform(-1.0, 1.0, size=(n, n)) * 0.5 / np.sqrt(n),
        "b": rng.uniform(-0.3, 0.3, size=(n,)),
    }


def _rnn_variant(c, mode: str):
    """The gradients the engine gives on a modified graph of the case's network:

    * ``"detach"``: each H_{t-1} detached where step t uses it (the future term dropped);
    * ``"slope_prev"``: the tanh slope of step t taken as 1 - H_{t-1}^2;
    * ``"slope_twice"``: the slope as 1 - tanh(H_t)^2 (tanh applied to the output again);
    * ``"first"`` / ``"last"``: the weights receive only the first / last step's term.
    """
    T = len(c.xs)
    xs = [bl.tensor(x, requires_grad=True) for x in c.xs]
    h0 = bl.tensor(c.h0, requires_grad=True)
    shared = [bl.tensor(v, requires_grad=True) for v in (c.Wx, c.Wh, c.b)]
    copies = [[bl.tensor(v, requires_grad=True) for v in (c.Wx, c.Wh, c.b)] for _ in range(T)]
    use_copies = mode in ("first", "last")
    h, loss = h0, None
    for t in range(T):
        Wx, Wh, b = copies[t] if use_copies else shared
        prev = h.detach() if mode == "detach" and t > 0 else h
        a = prev @ Wh + xs[t] @ Wx + b
        if mode == "slope_prev":
            h = _surrogate(a, 1.0 - np.asarray(prev.data) ** 2)
        elif mode == "slope_twice":
            h = _surrogate(a, 1.0 - np.tanh(np.tanh(np.asarray(a.data))) ** 2)
        else:
            h = bl.tanh(a)
        term = bl.sum(h * c.upstream[t])
        loss = term if loss is None else loss + term
    loss.backward()

    def grad(t):
        return np.zeros(t.shape) if t.grad is None else np.array(t.grad)

    dxs = np.stack([grad(x) for x in xs])
    if use_copies:
        Wx, Wh, b = copies[0] if mode == "first" else copies[-1]
        return None, None, grad(Wx), grad(Wh), grad(b)
    return dxs, grad(h0), *(grad(v) for v in shared)


register(
    BackwardSpec(
        id="12.1",
        title="rnn_backward",
        forward=rnn_states,
        inputs={"xs": (5, 2, 3), "h0": (2, 4), "Wx": (3, 4), "Wh": (4, 4), "b": (4,)},
        outputs=("dxs", "dh0", "dWx", "dWh", "db"),
        backward_order=("dWh", "dWx", "db", "dxs", "dh0"),
        draw=_draw_rnn,
        low=-0.6,
        high=0.6,
        bugs=[
            Bug(
                "future term dropped",
                "This is the gradient with only the direct term dL_t/dH_t at each step: the "
                "state H_t also feeds H_{t+1}, so the total gradient at H_t adds what comes "
                "back from step t+1 (the carry, through Wh and tanh' of step t+1).",
                variant=lambda c: _rnn_variant(c, "detach"),
            ),
            Bug(
                "tanh derivative at the previous step",
                "The tanh slope is taken at the previous state, 1 - H_{t-1}^2; step t's "
                "nonlinearity is H_t = tanh(A_t), so its slope is 1 - H_t^2, from the same "
                "step's output.",
                variant=lambda c: _rnn_variant(c, "slope_prev"),
            ),
            Bug(
                "tanh applied twice",
                "The slope is computed as 1 - tanh(H_t)^2, tanh applied to a value that is "
                "already tanh(A_t): it is 1 - H_t^2.",
                variant=lambda c: _rnn_variant(c, "slope_twice"),
            ),
            Bug(
                "only the first step's weight gradient",
                "This is only step 1's contribution: each step adds a term to the shared "
                "weights' gradients, so accumulate (+=) over the steps instead of assigning.",
                variant=lambda c: _rnn_variant(c, "first"),
                outputs=("dWx", "dWh", "db"),
            ),
            Bug(
                "only the last step's weight gradient",
                "This is only step T's contribution: each step adds a term to the shared "
                "weights' gradients, so accumulate (+=) over the steps instead of assigning.",
                variant=lambda c: _rnn_variant(c, "last"),
                outputs=("dWx", "dWh", "db"),
            ),
        ],
        cost=Cost(
            multiple=12,
            inputs={"xs": (200, 16, 8), "h0": (16, 32), "Wx": (8, 32), "Wh": (32, 32), "b": (32,)},
            draw=_draw_rnn_large,
        ),
        forbidden=FORBIDDEN,
    )
)


# ------------------------------------------------------------------------------------ 12.2
def _draw_amplification(rng, k):
    T, n, d = 6, 4, 3
    xs = rng.normal(size=(T, 1, d))
    h0 = rng.uniform(-0.5, 0.5, size=(1, n))
    Wx = rng.uniform(-0.7, 0.7, size=(d, n))
    Wh = rng.normal(size=(n, n)) * 0.9
    b = rng.uniform(-0.3, 0.3, size=(n,))
    hs = np.concatenate([h0, rnn_states(xs, h0, Wx, Wh, b)[:, 0, :]])
    return {"hs": hs, "Wh": Wh, "d": [1, 3, 5][k], "xs": xs, "Wx": Wx, "b": b}


def _step_jacobian(c, s, slope_from_input=False):
    """d h_s / d h_{s-1} (rows: h_s), from the engine, at the case's state h_{s-1}."""

    def step(h):
        a = h @ bl.tensor(c.Wh) + bl.tensor(c.xs[s - 1]) @ bl.tensor(c.Wx) + bl.tensor(c.b)
        if slope_from_input:
            return _surrogate(a, 1.0 - np.asarray(h.data) ** 2)
        return bl.tanh(a)

    n = len(c.Wh)
    return np.asarray(bl.jacobian(step)(c.hs[s - 1][None, :])).reshape(n, n)


def _unrolled_jacobian(c, d):
    """d h_T / d h_{T-d} from the engine, through the last d steps."""
    T = len(c.hs) - 1

    def unroll(h):
        for s in range(T - d + 1, T + 1):
            h = bl.tanh(
                h @ bl.tensor(c.Wh) + bl.tensor(c.xs[s - 1]) @ bl.tensor(c.Wx) + bl.tensor(c.b)
            )
        return h

    n = len(c.Wh)
    if d == 0:
        return np.eye(n)
    return np.asarray(bl.jacobian(unroll)(c.hs[T - d][None, :])).reshape(n, n)


def _top(M):
    return float(np.linalg.svd(M, compute_uv=False)[0])


def _one(fn):
    """A variant that returns one number, as an array of shape (1,) like the answer's."""
    return lambda c: np.array([float(fn(c))])


def _steps(c, slope_from_input=False):
    """The step Jacobians from step T back to step T - d + 1."""
    T = len(c.hs) - 1
    return [_step_jacobian(c, s, slope_from_input) for s in range(T, T - c.d, -1)]


def _product(c, order="right", slope_from_input=False):
    steps = _steps(c, slope_from_input)
    if order == "wrong":
        steps = steps[::-1]
    M = np.eye(len(c.Wh))
    for J in steps:  # right order: J_T J_{T-1} ... J_{T-d+1}
        M = M @ J
    return M


def _untransposed_product(c):
    T = len(c.hs) - 1
    M = np.eye(len(c.Wh))
    for s in range(T, T - c.d, -1):
        M = M @ (np.diag(1.0 - c.hs[s] ** 2) @ c.Wh)
    return M


def _squared_slope_product(c):
    T = len(c.hs) - 1
    M = np.eye(len(c.Wh))
    for s in range(T, T - c.d, -1):
        M = M @ (np.diag((1.0 - c.hs[s] ** 2) ** 2) @ c.Wh.T)
    return M


register(
    ValueSpec(
        id="12.2",
        title="max_amplification",
        signature="max_amplification(hs, Wh, d)",
        inputs={"hs": (), "Wh": (), "d": ()},
        outputs=("amplification",),
        cases=3,
        draw=_draw_amplification,
        driver="number",
        reference=lambda c: np.array([_top(_unrolled_jacobian(c, c.d))]),
        rtol=1e-6,
        atol=1e-9,
        bugs=[
            Bug(
                "product of the per-step bounds",
                "This is the product of each step's largest singular value, the upper bound "
                "of Section 12.3. The exact worst case is the largest singular value of the "
                "product of the step Jacobians: the direction a step stretches most is not "
                "the one the next step stretches most.",
                variant=_one(lambda c: np.prod([_top(J) for J in _steps(c)])),
            ),
            Bug(
                "W_h alone",
                "This is sigma_max(Wh)^d, which ignores the tanh slopes: each step's Jacobian "
                "is Wh (transposed) with each unit scaled by 1 - h_s^2 at that step.",
                variant=_one(lambda c: _top(c.Wh) ** c.d),
            ),
            Bug(
                "eigenvalues instead of singular values",
                "This is the spectral radius (largest |eigenvalue|) of the product. The ratio "
                "of norms is governed by singular values: the worst case is the largest "
                "singular value.",
                variant=_one(
                    lambda c: np.max(np.abs(np.linalg.eigvals(_unrolled_jacobian(c, c.d))))
                ),
            ),
            Bug(
                "Jacobians multiplied in the wrong order",
                "The step Jacobians are multiplied in the reverse order. The gradient at h_T "
                "meets step T's Jacobian first, then step T-1's: the order matters for the "
                "singular values of the product.",
                variant=_one(lambda c: _top(_product(c, order="wrong"))),
            ),
            Bug(
                "tanh slope of the previous step",
                "Each step's tanh slope is taken at its input state h_{s-1}; step s's "
                "Jacobian scales by 1 - h_s^2, the slope at that step's own output.",
                variant=_one(lambda c: _top(_product(c, slope_from_input=True))),
            ),
            Bug(
                "Frobenius norm",
                "This is the Frobenius norm of the product of the step Jacobians (the root of "
                "the sum of all its squared singular values), an upper bound; the worst-case "
                "ratio of two vector norms is the largest singular value alone.",
                variant=_one(lambda c: np.linalg.norm(_unrolled_jacobian(c, c.d))),
            ),
            Bug(
                "smallest singular value",
                "This is the smallest singular value of the product: the gradient that shrinks "
                "most. The question asks for the largest possible ratio.",
                variant=_one(
                    lambda c: np.linalg.svd(_unrolled_jacobian(c, c.d), compute_uv=False)[-1]
                ),
            ),
            Bug(
                "Wh not transposed",
                "Your step Jacobians use Wh where the backward step multiplies by its "
                "transpose: in the row convention delta_{s-1} = delta_s diag(1 - h_s^2) "
                "Wh^T.",
                variant=_one(lambda c: _top(_untransposed_product(c))),
            ),
            Bug(
                "tanh slope squared",
                "Each step's tanh slope enters squared: the step Jacobian scales by "
                "1 - h_s^2 once (it is already the derivative of tanh).",
                variant=_one(lambda c: _top(_squared_slope_product(c))),
            ),
            Bug(
                "one step too few",
                "This covers d - 1 steps: from h_T back to h_{T-d} is d step Jacobians, "
                "steps T, T-1, ..., T-d+1.",
                variant=_one(lambda c: _top(_unrolled_jacobian(c, c.d - 1))),
            ),
            Bug(
                "one step too many",
                "This covers d + 1 steps: from h_T back to h_{T-d} is d step Jacobians, "
                "steps T, T-1, ..., T-d+1.",
                variant=_one(lambda c: _top(_unrolled_jacobian(c, c.d + 1))),
            ),
        ],
        forbidden=FORBIDDEN,
    )
)


# ------------------------------------------------------------------------------------ 12.3
def _draw_cell(rng, k):
    T, B, n = 5, 2, 3
    return {
        "f": rng.uniform(0.3, 1.0, size=(T, B, n)),
        "i": rng.uniform(0.0, 1.0, size=(T, B, n)),
        "g": rng.uniform(-1.0, 1.0, size=(T, B, n)),
        "c0": rng.uniform(-1.0, 1.0, size=(B, n)),
    }


def _cell_variant(c, mode: str):
    """Gradients from the engine on a modified cell recurrence (see the bugs below)."""
    f = [bl.tensor(v, requires_grad=True) for v in c.f]
    i = [bl.tensor(v, requires_grad=True) for v in c.i]
    g = [bl.tensor(v, requires_grad=True) for v in c.g]
    c0 = bl.tensor(c.c0, requires_grad=True)
    cell, loss, states = c0, None, []
    for t in range(len(f)):
        prev = cell.detach() if mode == "detach" and t > 0 else cell
        if mode == "no_forget_in_carry":
            kept = (
                (f[t] * prev).detach()
                + (prev - prev.detach())
                + (f[t] - f[t].detach()) * prev.detach()
            )
        else:
            kept = f[t] * prev
        cell = kept + i[t] * g[t]
        states.append(cell)
        term = bl.sum(cell * c.upstream[t])
        loss = term if loss is None else loss + term
    totals = [None] * len(states)
    for t, s in enumerate(states):
        s.register_hook(lambda grad, t=t: totals.__setitem__(t, np.array(grad)))
    loss.backward()
    if mode == "df_at_output":  # the total gradient at c_t times c_t instead of c_{t-1}
        return (
            np.stack([totals[t] * np.asarray(states[t].data) for t in range(len(states))]),
            None,
            None,
            None,
        )

    def grad(t):
        return np.zeros(t.shape) if t.grad is None else np.array(t.grad)

    return (
        np.stack([grad(v) for v in f]),
        np.stack([grad(v) for v in i]),
        np.stack([grad(v) for v in g]),
        grad(c0),
    )


register(
    BackwardSpec(
        id="12.3",
        title="cell_backward",
        forward=cell_states,
        inputs={"f": (5, 2, 3), "i": (5, 2, 3), "g": (5, 2, 3), "c0": (2, 3)},
        outputs=("df", "di", "dg", "dc0"),
        draw=_draw_cell,
        bugs=[
            Bug(
                "future term dropped",
                "This uses only the direct gradient U_t at each c_t: c_t also feeds c_{t+1}, "
                "so the total gradient at c_t adds what comes back from step t+1 (times "
                "f_{t+1}).",
                variant=lambda c: _cell_variant(c, "detach"),
            ),
            Bug(
                "forget-gate gradient at the wrong step",
                "df_t multiplies the total gradient by c_t; the forget gate of step t "
                "multiplies the previous cell state, so df_t = delta_t * c_{t-1}.",
                variant=lambda c: _cell_variant(c, "df_at_output"),
                outputs=("df",),
            ),
            Bug(
                "carry without the forget gate",
                "The gradient is carried back from c_t to c_{t-1} unchanged. Along the cell "
                "path each step multiplies it by that step's forget gate: "
                "delta_{t-1} = U_{t-1} + delta_t * f_t.",
                variant=lambda c: _cell_variant(c, "no_forget_in_carry"),
            ),
            Bug(
                "di and dg swapped",
                "di and dg are swapped: i_t * g_t sends each factor the gradient times the "
                "OTHER factor.",
                variant=lambda c: (None, c.expected[2], c.expected[1], None),
                outputs=("di", "dg"),
            ),
        ],
        cost=Cost(
            multiple=20,
            inputs={"f": (500, 16, 32), "i": (500, 16, 32), "g": (500, 16, 32), "c0": (16, 32)},
        ),
        forbidden=FORBIDDEN,
    )
)
