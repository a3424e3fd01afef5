"""The planted-bug table of chapters 1-5: every exercise, at least two bugs each, the phrase
its diagnosis must contain, in practice mode and through prepare/driver/verdict (grading
mode), with the same diagnosis in both. The right answers pass in both modes, and answers
that misbehave (NaN, wrong shapes, None, wrong tuple length, exceptions, objects that claim
to equal everything, answers that change their inputs) get a verdict, never a crash.
"""

from __future__ import annotations

import numpy as np
import pytest

from backprop_lab.checks.drivers.chain_rule import sin_cubed, two_paths
from backprop_lab.checks.drivers.jacobians import softmax
from backprop_lab.checks.oracle.what_backprop_computes import A, t, toy_loss
from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

# What the notebooks define before their exercises (the answer cells read these globals).
NOTEBOOK = {
    "np": np,
    "toy_loss": toy_loss,
    "A": A,
    "t": t,
    "sin_cubed": sin_cubed,
    "two_paths": two_paths,
    "softmax_np": softmax,
}

RIGHT = {
    "1.1": """
def fd_gradient(w, h=1e-6):
    w = np.array(w, dtype=float)
    grad = np.zeros_like(w)
    for k in range(w.size):
        e = np.zeros_like(w)
        e[k] = h
        grad[k] = (toy_loss(w + e) - toy_loss(w - e)) / (2 * h)
    return grad
""",
    "1.2": """
def lsq_backward(upstream, w):
    r = A @ w - t
    return upstream * (2.0 / len(t)) * (A.T @ r)
""",
    "2.1": """
def sin_cubed_backward(upstream, w):
    z = w**2
    a = np.sin(z)
    return upstream * (3 * a**2) * np.cos(z) * (2 * w)
""",
    "2.2": """
def two_paths_backward(upstream, x):
    y = x**2
    return upstream * (y + (x + np.cos(y)) * 2 * x)
""",
    "3.1": """
def softmax_jacobian(x):
    s = softmax_np(x)
    return np.diag(s) - np.outer(s, s)
""",
    "3.2": """
def softmax_backward(upstream, x):
    s = softmax_np(x)
    inner = np.sum(upstream * s, axis=1, keepdims=True)
    return s * (upstream - inner)
""",
    "4.1": """
def squared_loss_backward(upstream, Yhat, Y):
    B = Yhat.shape[0]
    dYhat = upstream * 2.0 * (Yhat - Y) / B
    return dYhat, -dYhat
""",
    "4.2": """
def two_layer_backward(dYhat, cache):
    X, W1, b1, W2, b2, Z, H = cache
    dW2 = H.T @ dYhat
    db2 = dYhat.sum(axis=0)
    dH = dYhat @ W2.T
    dZ = dH * H * (1.0 - H)
    dW1 = X.T @ dZ
    db1 = dZ.sum(axis=0)
    dX = dZ @ W1.T
    return dX, dW1, db1, dW2, db2
""",
    "5.1": """
def add_backward(upstream, x, y):
    return upstream, upstream.sum(axis=0)
""",
    "5.2": """
def multiply_backward(upstream, x, y):
    return upstream * y, upstream * x
""",
    "5.3": """
def max_backward(upstream, x, y):
    x_wins = x >= y
    return upstream * x_wins, upstream * ~x_wins
""",
    "5.4": """
def sigmoid_backward(upstream, x):
    s = 1.0 / (1.0 + np.exp(-x))
    return upstream * s * (1.0 - s)
""",
}


def _fd(step_line, divide):
    return f"""
def fd_gradient(w, h=1e-6):
    w = np.array(w, dtype=float)
    grad = np.zeros_like(w)
    for k in range(w.size):
        e = np.zeros_like(w)
        e[k] = h
        {step_line}
        grad[k] = {divide}
    return grad
"""


