"""Chapter 6 (why reverse mode): 6.1 full Jacobians by rows (VJPs) and by columns (JVPs),
6.2 the cheapest bracketing of a chain (against brute force), 6.3 the Jacobian of a function
with a narrow middle in few passes."""

from __future__ import annotations

import numpy as np

from backprop_lab import numdiff
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import FINITE_DIFFERENCES, Bug, ValueSpec

NO_ENGINE_JACOBIAN = (
    "backprop_lab.transforms.jacobian",
    "backprop_lab.explore.reverse_mode.jacobian_cost",
    "backprop_lab.explore.reverse_mode.cost_grid",
    # this module itself (importable in practice mode): brute_force_cost and the trees
    "backprop_lab.checks.oracle.reverse_mode",
) + FINITE_DIFFERENCES


def _tanh_network_np(weights, biases, x):
    h = np.asarray(x, dtype=np.float64)
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = h @ w + b
        if i < len(weights) - 1:
            h = np.tanh(h)
    return h


def _layers(rng, sizes):
    weights = [rng.normal(size=(a, b)) / np.sqrt(a) for a, b in zip(sizes, sizes[1:])]
    biases = [0.1 * rng.normal(size=b) for b in sizes[1:]]
    return weights, biases


def _jacobian_fd(weights, biases, x):
    return numdiff.numerical_jacobian(lambda v: _tanh_network_np(weights, biases, v), x)


# --------------------------------------------------------------------------- 6.1

_SHAPES_6_1 = [(5, 3, 2), (4, 6, 3)]  # (n, m, depth): inputs != outputs in both


def _draw_6_1(rng, k):
    n, m, depth = _SHAPES_6_1[k]
    sizes = [n] + [7] * (depth - 1) + [m]
    weights, biases = _layers(rng, sizes)
    return {"weights": weights, "biases": biases, "x": rng.uniform(-1.0, 1.0, size=n)}


def _reference_6_1(c):
    J = _jacobian_fd(c.weights, c.biases, c.x)
    m, n = J.shape
    return J, np.array([1.0, m]), J, np.array([n, 0.0])


def _nm(c):
    return c.x.shape[0], len(c.biases[-1])


def _passes(got, name):
    p = got.get(name)
    return None if p is None or np.shape(p) != (2,) else p


def _rows_vjp_per_row(c, got):
    n, m = _nm(c)
    p = _passes(got, "passes_rows")
    return p is not None and m > 1 and p[0] >= m and p[1] == m


def _rows_with_jvps(c, got):
    n, m = _nm(c)
    p = _passes(got, "passes_rows")
    return p is not None and p[1] == 0 and p[0] == n


def _rows_extra_call(c, got):
    n, m = _nm(c)
    p = _passes(got, "passes_rows")
    return p is not None and p[0] == 2 and p[1] == m


def _columns_with_vjps(c, got):
    p = _passes(got, "passes_columns")
    return p is not None and p[1] > 0


def _rows_finite_differences(c, got):
    n, m = _nm(c)
    p = _passes(got, "passes_rows")
    return p is not None and p[1] == 0 and p[0] == 2 * n


def _columns_finite_differences(c, got):
    n, m = _nm(c)
    p = _passes(got, "passes_columns")
    return p is not None and p[1] == 0 and p[0] == 2 * n


def _f_of_x_6_1(c):
    return _tanh_network_np(c.weights, c.biases, c.x)


def _columns_extra_call(c, got):
    n, m = _nm(c)
    p = _passes(got, "passes_columns")
    return p is not None and p[1] == 0 and p[0] == n + 1


