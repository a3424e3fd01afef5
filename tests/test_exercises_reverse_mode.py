"""Chapter 6's exercise checks (why reverse mode): the right answers pass, and every planted
bug gets its own diagnosis, in practice mode and through the grading path."""

from __future__ import annotations

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

NAMESPACE = {"np": np, "bl": bl}

ROWS = """
def jacobian_by_rows(f, x):
    y, pullback = bl.vjp(f, x)
    m = y.shape[0]
    rows = []
    for i in range(m):
        e = np.zeros(m)
        e[i] = 1.0
        rows.append(np.asarray(pullback(e)[0]))
    return np.stack(rows, axis=0)
"""

COLUMNS = """
def jacobian_by_columns(f, x):
    n = x.shape[0]
    cols = []
    for j in range(n):
        e = np.zeros(n)
        e[j] = 1.0
        cols.append(np.asarray(bl.jvp(f, (x,), (e,))[1]))
    return np.stack(cols, axis=1)
"""

CHEAPEST = """
def cheapest_order(dims):
    p = list(dims)
    n = len(p) - 1
    best = {(i, i): (0, i) for i in range(n)}
    for length in range(2, n + 1):
        for i in range(n - length + 1):
            j = i + length - 1
            best[i, j] = min(
                (
                    (best[i, k][0] + best[k + 1, j][0] + 2 * p[i] * p[k + 1] * p[j + 1],
                     (best[i, k][1], best[k + 1, j][1]))
                    for k in range(i, j)
                ),
                key=lambda o: o[0],
            )
    return best[0, n - 1]
"""

WAIST = """
def waist_jacobian(g, h, x):
    code_value, pullback = bl.vjp(h, x)
    k = code_value.shape[0]
    eye = np.eye(k)
    J_h = np.stack([np.asarray(pullback(eye[i])[0]) for i in range(k)], axis=0)
    J_g = np.stack([np.asarray(bl.jvp(g, (code_value,), (eye[j],))[1]) for j in range(k)], axis=1)
    return J_g @ J_h
"""

RIGHT = {"6.1": (ROWS, COLUMNS), "6.2": (CHEAPEST,), "6.3": (WAIST,)}