def _two_layer(**lines):
    body = {
        "dW2": "H.T @ dYhat",
        "db2": "dYhat.sum(axis=0)",
        "dH": "dYhat @ W2.T",
        "dZ": "dH * H * (1.0 - H)",
        "dW1": "X.T @ dZ",
        "db1": "dZ.sum(axis=0)",
        "dX": "dZ @ W1.T",
    }
    body.update(lines)
    text = "\n".join(f"    {k} = {v}" for k, v in body.items())
    return (
        "def two_layer_backward(dYhat, cache):\n"
        "    X, W1, b1, W2, b2, Z, H = cache\n"
        f"{text}\n"
        "    return dX, dW1, db1, dW2, db2\n"
    )


# (exercise, planted bug, a phrase the diagnosis must contain)
PLANTED = [
    # 1.1 finite differences
    ("1.1", _fd("", "(toy_loss(w + e) - toy_loss(w - e)) / h"), "divide their difference by 2h"),
    ("1.1", _fd("", "(toy_loss(w + e) - toy_loss(w)) / h"), "These are one-sided differences"),
    ("1.1", _fd("", "(toy_loss(w) - toy_loss(w - e)) / h"), "These are one-sided differences"),
    (
        "1.1",
        _fd("", "(toy_loss(w + e) - toy_loss(w)) / h"),
        "The largest relative error is about",
    ),  # fmt: skip
    (
        "1.1",
        """
def fd_gradient(w, h=1e-6):
    w = np.array(w, dtype=float)
    grad = np.zeros_like(w)
    e = np.zeros_like(w)
    for k in range(w.size):
        e[k] = h
        grad[k] = (toy_loss(w + e) - toy_loss(w - e)) / (2 * h)
    return grad
""",
        "still holds the steps of the earlier entries",
    ),
    (
        "1.1",
        """
def fd_gradient(w, h=1e-6):
    grad = np.zeros_like(w)
    for k in range(w.size):
        w[k] += h
        up = toy_loss(w)
        w[k] -= 2 * h
        grad[k] = (up - toy_loss(w)) / (2 * h)
    return grad
""",
        "changed its input w in place",
    ),
    # 1.2 least squares
    (
        "1.2",
        "def lsq_backward(upstream, w):\n    return upstream * (A.T @ (A @ w - t)) / len(t)\n",
        "the factor 2 is missing",
    ),  # fmt: skip
    (
        "1.2",
        "def lsq_backward(upstream, w):\n    return upstream * 2 * (A.T @ (A @ w - t))\n",
        "8 times too large",
    ),  # fmt: skip
    (
        "1.2",
        "def lsq_backward(upstream, w):\n    return 2 * (A.T @ (A @ w - t)) / len(t)\n",
        "multiply dL/dw by upstream",
    ),  # fmt: skip
    (
        "1.2",
        "def lsq_backward(upstream, w):\n    return upstream * 2 * (A @ (A @ w - t)) / 8\n",
        "raised ValueError at line 2",
    ),  # fmt: skip
    # 2.1 sin(w**2)**3
    (
        "2.1",
        "def sin_cubed_backward(upstream, w):\n"
        "    return upstream * 3 * np.sin(w**2) ** 2 * np.cos(w) * 2 * w\n",
        "it belongs at z = w**2",
    ),  # fmt: skip
    (
        "2.1",
        "def sin_cubed_backward(upstream, w):\n"
        "    return upstream * 3 * w**2 * np.cos(w**2) * 2 * w\n",
        "it belongs at a = sin(w**2)",
    ),  # fmt: skip
    (
        "2.1",
        "def sin_cubed_backward(upstream, w):\n"
        "    return upstream * 3 * np.sin(w**2) ** 2 * np.cos(w**2)\n",
        "The factor dz/dw = 2w of the first step is missing",
    ),  # fmt: skip
    (
        "2.1",
        "def sin_cubed_backward(upstream, w):\n"
        "    return 3 * np.sin(w**2) ** 2 * np.cos(w**2) * 2 * w\n",
        "does not change with upstream",
    ),  # fmt: skip
    # 2.2 two paths
    (
        "2.2",
        """
def two_paths_backward(upstream, x):
    y = x**2
    grad = upstream * y
    grad = upstream * (x + np.cos(y)) * 2 * x
    return grad
""",
        "path through y alone",
    ),
    (
        "2.2",
        "def two_paths_backward(upstream, x):\n    return upstream * x**2\n",
        "The path through y, (dz/dy)(dy/dx), is missing or was overwritten",
    ),  # fmt: skip
    (
        "2.2",
        "def two_paths_backward(upstream, x):\n"
        "    y = x**2\n    return upstream * (y + x + np.cos(y))\n",
        "lacks its last factor, dy/dx = 2x",
    ),  # fmt: skip
    # 3.1 softmax Jacobian
    (
        "3.1",
        "def softmax_jacobian(x):\n    return np.diag(x) - np.outer(x, x)\n",
        "compute s = softmax_np(x) first",
    ),  # fmt: skip
    (
        "3.1",
        "def softmax_jacobian(x):\n    s = softmax_np(x)\n    return np.diag(s) - s * s\n",
        "the outer product np.outer(s, s)",
    ),  # fmt: skip
    (
        "3.1",
        "def softmax_jacobian(x):\n    return softmax_np(x)\n",
        "You returned softmax(x) itself",
    ),  # fmt: skip
    (
        "3.1",
        "def softmax_jacobian(x):\n    s = softmax_np(x)\n    return -np.outer(s, s)\n",
        "The diagonal term is missing",
    ),  # fmt: skip
    # 3.2 softmax backward
    (
        "3.2",
        "def softmax_backward(upstream, x):\n    s = softmax_np(x)\n"
        "    return s * (upstream - np.sum(upstream * s, axis=0, keepdims=True))\n",
        "summed down the columns (axis=0)",
    ),  # fmt: skip
    (
        "3.2",
        "def softmax_backward(upstream, x):\n    s = softmax_np(x)\n"
        "    return s * (upstream - np.sum(upstream * s))\n",
        "summed over the whole batch",
    ),  # fmt: skip
    (
        "3.2",
        "def softmax_backward(upstream, x):\n    s = softmax_np(x)\n"
        "    return s * (upstream - np.sum(upstream * s, axis=1))\n",
        "keep the summed axis (keepdims=True)",
    ),  # fmt: skip
    (
        "3.2",
        "def softmax_backward(upstream, x):\n    return softmax_np(x) * upstream\n",
        "The term -<upstream, s> s is missing",
    ),  # fmt: skip
    # 4.1 squared loss
    (
        "4.1",
        "def squared_loss_backward(upstream, Yhat, Y):\n"
        "    d = upstream * (Yhat - Y) / Yhat.shape[0]\n    return d, -d\n",
        "the derivative of a square brings a factor 2",
    ),  # fmt: skip
    (
        "4.1",
        "def squared_loss_backward(upstream, Yhat, Y):\n"
        "    d = upstream * 2 * (Yhat - Y)\n    return d, -d\n",
        "4 times too large",
    ),  # fmt: skip
    (
        "4.1",
        "def squared_loss_backward(upstream, Yhat, Y):\n"
        "    d = upstream * 2 * (Yhat - Y) / Yhat.size\n    return d, -d\n",
        "not by the number of entries B * k = 12",
    ),  # fmt: skip
    (
        "4.1",
        "def squared_loss_backward(upstream, Yhat, Y):\n"
        "    d = upstream * 2 * (Yhat - Y) / Yhat.shape[0]\n    return d, d\n",
        "dY: dY has the sign of dYhat",
    ),  # fmt: skip
    # 4.2 the two-layer network
    (
        "4.2",
        _two_layer(dH="dYhat @ W2"),
        "W2.T has shape (2, 5), which fits: a transpose is probably missing.",
    ),  # fmt: skip
    (
        "4.2",
        _two_layer(dZ="dH * Z * (1.0 - Z)"),
        "dW2 right, db2 right, dW1 wrong, db1 wrong, dX wrong",
    ),  # fmt: skip
    ("4.2", _two_layer(dZ="dH * Z * (1.0 - Z)"), "so use H, the value the sigmoid returned"),
    ("4.2", _two_layer(dZ="dH"), "H * (1 - H) is missing between dH and dZ"),
    (
        "4.2",
        _two_layer(db2="dYhat"),
        "db2 has shape (4, 2); it should have the shape of b2, (2,). Summed over the axes",
    ),  # fmt: skip
    ("4.2", _two_layer(db1="dZ.mean(axis=0)"), "db1: It is the mean over the batch"),
    ("4.2", _two_layer(dW2="dYhat.T @ H"), "It is the right matrix transposed"),
    ("4.2", _two_layer(dX="dZ @ W1"), "W1.T has shape (5, 3), which fits"),
    # 5.1 add with broadcasting
    (
        "5.1",
        "def add_backward(upstream, x, y):\n    return upstream, upstream\n",
        "dy has shape (3, 4); it should have the shape of y, (4,). Summed over the axes",
    ),  # fmt: skip
    (
        "5.1",
        "def add_backward(upstream, x, y):\n    return upstream, upstream.mean(axis=0)\n",
        "dy: It is the mean over the 3 rows",
    ),  # fmt: skip
    (
        "5.1",
        "def add_backward(upstream, x, y):\n    return upstream, upstream.sum(axis=1)\n",
        "sums across each row (axis 1)",
    ),  # fmt: skip
    # 5.2 multiply
    (
        "5.2",
        "def multiply_backward(upstream, x, y):\n    return upstream * x, upstream * y\n",
        "the upstream times the OTHER input",
    ),  # fmt: skip
    (
        "5.2",
        "def multiply_backward(upstream, x, y):\n    return y, x\n",
        "does not change with upstream",
    ),  # fmt: skip
    # 5.3 max, ties to x
    (
        "5.3",
        "def max_backward(upstream, x, y):\n    return upstream * (x > y), upstream * (y >= x)\n",
        "sends the gradient to y; this exercise sends ties to x",
    ),  # fmt: skip
    (
        "5.3",
        "def max_backward(upstream, x, y):\n    tie = (x == y) * 0.5\n"
        "    return upstream * ((x > y) + tie), upstream * ((y > x) + tie)\n",
        "you split the gradient in half",
    ),  # fmt: skip
    (
        "5.3",
        "def max_backward(upstream, x, y):\n    return upstream * (x >= y), upstream * (y >= x)\n",
        "which counts it twice",
    ),  # fmt: skip
    (
        "5.3",
        "def max_backward(upstream, x, y):\n    return upstream * (x < y), upstream * (x >= y)\n",
        "The gradient goes to the smaller input",
    ),  # fmt: skip
    # 5.4 sigmoid
    (
        "5.4",
        "def sigmoid_backward(upstream, x):\n    return upstream * x * (1 - x)\n",
        "evaluate it at s, not at x",
    ),  # fmt: skip
    (
        "5.4",
        "def sigmoid_backward(upstream, x):\n    return upstream / (1 + np.exp(-x))\n",
        "the factor (1 - s) is missing",
    ),  # fmt: skip
    (
        "5.4",
        "def sigmoid_backward(upstream, x):\n"
        "    s = 1 / (1 + np.exp(-x))\n    return s * (1 - s)\n",
        "does not change with upstream",
    ),  # fmt: skip
]