register(
    ValueSpec(
        id="6.1",
        title="jacobian_by_rows",
        signature="jacobian_by_rows(f, x) and jacobian_by_columns(f, x)",
        inputs={"weights": (), "biases": (), "x": ()},
        outputs=("J_rows", "passes_rows", "J_columns", "passes_columns"),
        draw=_draw_6_1,
        reference=_reference_6_1,
        driver="jacobian_rows_and_columns",
        answers=2,
        rtol=1e-6,
        atol=1e-8,
        bugs=[
            Bug(
                "bl.vjp called once per row",
                "f ran once per output: every row starts a new forward pass (bl.vjp, or "
                "bl.grad, called inside the loop). One call of bl.vjp returns f(x) and a "
                "pullback that can be called again and again (the graph is kept), so the rows "
                "cost one forward pass and m backward passes.",
                predicate=_rows_vjp_per_row,
                outputs=("passes_rows",),
            ),
            Bug(
                "rows built with JVPs",
                "jacobian_by_rows made no backward pass and ran f once per input: it builds "
                "columns with bl.jvp. Build each row with the pullback of bl.vjp, one per "
                "output.",
                predicate=_rows_with_jvps,
                outputs=("passes_rows",),
            ),
            Bug(
                "f evaluated separately",
                "f ran twice: bl.vjp already returns f(x) as its first result, so there is no "
                "need to evaluate f again to learn the number of outputs.",
                predicate=_rows_extra_call,
                outputs=("passes_rows",),
            ),
            Bug(
                "rows by finite differences",
                "jacobian_by_rows ran f twice per input and made no backward pass: that is "
                "centered finite differences, not VJPs. Call bl.vjp once and its pullback once "
                "per output, with a unit vector.",
                predicate=_rows_finite_differences,
                outputs=("passes_rows",),
            ),
            Bug(
                "cotangent of ones (rows)",
                "Every row of your matrix is the sum of all the rows: the pullback was given a "
                "vector of ones (the gradient of sum(f)), not the unit vector e_i.",
                variant=lambda c: (
                    np.tile(c.expected[0].sum(axis=0), (c.expected[0].shape[0], 1)),
                    None,
                    None,
                    None,
                ),
                outputs=("J_rows",),
            ),
            Bug(
                "unit vector not reset (rows)",
                "Row i of your matrix is the sum of rows 0 to i: the unit vector kept the 1s of "
                "the earlier rows. Start every row from a fresh vector of zeros.",
                variant=lambda c: (np.cumsum(c.expected[0], axis=0), None, None, None),
                outputs=("J_rows",),
            ),
            Bug(
                "columns built with VJPs",
                "jacobian_by_columns made backward passes: it builds rows with bl.vjp. Build "
                "each column with bl.jvp and a unit tangent, one per input, with no backward "
                "pass.",
                predicate=_columns_with_vjps,
                outputs=("passes_columns",),
            ),
            Bug(
                "columns by finite differences",
                "jacobian_by_columns ran f twice per input and made no backward pass: that is "
                "centered finite differences, not JVPs. Give bl.jvp the unit tangent e_j "
                "instead, one call per input.",
                predicate=_columns_finite_differences,
                outputs=("passes_columns",),
            ),
            Bug(
                "primal output of bl.jvp",
                "Every column of your matrix is f(x): bl.jvp returns the pair (f(x), J v), and "
                "the column you want is the second item, the tangent.",
                variant=lambda c: (
                    None,
                    None,
                    np.tile(_f_of_x_6_1(c)[:, None], (1, c.x.shape[0])),
                    None,
                ),
                outputs=("J_columns",),
            ),
            Bug(
                "f evaluated once more (columns)",
                "f ran n + 1 times: the n JVPs already give every column (and f(x) with them); "
                "the extra evaluation is not needed.",
                predicate=_columns_extra_call,
                outputs=("passes_columns",),
            ),
            Bug(
                "unit vector not reset (columns)",
                "Column j of your matrix is the sum of columns 0 to j: the tangent kept the 1s "
                "of the earlier columns. Start every column from a fresh vector of zeros.",
                variant=lambda c: (None, None, np.cumsum(c.expected[2], axis=1), None),
                outputs=("J_columns",),
            ),
        ],
        forbidden=NO_ENGINE_JACOBIAN,
    )
)


# --------------------------------------------------------------------------- 6.2


def _trees(i, j):
    """Every bracketing of factors i..j (inclusive), as nested pairs."""
    if i == j:
        yield i
        return
    for k in range(i, j):
        for left in _trees(i, k):
            for right in _trees(k + 1, j):
                yield (left, right)


def _cost(p, tree):
    def walk(t):
        if not isinstance(t, tuple):
            return 0, p[t], p[t + 1]
        fa, ra, ca = walk(t[0])
        fb, _, cb = walk(t[1])
        return fa + fb + 2 * ra * ca * cb, ra, cb

    return walk(tree)[0]


def brute_force_cost(dims):
    """The smallest cost over every bracketing (exhaustive: fine up to about 10 factors)."""
    p = list(dims)
    return min(_cost(p, t) for t in _trees(0, len(p) - 2))


def left_cost(dims):
    p = list(dims)
    return sum(2 * p[0] * p[i - 1] * p[i] for i in range(2, len(p)))


def right_cost(dims):
    p = list(dims)
    n = len(p) - 1
    return sum(2 * p[i - 1] * p[i] * p[n] for i in range(1, n))


