"""CuPy backend tests: run on a machine with an NVIDIA GPU and CuPy (pip install .[gpu]).

They skip, saying why, everywhere else. ``scripts/gpu_check.sh`` runs them together with
the CPU-vs-GPU benchmark on a GPU machine.
"""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import CASES, Const, shape_drawer

import backprop_lab as bl
from backprop_lab.backend import _cupy_gpu_status
from backprop_lab.ops import REGISTRY
from backprop_lab.tensor import Tensor, apply

_ok, _why = _cupy_gpu_status()
pytestmark = pytest.mark.skipif(not _ok, reason=f"no usable GPU: {_why}")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_op_matches_numpy_on_gpu(name):
    import cupy

    rng = np.random.default_rng(0)
    args, params = CASES[name](rng, shape_drawer(rng))

    def run(make):
        ts, call = [], []
        for a in args:
            if isinstance(a, Const):
                call.append(make(np.asarray(a.value)))
            else:
                t = Tensor(make(np.asarray(a, dtype=np.float64)), True)
                ts.append(t)
                call.append(t)
        out = apply(REGISTRY[name], *call, **params)
        out.backward(make(np.ones(np.shape(out.data))))
        return out, ts

    out_c, ts_c = run(np.asarray)
    out_g, ts_g = run(cupy.asarray)
    assert isinstance(out_g.data, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(out_g.data), out_c.data, rtol=1e-10)
    for c, g in zip(ts_c, ts_g):
        assert isinstance(g.grad, cupy.ndarray)
        np.testing.assert_allclose(cupy.asnumpy(g.grad), c.grad, rtol=1e-10, atol=1e-12)


def test_training_on_gpu():
    with bl.use_backend("cupy"):
        assert bl.backend_info().name == "cupy"
        model = bl.nn.MLP([64, 32, 10])
        opt = bl.optim.SGD(model.parameters(), lr=0.1)
        d = bl.data.load_digits()
        x, y = bl.tensor(d.X[:256]), bl.tensor(d.y[:256])
        first = None
        for _ in range(20):
            loss = bl.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            first = first if first is not None else loss.item()
        assert loss.item() < first