def _ids(rows):
    return [f"{r[0]}-{i}" for i, r in enumerate(rows)]


def _both(exercise, answer, tmp_path):
    practice = practice_verdict(exercise, answer)
    graded = grading_verdict(exercise, answer, folder=tmp_path)
    return practice, graded


def _same(practice, graded):
    """The verdicts agree, apart from timings (measured anew in each run)."""
    for key in ("passed", "status", "score", "outputs", "diagnosis", "feedback"):
        if key == "feedback" and practice["status"] == "too_slow":
            continue
        assert practice[key] == graded[key], key


def test_every_exercise_has_two_planted_bugs():
    counts = {}
    for exercise, _, _ in PLANTED:
        counts[exercise] = counts.get(exercise, 0) + 1
    assert set(counts) == set(RIGHT) and min(counts.values()) >= 2, counts


@pytest.mark.parametrize("exercise", sorted(RIGHT))
def test_right_answer_passes_in_both_modes(exercise, tmp_path):
    answer = answer_from_source(RIGHT[exercise], NOTEBOOK)
    practice, graded = _both(exercise, answer, tmp_path)
    assert practice["passed"], practice["feedback"]
    _same(practice, graded)
    assert graded_under_another_seed(exercise, answer, tmp_path)["passed"]


def graded_under_another_seed(exercise, answer, tmp_path):
    return grading_verdict(exercise, answer, folder=tmp_path / "other", seed=271828)