def greedy_cost(dims):
    """Multiply the adjacent pair that is cheapest right now, repeatedly."""
    p = list(dims)
    total = 0
    while len(p) > 2:
        k = min(range(1, len(p) - 1), key=lambda i: p[i - 1] * p[i] * p[i + 1])
        total += 2 * p[k - 1] * p[k] * p[k + 1]
        del p[k]
    return total


_SIZES = [1, 2, 3, 4, 5, 8, 10, 16, 20, 32, 50, 64, 100, 128, 200, 300, 500]


LONG_CHAIN = 16  # factors in the last case: about 1e7 bracketings, too many to try them all


def optimal_cost(dims):
    """The smallest cost by its definition: the best split of every contiguous sub-chain,
    each sub-chain's best cost remembered (for the long case, where brute force cannot go)."""
    p = list(dims)
    memo = {}

    def best(i, j):
        if i == j:
            return 0
        if (i, j) not in memo:
            memo[i, j] = min(
                best(i, k) + best(k + 1, j) + 2 * p[i] * p[k + 1] * p[j + 1] for k in range(i, j)
            )
        return memo[i, j]

    return best(0, len(p) - 2)


def _draw_6_2(rng, k):
    if k == 4:  # a long chain: only an answer that does not try every bracketing finishes
        while True:
            dims = [int(s) for s in rng.choice(_SIZES, size=LONG_CHAIN + 1)]
            best = optimal_cost(dims)
            if min(left_cost(dims), right_cost(dims), greedy_cost(dims)) > best:
                break
        return {"dims": dims}
    if k == 0:  # a gradient: a scalar at the loss end
        dims = [1] + list(rng.choice(_SIZES[4:], size=5))
    elif k == 1:  # a narrow waist in the middle
        big = list(rng.choice(_SIZES[10:], size=6))
        dims = big[:3] + [int(rng.choice([2, 3, 4]))] + big[3:]
    else:  # neither extreme nor the greedy rule is optimal (and 8-9 factors in case 3)
        length = 7 if k == 2 else 10
        while True:
            dims = [int(s) for s in rng.choice(_SIZES, size=length)]
            best = brute_force_cost(dims)
            if min(left_cost(dims), right_cost(dims), greedy_cost(dims)) > best:
                break
    return {"dims": [int(d) for d in dims]}


def _reference_6_2(c):
    cost = brute_force_cost(c.dims) if len(c.dims) <= 11 else optimal_cost(c.dims)
    best = np.array([float(cost)])
    return best, best


def _reports_its_tree(c, got):
    f, t = got.get("flops"), got.get("tree_flops")
    return f is not None and t is not None and np.shape(f) == (1,) and float(f[0]) == float(t[0])


def _cost_not_its_tree(c, got):
    f, t = got.get("flops"), got.get("tree_flops")
    return f is not None and t is not None and np.shape(f) == (1,) and float(f[0]) != float(t[0])


def _pair(fn):
    return lambda c: (np.array([float(fn(c.dims))]), np.array([float(fn(c.dims))]))


register(
    ValueSpec(
        id="6.2",
        title="cheapest_order",
        inputs={"dims": ()},
        outputs=("flops", "tree_flops"),
        cases=5,
        draw=_draw_6_2,
        reference=_reference_6_2,
        driver="chain_order",
        rtol=0.0,
        atol=1e-12,
        bugs=[
            Bug(
                "tree does not match the cost",
                "The cost you report is the minimum, but the tree you return costs more: "
                "rebuild the tree from the split that achieved the minimum of each sub-chain "
                "(an off-by-one in the split index is the usual cause).",
                predicate=lambda c, got: (
                    got.get("flops") is not None
                    and np.shape(got["flops"]) == (1,)
                    and float(got["flops"][0]) == float(c.expected[0][0])
                    and float(got["tree_flops"][0]) >= float(c.expected[1][0])
                ),
                outputs=("tree_flops",),
            ),
            Bug(
                "multiplications instead of FLOPs",
                "Your cost is half the true one in every case: you count a*b*c "
                "multiplications per product; this book counts 2*a*b*c FLOPs (a multiply and "
                "an add per term).",
                variant=lambda c: (c.expected[0] / 2, None),
                outputs=("flops",),
            ),
            Bug(
                "always from the left",
                "Your answer is always the bracketing that starts at the left end, "
                "((M1 M2) M3) ...: that is optimal only when p_0 is the smallest size (a "
                "scalar loss). Compare every split point of every sub-chain.",
                variant=_pair(left_cost),
            ),
            Bug(
                "always from the right",
                "Your answer is always the bracketing that starts at the right end, "
                "M1 (M2 (M3 ...)): that is forward mode, optimal only when p_N is the smallest "
                "size. Compare every split point of every sub-chain.",
                variant=_pair(right_cost),
            ),
            Bug(
                "greedy",
                "Your answer multiplies the cheapest adjacent pair first, again and again. "
                "That greedy rule is not optimal: a product that is cheap now can leave an "
                "expensive shape behind. Compare every split point of every sub-chain "
                "(dynamic programming).",
                variant=_pair(greedy_cost),
            ),
            Bug(
                "cost of a split miscounted",
                "The cost you report is not what the tree you return costs. Look at the cost of "
                "a split: factors i..k multiply to a p_i x p_(k+1) matrix and factors k+1..j to "
                "a p_(k+1) x p_(j+1) matrix, so joining them costs 2 * p_i * p_(k+1) * "
                "p_(j+1) (with factors counted from 0).",
                predicate=_cost_not_its_tree,
            ),
            Bug(
                "not every split tried",
                "Your tree costs exactly what you report, but a cheaper bracketing exists: "
                "your search misses some bracketings, or keeps the wrong one. For every "
                "sub-chain i..j try every split point k = i, ..., j - 1 (an off-by-one in the "
                "range of k is the usual cause) and keep the smallest total.",
                predicate=_reports_its_tree,
            ),
        ],
        forbidden=("backprop_lab.checks.oracle.reverse_mode",),
    )
)


