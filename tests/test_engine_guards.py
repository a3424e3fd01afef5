"""Engine behaviour that issue 9's fixes must keep: the legitimate cases next to each red-team
probe in test_redteam_engine.py (a constant function still has gradient 0, a rebinding of
.data is not an in-place change, a training loop still runs, ...)."""

from __future__ import annotations

import numpy as np

import backprop_lab as bl
from backprop_lab import nn, optim


def t(values, grad=True, **kw):
    return bl.tensor(values, requires_grad=grad, **kw)


def rng(seed=0):
    return np.random.default_rng(seed)


def test_where_jvp_with_an_integer_mask():
    f = lambda a: bl.where(np.array([0, 1]), a, a * 3.0)  # noqa: E731
    np.testing.assert_array_equal(bl.jacobian(f, mode="forward")([1.0, 1.0]), np.diag([3.0, 1.0]))


def test_cross_entropy_whole_float_labels_equal_integer_labels():
    lv = rng().normal(size=(3, 4))
    a = bl.cross_entropy(t(lv), np.array([0.0, 3.0, 2.0])).item()
    b = bl.cross_entropy(t(lv), np.array([0, 3, 2])).item()
    assert a == b


def test_grad_of_a_constant_function_is_still_zero():
    assert bl.grad(lambda x: bl.tensor(3.0))(np.array(1.0)) == 0.0


def test_grad_of_a_tensor_argument_leaves_its_grad_alone():
    x = t([1.0, 2.0])
    g = bl.grad(lambda a: (a * a).sum())(x)
    assert x.grad is None and g.tolist() == [2.0, 4.0]


def test_changes_that_do_not_matter_pass():
    x = t([1.0, 2.0])
    y = (x + 1.0).sum()  # add saves no values
    x.data += 5.0
    y.backward()
    np.testing.assert_array_equal(x.grad, [1.0, 1.0])
    z = t([1.0, 2.0])
    q = (z * z).sum()
    z.data = np.array([10.0, 20.0])  # rebinding: the graph keeps the values it used
    q.backward()
    np.testing.assert_array_equal(z.grad, [2.0, 4.0])


def test_training_loop_still_runs():
    model = nn.MLP([2, 3, 1])
    opt = optim.Adam(model.parameters(), lr=0.01)
    x = bl.tensor(rng().normal(size=(4, 2)))
    for _ in range(3):
        opt.zero_grad()
        bl.mse(model(x), bl.tensor(np.zeros((4, 1)))).backward()
        opt.step()


def test_grad_does_not_alias_the_input():
    a = np.array([1.0, 2.0])
    g = bl.grad(lambda x: (x * 1.0).sum() + (x * 0.0).sum())(a)
    assert not np.shares_memory(g, a)


def test_sigmoid_right_tail_and_extremes():
    z = bl.sigmoid(bl.tensor([40.0, 1000.0, -1000.0])).numpy()
    assert z.tolist() == [1.0, 1.0, 0.0]


def test_checkpoint_of_a_captured_activation_used_after_it():
    from test_redteam_engine import test_checkpoint_of_a_captured_activation_used_elsewhere

    test_checkpoint_of_a_captured_activation_used_elsewhere(other_use_first=False)


def test_fan_out_sums_are_not_shared_with_other_inputs():
    # d = a + b reaches the add node as a sum (two uses of d); add hands the same array to
    # both inputs; a then receives more, and b's gradient must not change with it.
    a, b = t([1.0, 2.0]), t([3.0, 4.0])
    d = a + b
    y = (d * 2.0).sum() + (d * 3.0).sum() + (a * 7.0).sum()
    y.backward()
    np.testing.assert_array_equal(b.grad, [5.0, 5.0])
    np.testing.assert_array_equal(a.grad, [12.0, 12.0])


def test_leaf_sums_over_many_uses():
    w = t([1.0, 2.0])
    y = w * 0.0
    for k in range(1, 6):
        y = y + w * float(k)
    y.sum().backward()
    np.testing.assert_array_equal(w.grad, [15.0, 15.0])