@pytest.mark.parametrize("exercise, source, phrase", PLANTED, ids=_ids(PLANTED))
def test_planted_bug_is_diagnosed_the_same_in_both_modes(exercise, source, phrase, tmp_path):
    answer = answer_from_source(source, NOTEBOOK)
    practice, graded = _both(exercise, answer, tmp_path)
    assert not practice["passed"]
    assert phrase in practice["feedback"], practice["feedback"]
    _same(practice, graded)
    other = graded_under_another_seed(exercise, answer, tmp_path)
    assert phrase in other["feedback"], other["feedback"]


# --------------------------------------------------------------------------- misbehaving answers


class EqualsEverything(np.ndarray):
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False


class Liar:
    """Claims to equal everything, and to be close to anything."""

    def __eq__(self, other):
        return True

    def __array__(self, dtype=None, copy=None):
        raise TypeError("no")

    def __float__(self):
        return 0.0


MISBEHAVING = [
    ("5.4", "def f(upstream, x):\n    return upstream * np.nan\n", "NaN or infinite"),
    ("5.4", "def f(upstream, x):\n    return upstream / 0.0\n", "NaN or infinite"),
    ("5.4", "def f(upstream, x):\n    return upstream[:, :2]\n", "dx has shape (3, 2)"),
    ("5.4", "def f(upstream, x):\n    pass\n", "dx is None"),
    ("5.4", "def f(upstream, x):\n    return upstream, x\n", "returned a tuple of 2 values"),
    ("5.1", "def f(upstream, x, y):\n    return upstream\n", "returned a single ndarray"),
    ("5.1", "def f(upstream, x, y):\n    return (upstream,)\n", "returned 1 values"),
    ("5.1", "def f(upstream, x, y):\n    return None\n", "returned None"),
    ("5.1", "def f(upstream, x, y):\n    return upstream, None\n", "dy is None"),
    ("5.4", "def f(upstream, x):\n    return 'dx'\n", "dx is a str, not an array of numbers"),
    ("5.4", "def f(upstream, x):\n    return upstream + 1j\n", "dx is complex numbers"),
    ("5.4", "def f(upstream, x):\n    return {'dx': upstream}\n", "not an array of numbers"),
    ("5.4", "def f(upstream, x):\n    return Liar()\n", "dx is a Liar, not an array"),
    ("5.4", "def f(upstream, x):\n    return upstream.view(EqualsEverything)\n", "dx"),
    ("5.4", "def f(upstream, x):\n    return np.zeros(10**8)\n", "far more than asked for"),
    ("5.4", "def f(upstream, x):\n    return 1 / 0\n", "raised ZeroDivisionError at line 2"),
    ("5.4", "def f(upstream, x):\n    raise KeyError('boom')\n", "raised KeyError at line 2"),
    ("5.4", "def f(upstream, x):\n    import sys\n    sys.exit(3)\n", "raised SystemExit"),
    ("5.4", "def f(upstream, x):\n    return f(upstream, x)\n", "raised RecursionError"),
    ("5.4", "def f(upstream):\n    return upstream\n", "sigmoid_backward(upstream, x)"),
    (
        "5.4",
        "def f(upstream, x):\n    x[...] = 0\n    return upstream * 0.25\n",
        "changed its input x in place",
    ),  # fmt: skip
    ("4.2", "def f(dYhat, cache):\n    cache[5][...] = 0\n    return None\n", "returned None"),
    (
        "5.1",
        "class T(tuple):\n    def __iter__(self):\n        raise RuntimeError\n"
        "def f(upstream, x, y):\n    return T((upstream, upstream))\n",
        "cannot be read as arrays",
    ),  # fmt: skip
    (
        "5.4",
        "class E(Exception):\n    def __str__(self):\n        raise RuntimeError\n"
        "def f(upstream, x):\n    raise E()\n",
        "raised E at line 5",
    ),  # fmt: skip
    (
        "5.4",
        "def f(upstream, x):\n    return [[1.0, 2.0], [3.0]]\n",
        "dx is a list, not an array of numbers",
    ),  # fmt: skip
]


