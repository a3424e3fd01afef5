"""Chapter 13 (attention): 13.1 the backward pass by hand, with an optional causal mask;
13.2 the recomputing backward from the row log-sum-exp, memory-bounded; 13.3 the gradient
of a learnable temperature."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import backprop_lab as bl
from backprop_lab import numdiff
from backprop_lab.checks.drivers.attention import attention, causal_attention
from backprop_lab.checks.drivers.attention import temperature_attention as _temperature
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

HELPERS = (
    "backprop_lab.explore.attention.attention",
    "backprop_lab.explore.attention.memory_efficient_attention",
    "backprop_lab.explore.attention.score_gradients",
    "backprop_lab.explore.attention.saved_bytes",
)
FORBIDDEN = ENGINE_GRADIENTS + FINITE_DIFFERENCES + HELPERS


# --------------------------------------------------------------------------- shared pieces
def _weights(S):
    P = np.exp(S - np.max(S, axis=1, keepdims=True))
    return P / np.sum(P, axis=1, keepdims=True)


def _scores(Q, K, causal, scale=None):
    S = Q @ K.T * (1.0 / math.sqrt(Q.shape[1]) if scale is None else scale)
    if causal:
        S = np.where(np.tril(np.ones(S.shape, dtype=bool)), S, -np.inf)
    return S


def _backward(upstream, Q, K, V, *, causal=False, rowsum=True, scale_q=None, masked=True,
              transpose_v=True, transpose_k=True):  # fmt: skip
    """Attention's backward pass with switches that reproduce the classic bugs.

    Trusted side only (the oracle is hidden from the grading kernel): the buggy variants
    need the pieces of the computation.
    """
    d = Q.shape[1]
    s = 1.0 / math.sqrt(d)
    P = _weights(_scores(Q, K, causal and masked))
    dV = (P.T if transpose_v else P) @ upstream
    dP = upstream @ V.T
    dS = P * (dP - np.sum(dP * P, axis=1, keepdims=True)) if rowsum else P * dP
    sq = s if scale_q is None else scale_q
    dQ = dS @ K * sq
    dK = (dS.T if transpose_k else dS) @ Q * sq
    return dQ, dK, dV


# --------------------------------------------------------------------------- 13.1
@dataclass
class _AttentionBackwardSpec(BackwardSpec):
    """BackwardSpec whose cases alternate between plain and causal attention: odd cases are
    causal, the answer gets ``causal`` as its last argument, and finite differences use the
    matching forward pass (``causal_attention`` for the causal cases)."""

    def make_case(self, rng, index, shapes=None):
        case = super().make_case(rng, index, shapes)
        causal = index >= 0 and index % 2 == 1
        case.extra["causal"] = causal
        xs = [case.inputs[n] for n in self.inputs]
        if causal:
            case.forward_value = causal_attention(*[x.copy() for x in xs])
            case.extra["fd"] = lambda: tuple(
                numdiff.numerical_vjp(causal_attention, xs, case.upstream)
            )
        case.args = (case.upstream, *xs, causal)
        return case


def _mask_variant(how):
    """A backward pass written by hand around a causal mask applied the wrong way: the usual
    formulas (dV = P^T dO, dS = P (dP - rowsum(dP P)), ...) on weights P where ``"zero"``
    set the hidden scores to 0 instead of -inf, ``"after"`` multiplied the weights by the
    mask after the softmax, and ``"upper"`` hid the keys before each query."""

    def variant(c: Case):
        if not c.causal:
            return _backward(c.upstream, c.Q, c.K, c.V)
        s = 1.0 / math.sqrt(c.Q.shape[1])
        S = c.Q @ c.K.T * s
        lower = np.tril(np.ones(S.shape, dtype=bool))
        if how == "zero":
            P = _weights(np.where(lower, S, 0.0))
        elif how == "after":
            P = _weights(S) * lower
        else:
            P = _weights(np.where(lower.T, S, -np.inf))
        dP = c.upstream @ c.V.T
        dS = P * (dP - np.sum(dP * P, axis=1, keepdims=True))
        return dS @ c.K * s, dS.T @ c.Q * s, P.T @ c.upstream

    return variant


def _variant(**switches):
    def variant(c: Case):
        return _backward(c.upstream, c.Q, c.K, c.V, causal=c.causal, **switches)

    return variant


register(
    _AttentionBackwardSpec(
        id="13.1",
        title="attention_backward",
        signature="attention_backward(upstream, Q, K, V, causal)",
        forward=attention,
        inputs={"Q": (5, 3), "K": (5, 3), "V": (5, 3)},
        outputs=("dQ", "dK", "dV"),
        backward_order=("dV", "dQ", "dK"),
        arg_labels=("upstream", "Q", "K", "V", "causal"),
        cases=4,
        bugs=[
            Bug(
                "softmax row-sum term dropped",
                "It is P * dP without the softmax's row-sum term: each row of dS is "
                "P_ij (dP_ij - sum_k P_ik dP_ik). Raising one score lowers every other "
                "weight of its row, and the subtracted sum is that effect.",
                variant=_variant(rowsum=False),
                outputs=("dQ", "dK"),
            ),
            Bug(
                "scale forgotten",
                "It is sqrt(d) times the right value: the scores were divided by sqrt(d) in "
                "the forward pass, so dQ and dK carry the same factor 1/sqrt(d).",
                variant=_variant(scale_q=1.0),
                outputs=("dQ", "dK"),
            ),
            Bug(
                "scale applied twice",
                "It is 1/sqrt(d) times the right value: the factor 1/sqrt(d) is applied "
                "once, not twice (was it already in dS?).",
                variant=lambda c: _backward(
                    c.upstream, c.Q, c.K, c.V, causal=c.causal, scale_q=1.0 / c.Q.shape[1]
                ),  # fmt: skip
                outputs=("dQ", "dK"),
            ),
            Bug(
                "mask leaks into the backward pass",
                "It is right on the plain cases but wrong on the causal ones: the backward "
                "pass used weights computed without the mask, so gradient reaches keys a "
                "query may not see. Recompute P with the mask (scores above the diagonal "
                "at -inf before the softmax); the hidden weights are then exactly 0.",
                variant=_variant(masked=False),
            ),
            Bug(
                "mask applied after the softmax",
                "It is right on the plain cases but not on the causal ones: your weights are "
                "multiplied by the mask after the softmax, so the normaliser still contains "
                "the hidden keys and the future leaks into every output (Section 13.3). Set "
                "the hidden scores to -inf before the softmax.",
                variant=_mask_variant("after"),
            ),
            Bug(
                "masked scores set to 0",
                "It is right on the plain cases but not on the causal ones: the hidden scores "
                "were set to 0, not -inf, and exp(0) = 1 gives every hidden key a weight. "
                "Use -inf (np.where(mask, S, -np.inf)): the hidden weights are then exactly 0.",
                variant=_mask_variant("zero"),
            ),
            Bug(
                "mask on the wrong side",
                "It is right on the plain cases but not on the causal ones: your mask hides "
                "the keys before each query instead of those after it. Query i sees keys "
                "0..i: keep the lower triangle, diagonal included (np.tril).",
                variant=_mask_variant("upper"),
            ),
            Bug(
                "dV transpose missing",
                "It is P @ upstream: value row j collects P_ij * upstream_i over the queries "
                "i, which is P.T @ upstream.",
                variant=_variant(transpose_v=False),
                outputs=("dV",),
            ),
            Bug(
                "dK transpose missing",
                "It is dS @ Q: key j collects dS_ij * q_i over the queries i (every query "
                "scored every key, so sum over i), which is dS.T @ Q.",
                variant=_variant(transpose_k=False),
                outputs=("dK",),
            ),
            Bug(
                "dQ and dK swapped",
                "dQ and dK are swapped: query i collects dS_ij k_j (dS @ K), key j "
                "collects dS_ij q_i (dS.T @ Q).",
                variant=lambda c: (lambda g: (g[1], g[0], None))(
                    _backward(c.upstream, c.Q, c.K, c.V, causal=c.causal)
                ),
                outputs=("dQ", "dK"),
            ),
        ],
        cost=Cost(multiple=12, inputs={"Q": (1024, 32), "K": (1024, 32), "V": (1024, 32)}),
        forbidden=FORBIDDEN,
    )
)


# --------------------------------------------------------------------------- 13.2
LARGE_T, LARGE_D, LARGE_BLOCK = 2048, 16, 64
#: a quarter of one T x T float64 matrix at the large size
BUDGET = LARGE_T * LARGE_T * 8 / 4


def _lse_draw(rng, index):
    t, d = (7, 3) if index >= 0 else (LARGE_T, LARGE_D)
    return {n: rng.standard_normal((t, d)) for n in ("Q", "K", "V", "dO")}


def _lse_case_parts(c: Case):
    S = _scores(c.Q, c.K, False)
    m = np.max(S, axis=1, keepdims=True)
    lse = m + np.log(np.sum(np.exp(S - m), axis=1, keepdims=True))
    O = np.exp(S - lse) @ c.V
    return O, lse


def _lse_arguments(c: Case):
    O, lse = _lse_case_parts(c)
    large = c.Q.shape[0] == LARGE_T
    block = LARGE_BLOCK if large else 3  # 7 rows in blocks of 3: the last block is partial
    budget = BUDGET if large else math.inf
    c.extra["block"] = block
    return (c.dO, c.Q, c.K, c.V, O, lse, block, budget)


def _engine_gradients(c: Case):
    q, k, v = (bl.tensor(a, requires_grad=True) for a in (c.Q, c.K, c.V))
    S = (q @ k.T) * (1.0 / math.sqrt(c.Q.shape[1]))
    (bl.softmax(S, axis=-1) @ v).backward(c.dO)
    return np.array(q.grad), np.array(k.grad), np.array(v.grad)


def _lse_reference(c: Case):
    if c.Q.shape[0] == LARGE_T:  # finite differences would take ~10^5 forward passes here
        grads = _engine_gradients(c)
    else:
        grads = tuple(numdiff.numerical_vjp(attention, [c.Q, c.K, c.V], c.dO))
    return (*grads, np.array(1.0))


def _lse_variant(**switches):
    def variant(c: Case):
        return (*_backward(c.dO, c.Q, c.K, c.V, **switches), None)

    return variant


def _partial_block_skipped(c: Case):
    block = c.extra["block"]
    t = c.Q.shape[0] // block * block
    if t == c.Q.shape[0]:
        return (*_backward(c.dO, c.Q, c.K, c.V), None)
    d = c.Q.shape[1]
    s = 1.0 / math.sqrt(d)
    P = _weights(_scores(c.Q[:t], c.K, False))
    up = c.dO[:t]
    dP = up @ c.V.T
    dS = P * (dP - np.sum(dP * P, axis=1, keepdims=True))
    dQ = np.zeros_like(c.Q)
    dQ[:t] = dS @ c.K * s
    return dQ, dS.T @ c.Q[:t] * s, P.T @ up, None


def _last_block_only(c: Case):
    block = c.extra["block"]
    start = (c.Q.shape[0] - 1) // block * block
    s = 1.0 / math.sqrt(c.Q.shape[1])
    P = _weights(_scores(c.Q, c.K, False))[start:]
    up = c.dO[start:]
    dP = up @ c.V.T
    dS = P * (dP - np.sum(dP * P, axis=1, keepdims=True))
    return None, dS.T @ c.Q[start:] * s, P.T @ up, None


def _lse_unnormalised(c: Case):
    d = c.Q.shape[1]
    s = 1.0 / math.sqrt(d)
    E = np.exp(_scores(c.Q, c.K, False))
    dP = c.dO @ c.V.T
    O, _ = _lse_case_parts(c)
    dS = E * (dP - np.sum(c.dO * O, axis=1, keepdims=True))
    return dS @ c.K * s, dS.T @ c.Q * s, E.T @ c.dO, None


register(
    LabeledValueSpec(
        id="13.2",
        title="attention_backward_lse",
        signature="attention_backward_lse(upstream, Q, K, V, O, lse, block)",
        arg_labels=("upstream", "Q", "K", "V", "O", "lse", "block", "memory_budget"),
        inputs={"Q": (7, 3), "K": (7, 3), "V": (7, 3), "dO": (7, 3)},
        outputs=("dQ", "dK", "dV", "memory"),
        cases=3,
        draw=lambda rng, k: _lse_draw(rng, -1 if k == 2 else k),
        arguments=_lse_arguments,
        reference=_lse_reference,
        driver="memory_budget",
        bugs=[
            Bug(
                "memory over budget",
                f"On the large case (T = {LARGE_T}) your function allocated more than a "
                "quarter of one T x T float64 matrix. It must not hold all the weights at "
                "once: regenerate them one block of `block` query rows at a time, from the "
                "block's scores and lse, and let each block go before the next.",
                predicate=lambda c, got: c.Q.shape[0] != LARGE_T or float(got["memory"]) > 1.0,
                outputs=("memory",),
            ),
            Bug(
                "row-sum term dropped",
                "It is computed without the softmax's row-sum term D_i = sum_k P_ik dP_ik. "
                "You do not need P for it: D_i = <upstream_i, O_i>.",
                variant=_lse_variant(rowsum=False),
                outputs=("dQ", "dK"),
            ),
            Bug(
                "scale forgotten",
                "It is sqrt(d) times the right value: the scores are Q K^T / sqrt(d), so "
                "dQ and dK carry the factor 1/sqrt(d) too.",
                variant=_lse_variant(scale_q=1.0),
                outputs=("dQ", "dK"),
            ),
            Bug(
                "lse not subtracted",
                "The weights were regenerated as exp(S) without subtracting lse: row i of "
                "the weights is exp(S_i - lse_i), which also keeps exp from overflowing.",
                variant=_lse_unnormalised,
            ),
            Bug(
                "dK and dV assigned, not accumulated",
                "dK (or dV) holds the last block's contribution only: every block of queries "
                "reads every key and value, so each block adds its share (dK += ..., "
                "dV += ...), starting from zeros.",
                variant=lambda c: _last_block_only(c),
                outputs=("dK", "dV"),
            ),
            Bug(
                "last partial block skipped",
                "The last query rows are missing: when T is not a multiple of block, the "
                "final block is shorter (range(0, T, block) with slices handles it).",
                variant=_partial_block_skipped,
            ),
        ],
        forbidden=FORBIDDEN,
    )
)


# --------------------------------------------------------------------------- 13.3
def _temperature_draw(rng, index):
    t, d = 5, 3
    Q, K, V = (rng.standard_normal((t, d)) for _ in range(3))
    dO = rng.uniform(-1.0, 1.0, size=(t, d))
    tau = rng.uniform(0.4, 1.6)
    if index == 2:  # the prediction: Q = K, and the loss rewards copying one's own value
        K = Q = 1.5 * Q
        dO = -V
        tau = 1.0
    return {"dO": dO, "Q": Q, "K": K, "V": V, "tau": np.array(tau)}


def _temperature_reference(c: Case):
    def loss(t):
        return float(np.sum(c.dO * _temperature(c.Q, c.K, c.V, t)))

    return np.array(numdiff.derivative(loss, float(c.tau)))


def _temperature_variant(*, rowsum=True, use_scaled=False):
    def variant(c: Case):
        R = c.Q @ c.K.T
        P = _weights(float(c.tau) * R)
        dP = c.dO @ c.V.T
        dS = P * (dP - np.sum(dP * P, axis=1, keepdims=True)) if rowsum else P * dP
        return np.array(np.sum(dS * (float(c.tau) * R if use_scaled else R)))

    return variant


register(
    LabeledValueSpec(
        id="13.3",
        title="temperature_gradient",
        signature="temperature_gradient(upstream, Q, K, V, tau)",
        arg_labels=("upstream", "Q", "K", "V", "tau"),
        inputs={"dO": (5, 3), "Q": (5, 3), "K": (5, 3), "V": (5, 3), "tau": ()},
        outputs=("dtau",),
        cases=3,
        draw=_temperature_draw,
        arguments=lambda c: (c.dO, c.Q, c.K, c.V, float(c.tau)),
        reference=_temperature_reference,
        bugs=[
            Bug(
                "row-sum term dropped",
                "The gradient at the scores is missing the softmax's row-sum term: "
                "dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik).",
                variant=_temperature_variant(rowsum=False),
            ),
            Bug(
                "scaled scores used",
                "It is tau times the right value: S = tau R, so dL/dtau = sum_ij dS_ij R_ij "
                "with the raw scores R = Q K^T, not the scaled ones.",
                variant=_temperature_variant(use_scaled=True),
            ),
            Bug(
                "only the diagonal summed",
                "Only the diagonal of dS * R was summed: tau multiplies every one of the "
                "T x T scores, so its gradient sums over all of them.",
                variant=lambda c: np.array(np.trace(_temperature_matrix(c))),
            ),
            Bug(  # last: a single number has no telling ratio
                "no single slip",
                "No single slip explains your numbers. Follow the chain once more: the "
                "gradient at the weights, then at the scores through the softmax (with its "
                "row-sum term), then what tau's share of every score is.",
                predicate=lambda c, got: (
                    got.get("dtau") is not None
                    and np.shape(got["dtau"]) == np.shape(c.expected[0])
                    and not np.allclose(got["dtau"], -c.expected[0], rtol=1e-5)
                ),
            ),
        ],
        forbidden=FORBIDDEN,
    )
)


def _temperature_matrix(c: Case):
    R = c.Q @ c.K.T
    P = _weights(float(c.tau) * R)
    dP = c.dO @ c.V.T
    return P * (dP - np.sum(dP * P, axis=1, keepdims=True)) * R
