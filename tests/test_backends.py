"""The whole op suite runs on array_api_strict arrays on its non-default device.

On ``array_api_strict.Device("device1")`` any hidden NumPy call or host copy raises at
once, so these tests prove the ops take their namespace from their inputs. Results are
compared with the NumPy backend (explicit transfers happen only in the test).
"""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import CASES, Const, getitem_case, shape_drawer

import backprop_lab as bl
from backprop_lab.ops import REGISTRY
from backprop_lab.tensor import Tensor, apply

xps = pytest.importorskip("array_api_strict")
DEVICE = xps.Device("device1")


def to_strict(a):
    return xps.asarray(np.asarray(a), device=DEVICE)


def to_host(a):
    return np.asarray(a.to_device(xps.Device("CPU_DEVICE")))


def test_hidden_numpy_call_fails_on_device1():
    """The premise: NumPy cannot silently touch these arrays."""
    x = to_strict([1.0, 2.0])
    with pytest.raises(Exception):  # noqa: B017 - any error proves the point
        np.exp(x)


def _run(name, args, params, make):
    tensors = []
    call = []
    for a in args:
        if isinstance(a, Const):
            call.append(make(a.value))
        else:
            t = Tensor(make(np.asarray(a, dtype=np.float64)), True)
            tensors.append(t)
            call.append(t)
    out = apply(REGISTRY[name], *call, **params)
    return tensors, out


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_op_forward_vjp_jvp_on_strict_device(name, seed):
    rng = np.random.default_rng(seed)
    case = CASES[name]
    if name == "getitem":  # integer-array indexing is outside the array API's subset

        def case(rng, draw):
            return getitem_case(rng, draw, basic_only=True)

    args, params = case(rng, shape_drawer(rng))
    ref_inputs, ref_out = _run(name, args, params, lambda a: np.asarray(a))
    s_inputs, s_out = _run(name, args, params, to_strict)
    assert type(s_out.data).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(to_host(s_out.data), np.asarray(ref_out.data), rtol=1e-12)

    u = rng.standard_normal(np.shape(ref_out.data))
    ref_out.backward(u)
    s_out.backward(to_strict(u))
    for r, s in zip(ref_inputs, s_inputs):
        assert s.grad.device == DEVICE
        np.testing.assert_allclose(to_host(s.grad), r.grad, rtol=1e-12, atol=1e-14)

    diff = [np.asarray(a, dtype=np.float64) for a in args if not isinstance(a, Const)]
    vs = [rng.standard_normal(a.shape) for a in diff]

    def f(make):
        def fn(*xs):
            it = iter(xs)
            full = [make(a.value) if isinstance(a, Const) else next(it) for a in args]
            return apply(REGISTRY[name], *full, **params)

        return fn

    _, ref_t = bl.jvp(f(np.asarray), diff, vs)
    with bl.use_backend("array_api_strict"):
        _, s_t = bl.jvp(f(to_strict), [to_strict(a) for a in diff], [to_strict(v) for v in vs])
    np.testing.assert_allclose(to_host(s_t), np.asarray(ref_t), rtol=1e-12, atol=1e-14)


def test_training_step_on_strict_device():
    """nn + optim + cross_entropy run end to end without touching NumPy."""
    with bl.use_backend("array_api_strict"):
        model = bl.nn.MLP([4, 8, 3], seed=0)
        opt = bl.optim.Adam(model.parameters(), lr=0.01)
        x = bl.tensor(np.random.default_rng(0).standard_normal((5, 4)))
        labels = bl.tensor(np.array([0, 1, 2, 1, 0]))
        losses = []
        for _ in range(5):
            loss = bl.cross_entropy(model(x), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[-1] < losses[0]