@pytest.mark.parametrize("exercise, source, phrase", MISBEHAVING, ids=_ids(MISBEHAVING))
def test_misbehaving_answers_get_a_verdict(exercise, source, phrase, tmp_path):
    scope = {**NOTEBOOK, "Liar": Liar, "EqualsEverything": EqualsEverything}
    answer = answer_from_source(source, scope)
    practice, graded = _both(exercise, answer, tmp_path)
    assert not practice["passed"]
    assert phrase in practice["feedback"], practice["feedback"]
    _same(practice, graded)


def test_an_equals_everything_array_is_judged_on_its_numbers():
    scope = {**NOTEBOOK, "EqualsEverything": EqualsEverything}
    right = answer_from_source(
        "def sigmoid_backward(upstream, x):\n"
        "    s = 1.0 / (1.0 + np.exp(-x))\n"
        "    return (upstream * s * (1.0 - s)).view(EqualsEverything)\n",
        scope,
    )
    assert practice_verdict("5.4", right)["passed"]
    zeros = answer_from_source(
        "def sigmoid_backward(upstream, x):\n    return np.zeros_like(x).view(EqualsEverything)\n",
        scope,
    )
    assert not practice_verdict("5.4", zeros)["passed"]


def test_an_answer_cannot_reach_the_expected_values_through_its_caller():
    """The attack of issue 14: walk up the stack from the answer to the checker's frames.
    In practice and grading mode the kernel-side frames hold inputs only."""
    source = """
import sys
def sigmoid_backward(upstream, x):
    frame = sys._getframe(1)
    found = []
    while frame is not None:
        for name, value in frame.f_locals.items():
            if name in ("expected", "expect", "want", "cases", "spec"):
                found.append(name)
        frame = frame.f_back
    if found:
        raise RuntimeError("leak: " + ", ".join(found))
    return upstream * 0.0
"""
    v = practice_verdict("5.4", answer_from_source(source, NOTEBOOK))
    assert "leak" not in v["feedback"], v["feedback"]


