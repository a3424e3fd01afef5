"""Layers, optimisers, bundled data and the command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab import nn, optim
from backprop_lab.data import adding_problem, echo_task, load_digits, spirals, train_test_split


def test_initialiser_statistics():
    rng = np.random.default_rng(0)
    w = nn.xavier_uniform(400, 600, rng)
    assert np.abs(w).max() <= np.sqrt(6 / 1000) + 1e-12
    assert w.var() == pytest.approx(2 / 1000, rel=0.05)
    w = nn.he_normal(500, 500, rng)
    assert w.var() == pytest.approx(2 / 500, rel=0.05)
    w = nn.scaled_normal(500, 500, rng, std=0.01)
    assert w.std() == pytest.approx(0.01, rel=0.05)
    with pytest.raises(ValueError, match="unknown initialiser"):
        nn.Linear(2, 2, init="zeros")


def test_linear_shapes_and_parameters():
    layer = nn.Linear(3, 2, seed=1)
    assert layer.W.shape == (3, 2) and layer.b.shape == (2,)
    out = layer(bl.tensor(np.ones((5, 3))))
    assert out.shape == (5, 2)
    model = nn.MLP([3, 4, 2])
    names = [n for n, _ in model.named_parameters()]
    assert names == ["layers.0.W", "layers.0.b", "layers.2.W", "layers.2.b"]
    assert len(list(model.modules())) == 4
    with pytest.raises(ValueError, match="activation"):
        nn.MLP([3, 2], activation="swish")


def test_module_hooks():
    model = nn.Sequential(nn.Linear(2, 3, seed=0), nn.Tanh(), nn.Linear(3, 1, seed=1))
    seen_fwd, seen_bwd = [], []
    model[1].register_forward_hook(lambda m, i, o: seen_fwd.append(o.shape))
    remove = model[1].register_full_backward_hook(lambda m, g: seen_bwd.append(g.shape))
    model(bl.tensor(np.ones((4, 2)))).sum().backward()
    assert seen_fwd == [(4, 3)] and seen_bwd == [(4, 3)]
    remove()
    model(bl.tensor(np.ones((4, 2)))).sum().backward()
    assert len(seen_bwd) == 1


def _quadratic_descent(opt_factory, steps=200):
    x = bl.tensor([3.0, -2.0], requires_grad=True)
    opt = opt_factory([x])
    for _ in range(steps):
        loss = ((x - bl.tensor([1.0, 1.0])) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return x.numpy()


@pytest.mark.parametrize(
    "factory",
    [
        lambda p: optim.SGD(p, lr=0.1),
        lambda p: optim.SGD(p, lr=0.05, momentum=0.9),
        lambda p: optim.Adam(p, lr=0.1),
    ],
)
def test_optimisers_minimise_a_quadratic(factory):
    np.testing.assert_allclose(_quadratic_descent(factory), [1.0, 1.0], atol=1e-3)


def test_sgd_matches_the_update_rule():
    x = bl.tensor([1.0], requires_grad=True)
    opt = optim.SGD([x], lr=0.5, momentum=0.5)
    for expected in ([0.0], [-1.5]):  # v1 = 2, x = 1 - 1; v2 = 0.5*2 + 2 = 3, x = 0 - 1.5
        x.grad = None
        (x * 2.0).sum().backward()
        opt.step()
        assert x.numpy().tolist() == expected


def test_optimiser_errors():
    with pytest.raises(ValueError, match="no parameters"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="requires_grad"):
        optim.SGD([bl.tensor([1.0])], lr=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        optim.Adam([bl.tensor([1.0], requires_grad=True)], lr=0)


def test_digits_ship_with_the_package_and_train():
    d = load_digits()
    assert d.X.shape == (1797, 64) and d.images.shape == (1797, 8, 8)
    assert d.X.min() == 0.0 and d.X.max() == 1.0
    assert sorted(set(d.y.tolist())) == list(range(10))
    Xtr, Xte, ytr, yte = train_test_split(d.X, d.y, seed=0)
    model = nn.MLP([64, 32, 10], seed=0)
    opt = optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    for _ in range(5):
        for i in range(0, len(Xtr), 64):
            loss = bl.cross_entropy(model(bl.tensor(Xtr[i : i + 64])), ytr[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with bl.no_grad():
        acc = (model(bl.tensor(Xte)).numpy().argmax(1) == yte).mean()
    assert acc > 0.9


def test_synthetic_tasks():
    X, y = spirals(50, 3, seed=0)
    assert X.shape == (150, 2) and np.bincount(y).tolist() == [50, 50, 50]
    X, y = adding_problem(10, 20, seed=0)
    assert X.shape == (10, 20, 2) and y.shape == (10, 1)
    assert (X[:, :, 1].sum(axis=1) == 2).all()
    np.testing.assert_allclose(y[:, 0], (X[:, :, 0] * X[:, :, 1]).sum(axis=1))
    X, y = echo_task(4, 10, delay=3)
    np.testing.assert_array_equal(y[:, 3:], X[:, :7])
    with pytest.raises(ValueError, match="delay"):
        echo_task(4, 10, delay=10)


def test_cli_help_and_doctor():
    run = [sys.executable, "-m", "backprop_lab.cli"]
    out = subprocess.run(run + ["--help"], capture_output=True, text=True, check=True).stdout
    assert "doctor" in out
    out = subprocess.run(run + ["doctor"], capture_output=True, text=True, check=True).stdout
    assert "backend: numpy" in out and "GPU:" in out and "numpy" in out
