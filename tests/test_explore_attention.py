"""backprop_lab.explore.attention (Chapter 13)."""

import math

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab.explore import attention as att

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def _plain_numpy(Q, K, V, causal):
    S = Q @ K.T / math.sqrt(Q.shape[1])
    if causal:
        S = np.where(np.tril(np.ones(S.shape, bool)), S, -np.inf)
    P = np.exp(S - S.max(axis=1, keepdims=True))
    return (P / P.sum(axis=1, keepdims=True)) @ V


@pytest.mark.parametrize("causal", [False, True])
def test_forward_matches_numpy(causal):
    Q, K, V, _ = att.random_qkv(7, 3, seed=1)
    expected = _plain_numpy(Q, K, V, causal)
    np.testing.assert_allclose(att.attention(Q, K, V, causal=causal).numpy(), expected)
    O, lse = att.attention_forward(Q, K, V, causal=causal)
    np.testing.assert_allclose(O, expected)
    assert lse.shape == (7, 1)


def test_row_logsumexp_is_stable_and_handles_masked_entries():
    S = np.array([[1000.0, 1000.0], [-np.inf, 0.0]])
    np.testing.assert_allclose(att.row_logsumexp(S), [[1000 + math.log(2)], [0.0]])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block", [1, 5, 16, 64])
def test_memory_efficient_gradients_equal_plain(causal, block):
    Q, K, V, G = att.random_qkv(19, 4, seed=2)
    plain = att.saved_bytes(lambda q, k, v: att.attention(q, k, v, causal=causal), Q, K, V, G)
    eff = att.saved_bytes(
        lambda q, k, v: att.memory_efficient_attention(q, k, v, causal=causal, block=block),
        Q, K, V, G,
    )  # fmt: skip
    for a, b in zip(plain["grads"], eff["grads"]):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_memory_grows_quadratically_for_plain_and_linearly_for_recomputing():
    prof = att.memory_profile([128, 256, 512], d=8, block=16)
    plain, eff = prof["plain"], prof["efficient"]
    assert 3.5 < plain[2] / plain[1] < 4.0
    assert 1.8 < eff[2] / eff[1] < 2.1
    assert prof["max_grad_diff"] < 1e-12


def test_score_gradient_rows_sum_to_zero_and_mask_blocks_the_future():
    Q, K, V, G = att.random_qkv(6, 3, seed=3)
    r = att.score_gradients(Q, K, V, G, scale=1 / math.sqrt(3), causal=True)
    np.testing.assert_allclose(r["dS"].sum(axis=1), 0, atol=1e-14)
    assert np.all(r["dS"][~att.causal_mask(6)] == 0)
    assert np.all(r["P"][~att.causal_mask(6)] == 0)


def test_saturation_statistics_follow_sqrt_d():
    ds = [4, 64, 1024]
    unscaled = att.saturation_stats(ds, scaled=False, t=32, repeats=2)
    scaled = att.saturation_stats(ds, scaled=True, t=32, repeats=2)
    for d, s in zip(ds, unscaled["score_std"]):
        assert 0.8 < s / math.sqrt(d) < 1.2
    assert all(0.8 < s < 1.2 for s in scaled["score_std"])
    assert unscaled["grad_ratio"][-1] < 0.05 * scaled["grad_ratio"][-1]


def test_attention_view_draws_every_explorer_combination_quickly():
    import itertools

    import matplotlib.pyplot as plt

    combos = list(itertools.product(*att.EXPLORER_CONTROLS.values()))
    assert len(combos) <= 40
    for d, scaling, T in combos[:3] + combos[-2:]:
        fig = att.attention_view(d, scaling, T)
        assert len(fig.axes) >= 2
        plt.close(fig)


def test_attention_view_rejects_unknown_scaling():
    with pytest.raises(ValueError, match="scaling must be one of"):
        att.attention_view(16, "sqrt", 8)


def test_explorer_builds():
    ex = att.attention_explorer()
    assert ex is not None


def test_engine_backward_is_about_twice_forward():
    Q, K, V, G = att.random_qkv(64, 16)
    q, k, v = (bl.tensor(a, requires_grad=True) for a in (Q, K, V))
    with bl.count() as c:
        att.attention(q, k, v).backward(G)
    assert 1.9 < c.backward_flops / c.forward_flops < 2.1