def test_prints_are_shown_when_the_answer_fails_and_hidden_when_it_passes():
    noisy = answer_from_source(
        "def sigmoid_backward(upstream, x):\n"
        "    print('shape of x:', x.shape)\n"
        "    return upstream * x * (1 - x)\n",
        NOTEBOOK,
    )
    text = practice_verdict("5.4", noisy)["feedback"]
    assert "Your function printed (first case):\n    | shape of x: (3, 4)" in text
    quiet_pass = answer_from_source(RIGHT["5.4"].replace("    s =", "    print('hi')\n    s ="),
                                    NOTEBOOK)  # fmt: skip
    assert "printed" not in practice_verdict("5.4", quiet_pass)["feedback"]


def test_an_error_only_on_the_large_input_is_reported_as_such(tmp_path):
    answer = answer_from_source(
        "def sigmoid_backward(upstream, x):\n"
        "    if x.size > 1000:\n"
        "        raise MemoryError('too big for me')\n"
        "    s = 1 / (1 + np.exp(-x))\n"
        "    return upstream * s * (1 - s)\n",
        NOTEBOOK,
    )
    practice, graded = _both("5.4", answer, tmp_path)
    assert "raised MemoryError on a large input at line 3" in practice["feedback"]
    _same(practice, graded)


def test_passing_the_forward_function_instead_of_the_rule():
    from backprop_lab.checks.drivers.chain_rule import sin_cubed

    text = practice_verdict("2.1", sin_cubed)["feedback"]
    assert "TypeError" in text and "sin_cubed_backward(upstream, w)" in text


