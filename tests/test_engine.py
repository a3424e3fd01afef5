"""The engine's public behaviour: API, gradient accumulation, graph lifetime, errors."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import backprop_lab as bl


def t(values, grad=True, **kw):
    return bl.tensor(values, requires_grad=grad, **kw)


# --------------------------------------------------------------------------------------
# Creation and basic API
# --------------------------------------------------------------------------------------
def test_tensor_copies_user_data_and_keeps_dtype():
    src = np.array([1.0, 2.0], dtype=np.float32)
    x = bl.tensor(src, requires_grad=True)
    x.data += 1
    assert src.tolist() == [1.0, 2.0], "bl.tensor must not alias the caller's array"
    assert x.dtype == np.float32
    assert x.shape == (2,)
    assert bl.tensor([1.0, 2.0], dtype="float32").dtype == np.float32
    assert bl.tensor(3.0).shape == ()


def test_operators_and_methods():
    a = t([[1.0, 2.0], [3.0, 4.0]])
    b = t([10.0, 20.0])
    out = (a + b) * 2 - a / b + a**2 + (-a) + (a @ a.T).sum(axis=0, keepdims=True)
    assert out.shape == (2, 2)
    assert a.T.shape == (2, 2)
    assert a.reshape(4).shape == (4,)
    assert a.reshape(1, 4).shape == (1, 4)
    assert a.mean().item() == pytest.approx(2.5)
    assert a.max(axis=1).numpy().tolist() == [2.0, 4.0]
    assert a[0].numpy().tolist() == [1.0, 2.0]
    assert a[:, 1].numpy().tolist() == [2.0, 4.0]
    assert (2.0 * a).numpy().tolist() == [[2.0, 4.0], [6.0, 8.0]]
    assert (1.0 - a).numpy()[0, 0] == 0.0
    assert (np.ones((2, 2)) @ a).shape == (2, 2), "ndarray @ Tensor defers to the Tensor"


def test_comparisons_are_not_differentiable():
    a = t([1.0, -2.0])
    mask = a > 0
    assert mask.numpy().tolist() == [True, False]
    assert not mask.requires_grad
    assert (a == a).numpy().all()


def test_functions_exist_and_match_numpy():
    x = np.array([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3]])
    tx = bl.tensor(x)
    np.testing.assert_allclose(bl.exp(tx).data, np.exp(x))
    np.testing.assert_allclose(bl.log(bl.exp(tx)).data, x)
    np.testing.assert_allclose(bl.sin(tx).data, np.sin(x))
    np.testing.assert_allclose(bl.cos(tx).data, np.cos(x))
    np.testing.assert_allclose(bl.tanh(tx).data, np.tanh(x))
    np.testing.assert_allclose(bl.sigmoid(tx).data, 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(bl.relu(tx).data, np.maximum(x, 0))
    np.testing.assert_allclose(bl.maximum(tx, 0.0 * tx).data, np.maximum(x, 0))
    np.testing.assert_allclose(bl.where(tx > 0, tx, 0.0 * tx).data, np.maximum(x, 0))
    np.testing.assert_allclose(bl.concatenate([tx, tx], axis=1).data, np.concatenate([x, x], 1))
    np.testing.assert_allclose(bl.stack([tx, tx]).data, np.stack([x, x]))
    sm = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(bl.softmax(tx).data, sm)
    np.testing.assert_allclose(bl.log_softmax(tx).data, np.log(sm))
    labels = np.array([2, 0])
    ce = -np.log(sm[np.arange(2), labels]).mean()
    assert bl.cross_entropy(tx, labels).item() == pytest.approx(ce)
    assert bl.mse(tx, bl.tensor(np.zeros_like(x))).item() == pytest.approx((x**2).mean())


def test_sigmoid_and_softmax_are_stable_at_extremes():
    x = bl.tensor([-1000.0, 0.0, 1000.0], requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = bl.sigmoid(x)
        y.sum().backward()
    assert y.numpy().tolist() == [0.0, 0.5, 1.0]
    assert np.isfinite(x.grad).all()
    logits = bl.tensor([[1000.0, 0.0, -1000.0]], requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss = bl.cross_entropy(logits, [0])
        loss.backward()
    assert loss.item() == pytest.approx(0.0)
    assert np.isfinite(logits.grad).all()


# --------------------------------------------------------------------------------------
# Reverse mode semantics
# --------------------------------------------------------------------------------------
def test_fan_out_gradients_sum():
    x = t(3.0)
    y = x * x + x  # x feeds three places
    y.backward()
    assert x.grad == pytest.approx(2 * 3.0 + 1)


def test_gradients_accumulate_across_calls_and_reset():
    x = t([1.0, 2.0])
    (x * 3.0).sum().backward()
    (x * 3.0).sum().backward()
    assert x.grad.tolist() == [6.0, 6.0]
    bl.zero_grad(x)
    assert x.grad is None
    (x * 2.0).sum().backward()
    x.grad = None
    (x * 2.0).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_leaf_grads_are_private_writable_arrays():
    a, b = t([1.0, 2.0]), t([3.0, 4.0])
    (a + b).sum().backward()  # add passes one array to both inputs; sum broadcasts a view
    assert a.grad is not b.grad
    a.grad[0] = 100.0  # must be writable and must not change b.grad
    assert b.grad.tolist() == [1.0, 1.0]


def test_backward_on_non_scalar_needs_upstream():
    x = t([1.0, 2.0])
    y = x * 2.0
    with pytest.raises(ValueError, match="upstream"):
        y.backward()
    y.backward(np.array([1.0, 10.0]))
    assert x.grad.tolist() == [2.0, 20.0]
    with pytest.raises(bl.ShapeError, match="upstream gradient has shape"):
        (x * 2.0).backward(np.ones(3))


def test_graph_is_freed_after_backward_and_reuse_is_a_clear_error():
    x = t([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    with pytest.raises(bl.GraphFreedError, match="retain_graph=True"):
        y.backward()
    z = (x * x).sum()
    z.backward(retain_graph=True)
    z.backward()
    assert x.grad.tolist() == [2.0 + 4.0, 4.0 + 8.0]


def test_freed_graph_releases_saved_arrays():
    x = t(np.ones((100, 100)))
    h = bl.exp(x)
    ref = weakref.ref(h.data)
    y = (h * 2.0).sum()  # mul saves h.data for its backward
    del h
    gc.collect()
    assert ref() is not None, "the graph keeps what backward needs"
    y.backward()
    gc.collect()
    assert ref() is None, "after backward the saved arrays are released"


def test_graph_has_no_reference_cycles():
    gc.collect()
    gc.disable()
    try:
        x = t(np.ones(3))
        h = x
        for _ in range(200):
            h = bl.tanh(h * 1.01)
        h.sum().backward()
        del h
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert unreachable == 0, f"{unreachable} objects were only collectable as cycles"


def test_no_grad_records_nothing():
    x = t([1.0])
    with bl.no_grad():
        y = x * 2.0
        with bl.enable_grad():
            z = x * 2.0
    assert not y.requires_grad and y.node is None
    assert z.requires_grad
    assert bl.is_grad_enabled()


def test_detach_and_non_requiring_inputs_get_no_grad():
    x = t([1.0])
    c = bl.tensor([5.0])
    y = (x.detach() * x * c).sum()
    y.backward()
    assert x.grad.tolist() == [5.0], "only the non-detached factor passes a gradient"
    assert c.grad is None


def test_backward_without_requires_grad_is_a_clear_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (bl.tensor([1.0]) * 2.0).sum().backward()


def test_tensor_hook_sees_and_can_replace_gradient():
    x = t([1.0, 2.0])
    h = x * 3.0
    seen = []
    h.register_hook(lambda g: seen.append(g.copy()))
    remove = x.register_hook(lambda g: g * 0.5)
    h.sum().backward()
    assert seen[0].tolist() == [1.0, 1.0]
    assert x.grad.tolist() == [1.5, 1.5]
    remove()
    x.grad = None
    (x * 3.0).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_max_routes_gradient_and_splits_ties():
    x = t([1.0, 5.0, 5.0, 2.0])
    x.max().backward()
    assert x.grad.tolist() == [0.0, 0.5, 0.5, 0.0]


def test_getitem_repeated_indices_add_up():
    x = t([1.0, 2.0, 3.0])
    x[np.array([0, 0, 2])].sum().backward()
    assert x.grad.tolist() == [2.0, 0.0, 1.0]


# --------------------------------------------------------------------------------------
# Errors a learner will meet
# --------------------------------------------------------------------------------------
def test_shape_mismatch_names_op_and_shapes():
    with pytest.raises(bl.ShapeError) as err:
        bl.tensor(np.ones((2, 3))) @ bl.tensor(np.ones((2, 3)))
    msg = str(err.value)
    assert "matmul" in msg and "(2, 3), (2, 3)" in msg and "transpose" in msg
    with pytest.raises(bl.ShapeError) as err:
        bl.tensor(np.ones(3)) + bl.tensor(np.ones(4))
    assert "add" in str(err.value) and "(3,), (4,)" in str(err.value)
    with pytest.raises(bl.ShapeError, match="same shape"):
        bl.mse(bl.tensor(np.ones((4, 1))), bl.tensor(np.ones(4)))


def test_integer_input_to_differentiable_op_is_a_clear_error():
    with pytest.raises(bl.DtypeError, match="floating-point"):
        bl.exp(bl.tensor([1, 2]))
    with pytest.raises(bl.DtypeError, match="exp"):
        bl.exp(bl.tensor([True, False]))


def test_requires_grad_on_non_float_is_a_clear_error():
    with pytest.raises(bl.DtypeError, match="floating dtype"):
        bl.tensor([1, 2], requires_grad=True)


def test_cross_entropy_label_shape_error():
    with pytest.raises(bl.ShapeError, match="cross_entropy"):
        bl.cross_entropy(bl.tensor(np.zeros((3, 4))), np.array([0, 1]))


def test_unknown_dtype_and_unconvertible_data():
    with pytest.raises(bl.DtypeError, match="unknown dtype"):
        bl.tensor([1.0], dtype="float99")
    with pytest.raises(TypeError, match="could not turn"):
        bl.tensor([[1.0, 2.0], [3.0]])


# --------------------------------------------------------------------------------------
# Transformations
# --------------------------------------------------------------------------------------
def test_grad_and_value_and_grad():
    def f(x, y):
        return (x * x * y).sum()

    gx = bl.grad(f)(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    assert gx.tolist() == [6.0, 16.0]
    gx, gy = bl.grad(f, argnums=(0, 1))(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    assert gy.tolist() == [1.0, 4.0]
    value, g = bl.value_and_grad(f)(np.array([1.0]), np.array([2.0]))
    assert float(value) == 2.0 and g.tolist() == [4.0]
    with pytest.raises(ValueError, match="scalar output"):
        bl.grad(lambda x: x * 2.0)(np.ones(2))
    with pytest.raises(TypeError, match="floating"):
        bl.grad(f)(np.array([1, 2]), np.array([1.0, 2.0]))


def test_grad_of_unused_input_is_zero():
    g = bl.grad(lambda x, y: (x * 2.0).sum(), argnums=1)(np.ones(2), np.ones(3))
    assert g.tolist() == [0.0, 0.0, 0.0]


def test_vjp_and_jvp_on_a_linear_map():
    W = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    f = lambda x: bl.tensor(W) @ x  # noqa: E731
    out, pullback = bl.vjp(f, np.array([1.0, -1.0]))
    assert out.tolist() == [-1.0, -1.0, -1.0]
    (u_J,) = pullback(np.array([1.0, 0.0, 0.0]))
    assert u_J.tolist() == [1.0, 2.0]  # first row of W
    (u_J,) = pullback(np.array([0.0, 0.0, 1.0]))  # the graph is retained for reuse
    assert u_J.tolist() == [5.0, 6.0]
    _, Jv = bl.jvp(f, (np.array([1.0, -1.0]),), (np.array([1.0, 0.0]),))
    assert Jv.tolist() == [1.0, 3.0, 5.0]  # first column of W
    np.testing.assert_allclose(bl.jacobian(f)(np.zeros(2)), W)
    np.testing.assert_allclose(bl.jacobian(f, mode="forward")(np.zeros(2)), W)


def test_jvp_is_forward_mode_with_no_backward_pass():
    """jvp records no graph: outputs inside it carry no node, and no VJP rule runs."""
    from backprop_lab.ops import REGISTRY

    calls = []
    original = REGISTRY["tanh"].vjp
    REGISTRY["tanh"].vjp = lambda *a: calls.append(1) or original(*a)
    try:
        seen = []

        def f(x):
            y = bl.tanh(x)
            seen.append(y)
            return y * 2.0

        out, tangent = bl.jvp(f, (np.array([0.3]),), (np.array([1.0]),))
    finally:
        REGISTRY["tanh"].vjp = original
    assert calls == []
    assert seen[0].node is None and not seen[0].requires_grad
    assert tangent[0] == pytest.approx(2 * (1 - np.tanh(0.3) ** 2))


def test_jvp_argument_errors():
    with pytest.raises(ValueError, match="one tangent per primal"):
        bl.jvp(lambda x: x, (np.ones(2),), ())
    with pytest.raises(ValueError, match="tangent shape"):
        bl.jvp(lambda x: x * 1.0, (np.ones(2),), (np.ones(3),))
    with pytest.raises(ValueError, match="mode"):
        bl.jacobian(lambda x: x, mode="sideways")


# --------------------------------------------------------------------------------------
# gradcheck
# --------------------------------------------------------------------------------------
def test_gradcheck_passes_and_reports():
    rep = bl.gradcheck(lambda x: bl.tanh(x).sum(), np.array([0.1, -0.4, 1.2]))
    assert rep.passed and bool(rep)
    assert rep.worst_error < 1e-8
    assert "PASSED" in str(rep)


def test_gradcheck_catches_a_wrong_rule_and_says_where():
    from backprop_lab.ops import REGISTRY

    original = REGISTRY["sin"].vjp
    REGISTRY["sin"].vjp = lambda xp, g, saved, needs: (g * xp.sin(saved[0]),)  # wrong
    try:
        rep = bl.gradcheck(lambda x: bl.sin(x).sum(), np.array([0.3, 1.0]))
        assert not rep.passed
        assert rep.worst_input == 0 and rep.worst_index in [(0,), (1,)]
        with pytest.raises(bl.GradcheckError, match="centered differences gave"):
            bl.gradcheck(lambda x: bl.sin(x).sum(), np.array([0.3, 1.0]), raise_exception=True)
    finally:
        REGISTRY["sin"].vjp = original


def test_gradcheck_float32_inputs_are_checked_in_float64():
    x = np.array([0.3, 0.7], dtype=np.float32)
    assert bl.gradcheck(lambda x: (x * x * x).sum(), x).passed


# --------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------
def test_backend_info_and_unknown_backend():
    info = bl.backend_info()
    assert info.name == "numpy" and "default" in info.reason
    assert "GPU" in str(info)
    with pytest.raises(bl.BackendError, match="unknown backend"):
        bl.use_backend("tpu")


def test_use_backend_context_manager_restores():
    with bl.use_backend("array_api_strict"):
        assert bl.backend_info().name == "array_api_strict"
        assert "use_backend" in bl.backend_info().reason
        x = bl.tensor([1.0, 2.0])
        assert type(x.data).__module__.startswith("array_api_strict")
    assert bl.backend_info().name == "numpy"


def test_mixing_backends_is_a_clear_error():
    a = bl.tensor([1.0, 2.0])
    with bl.use_backend("array_api_strict"):
        b = bl.tensor([1.0, 2.0])
    with pytest.raises(bl.BackendError, match="different backends"):
        a + b


def test_cupy_backend_without_gpu_says_why():
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed: the GPU tests in tests/test_gpu.py cover it")
    except ImportError:
        pass
    with pytest.raises(bl.BackendError, match="CuPy"):
        bl.use_backend("cupy")