# --------------------------------------------------------------------------- 6.3

N_IN, K_WAIST, M_OUT, HIDDEN = 40, 3, 30, 16
BUDGET = [2.0, float(K_WAIST), float(K_WAIST + 1)]  # calls of h, backward passes, calls of g


def _draw_6_3(rng, k):
    encoder = _layers(rng, [N_IN, HIDDEN, K_WAIST])
    decoder = _layers(rng, [K_WAIST, HIDDEN, M_OUT])
    return {
        "encoder": encoder,
        "decoder": decoder,
        "x": rng.uniform(-1.0, 1.0, size=N_IN),
        "budget": list(BUDGET),
    }


def _reference_6_3(c):
    def f(v):
        return _tanh_network_np(*c.decoder, _tanh_network_np(*c.encoder, v))

    return numdiff.numerical_jacobian(f, c.x), np.array(BUDGET)


def _p(got):
    p = got.get("passes")
    return None if p is None or np.shape(p) != (3,) else p


register(
    ValueSpec(
        id="6.3",
        title="waist_jacobian",
        signature="waist_jacobian(g, h, x)",
        inputs={"encoder": (), "decoder": (), "x": (), "budget": ()},
        outputs=("J", "passes"),
        draw=_draw_6_3,
        reference=_reference_6_3,
        driver="waist_jacobian",
        rtol=1e-6,
        atol=1e-8,
        bugs=[
            Bug(
                "pure forward mode",
                "Your code runs g and h once per input (40 JVPs through the whole function): "
                "that is pure forward mode, 40 passes. Only the k = 3 columns of g's Jacobian "
                "need JVPs; the encoder's k rows are cheaper with VJPs.",
                predicate=lambda c, got: (
                    _p(got) is not None and _p(got)[0] >= N_IN and _p(got)[2] >= N_IN
                ),
                outputs=("passes",),
            ),
            Bug(
                "encoder by columns",
                "Your code runs h once per input: it builds the encoder's Jacobian column by "
                "column with JVPs (40 passes). It has only k = 3 rows: build them with the "
                "pullback of one bl.vjp through h.",
                predicate=lambda c, got: (
                    _p(got) is not None and _p(got)[0] >= N_IN and _p(got)[2] < N_IN
                ),
                outputs=("passes",),
            ),
            Bug(
                "pure reverse mode",
                "Your code makes one backward pass per output (30 VJPs through the whole "
                "function): that is pure reverse mode. Only the k = 3 rows of h's Jacobian "
                "need VJPs; the decoder's k columns are cheaper with JVPs.",
                predicate=lambda c, got: (
                    _p(got) is not None and _p(got)[1] == M_OUT and _p(got)[0] <= 2
                ),
                outputs=("passes",),
            ),
            Bug(
                "decoder by rows",
                "Your code makes more than k = 3 backward passes: it builds the decoder's "
                "Jacobian row by row with VJPs (30 of them). It has only k columns: build them "
                "with k JVPs through g.",
                predicate=lambda c, got: (
                    _p(got) is not None and _p(got)[1] > M_OUT and _p(got)[0] <= 2
                ),
                outputs=("passes",),
            ),
        ],
        forbidden=NO_ENGINE_JACOBIAN,
    )
)