def test_tensors_lists_and_float32_are_accepted():
    import backprop_lab as bl

    def as_tensor(upstream, x):
        s = 1 / (1 + np.exp(-x))
        return bl.tensor(upstream * s * (1 - s))

    def as_float32(upstream, x):
        s = 1 / (1 + np.exp(-x))
        return (upstream * s * (1 - s)).astype(np.float32)

    def as_list(upstream, x):
        s = 1 / (1 + np.exp(-x))
        return (upstream * s * (1 - s)).tolist()

    for answer in (as_tensor, as_float32, as_list):
        assert practice_verdict("5.4", answer)["passed"], answer.__name__


def test_an_answer_that_overwrites_upstream_in_place_is_told_why():
    answer = answer_from_source(
        "def sigmoid_backward(upstream, x):\n"
        "    s = 1 / (1 + np.exp(-x))\n"
        "    upstream *= s * (1 - s)\n"
        "    return upstream\n",
        NOTEBOOK,
    )
    v = practice_verdict("5.4", answer)
    assert v["status"] == "mutated" and "changed its input upstream in place" in v["feedback"]


def test_a_cache_entry_changed_in_place_is_named():
    source = RIGHT["4.2"].replace(
        "    dZ = dH * H * (1.0 - H)", "    H *= 1.0 - H\n    dZ = dH * H"
    )
    v = practice_verdict("4.2", answer_from_source(source, NOTEBOOK))
    assert "changed its input cache[6] in place" in v["feedback"]


def test_an_answer_that_forges_the_cost_clock_still_needs_the_right_large_outputs():
    """Rebinding the runner's clock fakes the timing, not the outputs on the large input."""
    from backprop_lab.checks import runner

    saved = runner._clock
    try:
        answer = answer_from_source(
            "def sigmoid_backward(upstream, x):\n"
            "    import backprop_lab.checks.runner as r\n"
            "    r._clock = lambda: 0.0\n"
            "    if x.size > 1000:\n"
            "        return 0 * x\n"
            "    s = 1 / (1 + np.exp(-x))\n"
            "    return upstream * s * (1 - s)\n",
            NOTEBOOK,
        )
        v = practice_verdict("5.4", answer)
    finally:
        runner._clock = saved
    assert not v["passed"] and "wrong on a large input" in v["feedback"]


def test_a_whole_grading_run_over_one_folder(tmp_path, monkeypatch):
    """Every exercise of chapters 1-5 prepared into one folder, then graded: no record of one
    exercise may land on another's (5.3 and 5.4 share a chapter)."""
    from backprop_lab.checks import check, oracle
    from backprop_lab.checks.seeding import CHECK_DIR_ENV

    seed = 5150
    oracle.prepare(sorted(RIGHT), seed, tmp_path)
    monkeypatch.setenv(CHECK_DIR_ENV, str(tmp_path))
    wrong = {"5.3", "2.2"}
    for exercise, source in RIGHT.items():
        if exercise in wrong:
            source = PLANTED[[r[0] for r in PLANTED].index(exercise)][1]
        check(exercise, answer_from_source(source, NOTEBOOK))
    for exercise in RIGHT:
        v = oracle.verdict(exercise, seed, tmp_path)
        assert v["exercise"] == exercise
        assert v["passed"] == (exercise not in wrong), (exercise, v["feedback"])
    names = sorted(p.name for p in (tmp_path / "outputs").iterdir())
    assert names == sorted(f"{e}.{ext}" for e in RIGHT for ext in ("json", "npz"))
