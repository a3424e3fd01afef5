"""Small data sets that ship with the package: nothing is downloaded at run time.

- :func:`load_digits`: the 8x8 handwritten digits (1797 images, 10 classes).
- :func:`spirals`: interleaved 2-D spirals, a classic task a linear model cannot solve.
- :func:`adding_problem`, :func:`echo_task`: sequence tasks for recurrent networks, where
  the answer depends on inputs many steps back.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

__all__ = ["Digits", "load_digits", "spirals", "adding_problem", "echo_task", "train_test_split"]


@dataclass
class Digits:
    """The digits data: ``images`` (N, 8, 8), ``X`` (N, 64) scaled to [0, 1], ``y`` (N,)."""

    images: np.ndarray
    X: np.ndarray
    y: np.ndarray


def load_digits(dtype: str = "float64") -> Digits:
    """Load the 8x8 handwritten digits bundled with the package (UCI, CC BY 4.0).

    Pixel values 0..16 are divided by 16, so ``X`` lies in [0, 1]. ``y`` holds int64 labels.
    """
    with resources.files(__package__).joinpath("digits.npz").open("rb") as fh:
        archive = np.load(fh)
        images = archive["images"].astype(dtype) / 16.0
        target = archive["target"].astype(np.int64)
    return Digits(images=images, X=images.reshape(len(images), 64), y=target)


def train_test_split(
    X: np.ndarray, y: np.ndarray, test_fraction: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle with ``seed`` and split into (X_train, X_test, y_train, y_test)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(round(len(X) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return X[train], X[test], y[train], y[test]


def spirals(
    n_per_class: int = 100, classes: int = 3, noise: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``classes`` interleaved spiral arms in 2-D: X (N, 2), y (N,) int labels."""
    if n_per_class < 1 or classes < 2:
        raise ValueError("spirals needs n_per_class >= 1 and classes >= 2")
    rng = np.random.default_rng(seed)
    X = np.zeros((n_per_class * classes, 2))
    y = np.zeros(n_per_class * classes, dtype=np.int64)
    for k in range(classes):
        rows = slice(n_per_class * k, n_per_class * (k + 1))
        r = np.linspace(0.0, 1.0, n_per_class)
        theta = np.linspace(k * 4.0, (k + 1) * 4.0, n_per_class) + rng.normal(0, noise, n_per_class)
        X[rows] = np.c_[r * np.sin(theta), r * np.cos(theta)]
        y[rows] = k
    return X, y


def adding_problem(n: int = 256, steps: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hochreiter and Schmidhuber's adding problem.

    Each sequence has ``steps`` time steps with two features: a random value in [0, 1) and
    a marker that is 1 at exactly two positions (one in each half). The target is the sum
    of the two marked values. Returns X (n, steps, 2) and y (n, 1).
    """
    if steps < 2:
        raise ValueError("adding_problem needs at least 2 steps")
    rng = np.random.default_rng(seed)
    values = rng.random((n, steps))
    markers = np.zeros((n, steps))
    half = steps // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, steps, n)
    markers[np.arange(n), first] = 1.0
    markers[np.arange(n), second] = 1.0
    X = np.stack([values, markers], axis=-1)
    y = (values * markers).sum(axis=1, keepdims=True)
    return X, y


def echo_task(
    n: int = 256, steps: int = 30, delay: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Echo a random sign ``delay`` steps later: X (n, steps, 1), y (n, steps, 1).

    y[t] = x[t - delay] (0 for t < delay): the larger the delay, the further back the
    gradient must travel to learn it.
    """
    if not 0 <= delay < steps:
        raise ValueError(f"delay must be in [0, steps), got {delay} with steps={steps}")
    rng = np.random.default_rng(seed)
    X = rng.choice([-1.0, 1.0], size=(n, steps, 1))
    y = np.zeros_like(X)
    y[:, delay:] = X[:, : steps - delay]
    return X, y