# (exercise, sources of the answers in order, a phrase the diagnosis must contain)
PLANTED = [
    (
        "6.1",
        (
            """
def jacobian_by_rows(f, x):
    m = f(bl.tensor(x)).shape[0]
    rows = []
    for i in range(m):
        y, pullback = bl.vjp(f, x)   # a forward pass per row
        e = np.zeros(m)
        e[i] = 1.0
        rows.append(np.asarray(pullback(e)[0]))
    return np.stack(rows, axis=0)
""",
            COLUMNS,
        ),
        "every row starts a new forward pass (bl.vjp",
    ),
    (
        "6.1",
        (
            """
def jacobian_by_rows(f, x):
    y, pullback = bl.vjp(f, x)
    e = np.zeros(y.shape[0])
    rows = []
    for i in range(y.shape[0]):
        e[i] = 1.0                    # the earlier 1s stay
        rows.append(np.asarray(pullback(e)[0]))
    return np.stack(rows, axis=0)
""",
            COLUMNS,
        ),
        "kept the 1s of the earlier rows",
    ),
    (
        "6.1",
        (
            """
def jacobian_by_rows(f, x):
    y, pullback = bl.vjp(f, x)
    rows = [np.asarray(pullback(e)[0]) for e in np.eye(y.shape[0])]
    return np.stack(rows, axis=1)     # rows stacked as columns
""",
            COLUMNS,
        ),
        "the right matrix transposed",
    ),
    (
        "6.1",
        (
            """
def jacobian_by_rows(f, x):
    n = x.shape[0]
    cols = [np.asarray(bl.jvp(f, (x,), (e,))[1]) for e in np.eye(n)]
    return np.stack(cols, axis=1)     # right matrix, wrong mode
""",
            COLUMNS,
        ),
        "it builds columns with bl.jvp",
    ),
    (
        "6.1",
        (
            ROWS,
            """
def jacobian_by_columns(f, x):
    y, pullback = bl.vjp(f, x)        # rows again
    return np.stack([np.asarray(pullback(e)[0]) for e in np.eye(y.shape[0])], axis=0)
""",
        ),
        "it builds rows with bl.vjp",
    ),
    (
        "6.1",
        (
            ROWS,
            """
def jacobian_by_columns(f, x):
    e = np.zeros(x.shape[0])
    cols = []
    for j in range(x.shape[0]):
        e[j] = 1.0
        cols.append(np.asarray(bl.jvp(f, (x,), (e,))[1]))
    return np.stack(cols, axis=1)
""",
        ),
        "the tangent kept the 1s",
    ),
    (
        "6.1",
        (
            """
def jacobian_by_rows(f, x):
    return bl.jacobian(f)(x)
""",
            COLUMNS,
        ),
        "backprop_lab.transforms.jacobian",
    ),
    # found in review: a new forward pass per row through bl.grad, finite differences,
    # a cotangent of ones, the primal output of bl.jvp
    (
        "6.1",
        (
            """
def jacobian_by_rows(f, x):
    y = f(bl.tensor(x)).numpy()
    return np.stack([bl.grad(lambda v, i=i: f(v)[i])(x) for i in range(y.shape[0])])
""",
            COLUMNS,
        ),
        "every row starts a new forward pass",
    ),
    (
        "6.1",
        (
            ROWS,
            """
from backprop_lab import numdiff
def jacobian_by_columns(f, x):
    return numdiff.numerical_jacobian(lambda v: f(bl.tensor(v)).numpy(), x)
""",
        ),
        "that is centered finite differences, not JVPs",
    ),
    (
        "6.1",
        (ROWS.replace("e[i] = 1.0", "e[:] = 1.0"), COLUMNS),
        "the pullback was given a vector of ones",
    ),
    (
        "6.1",
        (ROWS, COLUMNS.replace("(e,))[1]", "(e,))[0]")),
        "the column you want is the second item, the tangent",
    ),
    (
        "6.2",
        (CHEAPEST.replace("p[i] * p[k + 1] * p[j + 1]", "p[i] * p[k] * p[j + 1]"),),
        "The cost you report is not what the tree you return costs",
    ),
    (
        "6.2",
        (CHEAPEST.replace("for k in range(i, j)", "for k in range(i, max(i + 1, j - 1))"),),
        "an off-by-one in the range of k",
    ),
    (
        "6.2",
        (
            """
from backprop_lab.explore import reverse_mode as rm

def trees(i, j):
    if i == j:
        yield i
        return
    for k in range(i, j):
        for a in trees(i, k):
            for b in trees(k + 1, j):
                yield (a, b)

def cheapest_order(dims):       # tries every bracketing
    best = min(trees(0, len(dims) - 2), key=lambda t: rm.tree_flops(dims, t))
    return rm.tree_flops(dims, best), best
""",
        ),
        "an answer that tries them all cannot finish",
    ),
    (
        "6.2",
        (
            CHEAPEST.replace("def cheapest_order", "def dp")
            + """
def cheapest_order(dims):
    flops, tree = dp(dims)
    return flops // 2, tree         # multiplications, not FLOPs
""",
        ),
        "this book counts 2*a*b*c FLOPs",
    ),
    (
        "6.2",
        (
            """
def cheapest_order(dims):
    tree, flops = 0, 0
    for i in range(1, len(dims) - 1):
        flops += 2 * dims[0] * dims[i] * dims[i + 1]
        tree = (tree, i)
    return flops, tree
""",
        ),
        "starts at the left end",
    ),
    (
        "6.2",
        (
            """
def cheapest_order(dims):
    n = len(dims) - 1
    tree, flops = n - 1, 0
    for i in range(n - 2, -1, -1):
        flops += 2 * dims[i] * dims[i + 1] * dims[n]
        tree = (i, tree)
    return flops, tree
""",
        ),
        "that is forward mode",
    ),
    (
        "6.2",
        (
            """
def cheapest_order(dims):
    p, blocks, flops = list(dims), list(range(len(dims) - 1)), 0
    while len(blocks) > 1:
        k = min(range(1, len(p) - 1), key=lambda i: p[i - 1] * p[i] * p[i + 1])
        flops += 2 * p[k - 1] * p[k] * p[k + 1]
        blocks[k - 1 : k + 1] = [(blocks[k - 1], blocks[k])]
        del p[k]
    return flops, blocks[0]
""",
        ),
        "That greedy rule is not optimal",
    ),
    (
        "6.2",
        (
            CHEAPEST.replace("def cheapest_order", "def dp")
            + """
def cheapest_order(dims):
    flops, _ = dp(dims)
    tree = 0
    for i in range(1, len(dims) - 1):
        tree = (tree, i)
    return flops, tree              # the right cost, another tree
""",
        ),
        "the tree you return costs more",
    ),
    (
        "6.3",
        (
            """
def waist_jacobian(g, h, x):
    n = x.shape[0]
    cols = [np.asarray(bl.jvp(lambda v: g(h(v)), (x,), (e,))[1]) for e in np.eye(n)]
    return np.stack(cols, axis=1)
""",
        ),
        "that is pure forward mode",
    ),
    (
        "6.3",
        (
            """
def waist_jacobian(g, h, x):
    y, pullback = bl.vjp(lambda v: g(h(v)), x)
    return np.stack([np.asarray(pullback(e)[0]) for e in np.eye(y.shape[0])], axis=0)
""",
        ),
        "that is pure reverse mode",
    ),
    (
        "6.3",
        (
            """
def waist_jacobian(g, h, x):
    code_value, pullback = bl.vjp(h, x)
    k = code_value.shape[0]
    J_h = np.stack([np.asarray(pullback(e)[0]) for e in np.eye(k)], axis=0)
    out, pull_g = bl.vjp(g, code_value)
    J_g = np.stack([np.asarray(pull_g(e)[0]) for e in np.eye(out.shape[0])], axis=0)
    return J_g @ J_h
""",
        ),
        "builds the decoder's Jacobian row by row",
    ),
    (
        "6.3",
        (
            """
def waist_jacobian(g, h, x):
    code_value = h(bl.tensor(x)).numpy()
    k = code_value.shape[0]
    J_h = np.stack([np.asarray(bl.jvp(h, (x,), (e,))[1]) for e in np.eye(x.shape[0])], axis=1)
    J_g = np.stack([np.asarray(bl.jvp(g, (code_value,), (e,))[1]) for e in np.eye(k)], axis=1)
    return J_g @ J_h
""",
        ),
        "builds the encoder's Jacobian column by column",
    ),
    (
        "6.3",
        (
            """
def waist_jacobian(g, h, x):
    code_value, pullback = bl.vjp(h, x)
    k = code_value.shape[0]
    J_h = np.stack([np.asarray(pullback(e)[0]) for e in np.eye(k)], axis=0)
    J_g = np.stack([np.asarray(bl.jvp(g, (code_value,), (e,))[1]) for e in np.eye(k)], axis=1)
    return J_h @ J_g                # the factors in the wrong order
""",
        ),
        "in A @ B the last axis of A must match the first axis of B",
    ),
]


def answers(sources):
    out = []
    for src in sources:
        out.append(answer_from_source(src, namespace=NAMESPACE))
    return tuple(out)


@pytest.mark.parametrize("exercise", sorted(RIGHT))
def test_right_answers_pass_in_both_modes(exercise, tmp_path):
    ans = answers(RIGHT[exercise])
    assert practice_verdict(exercise, *ans)["passed"]
    assert grading_verdict(exercise, *ans, folder=tmp_path)["passed"]


@pytest.fixture(autouse=True)
def _short_time_limit(monkeypatch):
    """The long chain of 6.2 runs under 1 s instead of 10 here (the tests stay quick)."""
    from backprop_lab.checks.drivers import reverse_mode as driver

    monkeypatch.setattr(driver, "LONG_CHAIN_SECONDS", 1.0)


def test_long_chain_reference_agrees_with_brute_force():
    from backprop_lab.checks.oracle import reverse_mode as spec

    rng = np.random.default_rng(0)
    for _ in range(30):
        dims = [int(d) for d in rng.choice([1, 2, 3, 5, 8, 20, 64, 300], size=rng.integers(2, 9))]
        assert spec.optimal_cost(dims) == spec.brute_force_cost(dims)


@pytest.mark.parametrize(
    "exercise, sources, phrase", PLANTED, ids=[f"{e}-{k}" for k, (e, _, _) in enumerate(PLANTED)]
)
def test_planted_bug_is_diagnosed(exercise, sources, phrase, tmp_path):
    ans = answers(sources)
    practice = practice_verdict(exercise, *ans)
    assert not practice["passed"]
    assert phrase in practice["feedback"], practice["feedback"]
    graded = grading_verdict(exercise, *ans, folder=tmp_path)
    assert not graded["passed"]
    assert graded["feedback"] == practice["feedback"]


def test_every_exercise_has_two_planted_bugs():
    for exercise in RIGHT:
        assert sum(1 for e, _, _ in PLANTED if e == exercise) >= 2
