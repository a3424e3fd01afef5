"""Chapter 7 (the computational graph): 7.1 a topological order, 7.2 a scalar reverse-mode
engine graded against backprop_lab on expression graphs with shared subexpressions, 7.3 the
bytes a network's graph saves, predicted and compared with ``bl.measure_memory``.

The engine's diagnosis (7.2) looks at the first node, in reverse topological order, whose
gradient is wrong. Every node that uses it has the right gradient, so only three things can
have gone wrong there: how the contributions of its consumers were combined (overwritten
instead of summed), how much each consumer passed on (too early, before its own gradient
was complete, or more than once), or a local derivative. Each is tested against the numbers.
"""

from __future__ import annotations

import itertools

import numpy as np

import backprop_lab as bl
from backprop_lab.checks.oracle import register
from backprop_lab.checks.oracle.spec import ENGINE_GRADIENTS, Bug, ValueSpec

# --------------------------------------------------------------------------- graphs


def diamond_parents(depth: int) -> list[list[int]]:
    """Parent lists of a chain of ``depth`` diamonds (x -> a, b -> x')."""
    parents: list[list[int]] = [[]]
    top = 0
    for _ in range(depth):
        a = len(parents)
        parents += [[top], [top], [a, a + 1]]
        top = a + 2
    return parents


def _random_dag(rng, n: int) -> list[list[int]]:
    """A random DAG whose every node is an ancestor of the last one."""
    parents: list[list[int]] = [[] for _ in range(3)]
    for k in range(3, n):
        fan = int(rng.integers(1, 4))
        parents.append(sorted({int(rng.integers(0, k)) for _ in range(fan)}))
    used = {p for ps in parents for p in ps}
    dangling = [k for k in range(n - 1) if k not in used]
    parents[-1] = sorted(set(parents[-1]) | set(dangling))
    return parents


def _paths_to_root(parents: list[list[int]]) -> np.ndarray:
    """How many paths lead from each node to the last one (edges counted with multiplicity)."""
    n = len(parents)
    paths = np.zeros(n)
    paths[-1] = 1
    for c in range(n - 1, -1, -1):
        for p in parents[c]:
            paths[p] += paths[c]
    return paths


def _first_parent_only(parents: list[list[int]]) -> np.ndarray:
    seen = np.zeros(len(parents))
    k = len(parents) - 1
    while True:
        seen[k] = 1
        if not parents[k]:
            return seen
        k = parents[k][0]


# --------------------------------------------------------------------------- 7.1


def _draw_7_1(rng, k):
    if k == 0:  # a tree: no node is shared
        parents = [[], [], [0, 1], [], [2, 3], [], [4, 5]]
    elif k == 1:  # shared nodes, one used twice by the same node, inputs listed last first
        parents = [[], [], [1, 0], [2, 2], [2, 1], [4, 3], [5, 0]]
    elif k == 2:
        parents = diamond_parents(14)
    else:
        parents = _random_dag(rng, 30)
    return {"parents": parents}


def _edges(parents):
    return sorted({(p, c) for c, ps in enumerate(parents) for p in ps})


def _reference_7_1(c):
    return np.ones(len(c.parents)), np.ones(len(_edges(c.parents)))


def _breadth_first_reversed(parents):
    """inputs_first of a breadth-first walk from the root (with a visited set), reversed."""
    root = len(parents) - 1
    order, seen, queue = [], {root}, [root]
    while queue:
        node = queue.pop(0)
        order.append(node)
        for p in parents[node]:
            if p not in seen:
                seen.add(p)
                queue.append(p)
    position = {k: i for i, k in enumerate(reversed(order))}
    return np.array([1.0 if position[p] < position[c] else 0.0 for p, c in _edges(parents)])


def _mult(got):
    return got.get("multiplicity")


def _all_listed(c, got):
    """Every node listed (at least once), and the edge indicators present."""
    m = _mult(got)
    return (
        m is not None
        and np.shape(m) == (len(c.parents),)
        and bool(np.all(m >= 1))
        and got.get("inputs_first") is not None
    )


register(
    ValueSpec(
        id="7.1",
        title="topological_order",
        signature="topological_order(root)",
        inputs={"parents": ()},
        outputs=("multiplicity", "inputs_first"),
        cases=4,
        draw=_draw_7_1,
        reference=_reference_7_1,
        driver="topological_order",
        rtol=0.0,
        atol=1e-12,
        bugs=[
            Bug(
                "no visited set",
                "Shared nodes appear more than once: each node is listed once per path from "
                "the root to it (the input of a chain of 14 diamonds 16384 times). Keep a set "
                "of the nodes already visited and skip them.",
                variant=lambda c: (_paths_to_root(c.parents), None),
                outputs=("multiplicity",),
            ),
            Bug(
                "first parent only",
                "Nodes are missing: only the first parent of each node is followed. Visit every "
                "parent of every node.",
                variant=lambda c: (_first_parent_only(c.parents), None),
                outputs=("multiplicity",),
            ),
            Bug(
                "nodes missing",
                "Some nodes that the root depends on are missing from your list: every node "
                "reachable through .parents must appear once.",
                predicate=lambda c, got: (
                    _mult(got) is not None
                    and np.shape(_mult(got)) == (len(c.parents),)
                    and bool(np.all(_mult(got) <= 1))
                ),
                outputs=("multiplicity",),
            ),
            Bug(
                "reversed",
                "Your list is in the opposite order, the root first and the inputs last: that "
                "is the order in which backward visits the nodes. This function lists every "
                "node after its inputs (reverse your list, or append a node after its "
                "parents).",
                predicate=lambda c, got: _all_listed(c, got) and not np.any(got["inputs_first"]),
                outputs=("inputs_first",),
            ),
            Bug(
                "breadth-first, reversed",
                "Your list is a breadth-first walk from the root, reversed. That is not a "
                "topological order: a shared node is listed by its distance from the root, so "
                "it can come after a node that uses it through a longer path. Use a depth-first "
                "search that appends a node after the loop over its parents (a post-order).",
                variant=lambda c: (None, _breadth_first_reversed(c.parents)),
                outputs=("inputs_first",),
            ),
            Bug(
                "node before its inputs",
                "Some node comes before one of its inputs: it was listed before all of its "
                "parents were (a pre-order, or the order in which a walk from the root first "
                "meets the nodes). In a depth-first search, append a node only after the loop "
                "over its parents has finished (a post-order).",
                predicate=lambda c, got: (
                    _all_listed(c, got)
                    and np.shape(got["inputs_first"]) == (len(_edges(c.parents)),)
                ),
                outputs=("inputs_first",),
            ),
        ],
        forbidden=(),
    )
)


# --------------------------------------------------------------------------- 7.2

LIMIT = 25.0  # Python calls per node allowed in backward()
DIAMONDS = 14


def _tree_case():
    return [("input", 0.7), ("input", -1.3), ("input", 0.4), ("input", 1.1),
            ("mul", 0, 1), ("add", 4, 2), ("tanh", 5), ("mul", 6, 3)]  # fmt: skip


def _self_fan_out_case():
    # x * x, and x used once more at the end
    return [("input", 0.8), ("input", -0.6), ("mul", 0, 0), ("add", 2, 1), ("tanh", 3),
            ("mul", 4, 0)]  # fmt: skip


def _two_depths_case():
    # b = x * y feeds the output directly and through three more steps
    return [("input", 0.9), ("input", -0.7), ("input", 1.4), ("mul", 0, 1), ("tanh", 3),
            ("tanh", 4), ("mul", 5, 2), ("add", 3, 6)]  # fmt: skip


def diamond_description(depth: int, rng=None) -> list:
    """x -> (tanh x, x * w) -> sum, ``depth`` times: 2**depth paths from x to the output."""
    desc: list = [("input", 0.6)]
    top = 0
    for i in range(depth):
        w = 0.3 + 0.4 * ((i * 7) % 5) / 4 if rng is None else float(rng.uniform(0.3, 0.7))
        desc.append(("input", w))
        k = len(desc)
        desc += [("tanh", top), ("mul", top, k - 1), ("add", k, k + 1)]
        top = k + 2
    return desc


def random_expression(rng, n_inputs: int, n_ops: int, max_uses: int = 3) -> list:
    """A random expression graph with shared subexpressions; every node reaches the last.

    No node is used more than ``max_uses`` times (before the final sums that collect the
    nodes nobody used), which keeps the diagnosis of a wrong engine exhaustive."""
    desc: list = [("input", float(rng.uniform(-1.5, 1.5))) for _ in range(n_inputs)]
    uses = [0] * n_inputs

    def pick(candidates):
        free = [k for k in candidates if uses[k] < max_uses] or list(candidates)
        return int(free[int(rng.integers(0, len(free)))])

    for _ in range(n_ops):
        k = len(desc)
        recent = range(max(0, k - 4), k)
        op = str(rng.choice(["add", "mul", "tanh"], p=[0.35, 0.35, 0.3]))
        i = pick(recent if rng.random() < 0.7 else range(k))
        uses[i] += 1
        if op == "tanh":
            desc.append(("tanh", i))
        else:
            j = pick(range(k))
            uses[j] += 1
            desc.append((op, i, j))
        uses.append(0)
    for k in range(len(desc) - 1):
        if uses[k] == 0:
            desc.append(("add", len(desc) - 1, k))
            uses[k] += 1
            uses.append(0)
    return desc


def _parents_of(step) -> list[int]:
    return [] if step[0] == "input" else list(step[1:])


def engine_reference(description: list) -> tuple[np.ndarray, np.ndarray]:
    """Values and gradients of every node, from backprop_lab (hooks read the gradient
    reaching each intermediate node)."""
    nodes: list = []
    grads: dict[int, float] = {}
    for k, step in enumerate(description):
        op = step[0]
        if op == "input":
            t = bl.tensor(step[1], requires_grad=True)
        elif op == "add":
            t = nodes[step[1]] + nodes[step[2]]
        elif op == "mul":
            t = nodes[step[1]] * nodes[step[2]]
        else:
            t = bl.tanh(nodes[step[1]])
        if op != "input":
            t.register_hook(lambda g, k=k: grads.__setitem__(k, float(np.asarray(g))))
        nodes.append(t)
    nodes[-1].backward()
    values = np.array([float(t.item()) for t in nodes])
    out = np.array(
        [float(np.asarray(t.grad)) if t.is_leaf else grads.get(k, 0.0) for k, t in enumerate(nodes)]
    )
    return values, out


def _locals(description, values):
    """For each node u and each of its input slots: (parent index, d u / d parent)."""
    out = []
    for u, step in enumerate(description):
        op = step[0]
        if op == "add":
            out.append([(step[1], 1.0), (step[2], 1.0)])
        elif op == "mul":
            out.append([(step[1], values[step[2]]), (step[2], values[step[1]])])
        elif op == "tanh":
            out.append([(step[1], 1.0 - values[u] ** 2)])
        else:
            out.append([])
    return out


def _buggy_locals(description, values, u):
    """Local derivatives of node u under the classic slips in its backward rule."""
    step = description[u]
    op = step[0]
    if op == "mul":  # each operand gets its own value instead of the other's
        return [[(step[1], values[step[1]]), (step[2], values[step[2]])]]
    if op == "tanh":  # derivative taken at the input, or the square forgotten
        a = values[step[1]]
        return [[(step[1], 1.0 - a**2)], [(step[1], 1.0 - values[u])]]
    if op == "add":  # the second operand forgotten
        return [[(step[1], 1.0), (step[2], 0.0)]]
    return []


def _close(a, b, scale):
    return abs(a - b) <= 1e-6 * abs(b) + 1e-9 * max(scale, 1.0)


def _subset_sums(parts):
    sums = set()
    for r in range(0, len(parts)):
        for combo in itertools.combinations(range(len(parts)), r):
            sums.add(round(sum(parts[i] for i in combo), 12))
    return sorted(sums)


def _running_sums(parts, runs):
    """What a node passes on in total when its backward step runs ``runs`` times (once per
    path to it), each time with the sum of the contributions that had arrived by then: a sum
    of ``runs`` prefix sums, over every arrival order."""
    out = set()
    if runs < 2 or runs > 6 or len(parts) > 4:
        return []
    for perm in itertools.permutations(parts):
        prefix = [0.0, *itertools.accumulate(perm)]
        for idx in itertools.combinations_with_replacement(range(1, len(prefix)), runs):
            out.add(round(sum(prefix[i] for i in idx), 12))
    return sorted(out)


def _paths_from_root(description) -> list[int]:
    n = len(description)
    paths = [0] * n
    paths[-1] = 1
    for u in range(n - 1, -1, -1):
        for p in _parents_of(description[u]):
            paths[p] += paths[u]
    return paths


def analyse_engine(description, values, expected, got) -> set[str] | None:
    """None when ``got`` is right; else the categories that explain the first wrong gradient
    (several when the numbers cannot tell them apart on this graph; empty when none does)."""
    n = len(description)
    scale = float(np.max(np.abs(expected))) if n else 1.0
    if got is None or np.shape(got) != (n,) or not np.all(np.isfinite(got)):
        return set()
    wrong = [k for k in range(n) if not _close(got[k], expected[k], scale)]
    if not wrong:
        return None
    root = n - 1
    if not _close(got[root], 1.0, 1.0):
        return {"seed"}
    w = max(wrong)  # every node after w in the order (all its consumers) is right
    local = _locals(description, values)
    uses = [(u, slot) for u in range(n) for slot, (p, _) in enumerate(local[u]) if p == w]
    contrib = [expected[u] * local[u][slot][1] for u, slot in uses]
    paths = _paths_from_root(description)
    found: set[str] = set()
    if len(uses) >= 2 and any(_close(got[w], c, scale) for c in contrib):
        found.add("overwrite")
    # What each consumer may have passed on: its full gradient, part of it (it ran before its
    # gradient was complete), or a sum of running sums (it ran once per contribution), times
    # its local derivative or one of the classic slips in it.
    options = []
    for u, slot in uses:
        parts = [
            expected[v] * local[v][s][1]
            for v in range(n)
            for s, (p, _) in enumerate(local[v])
            if p == u
        ]
        amounts = [(expected[u], "ok")]
        if len(parts) >= 2:
            amounts += [(a, "order") for a in _subset_sums(parts)]
            amounts += [(a, "revisit") for a in _running_sums(parts, paths[u])]
        slopes = [(local[u][slot][1], "ok")]
        for variant in _buggy_locals(description, values, u):
            slopes.append((variant[slot][1], f"local_{description[u][0]}"))
        options.append([(a * s, {ka, ks} - {"ok"}) for a, ka in amounts for s, ks in slopes])
    if len(options) <= 4:
        for combo in itertools.product(*options):
            if _close(got[w], sum(v for v, _ in combo), scale):
                kinds = set().union(*(k for _, k in combo))
                if len(kinds) == 1:
                    found |= kinds
    return found


def _only_root(c):
    """grads of an engine whose output never passed its gradient on (its _backward ran
    before the seed, or not at all): 1 at the output, 0 everywhere else."""
    n = len(c.description)
    grads = np.zeros(n)
    grads[-1] = 1.0
    return None, grads, None


def _inputs_first(c):
    """grads of an engine that runs the nodes in topological order (inputs first): every
    node passes on its gradient before it has received any, except the output."""
    values, _ = c.extra["reference"]
    n = len(c.description)
    grads = np.zeros(n)
    grads[-1] = 1.0
    for p, slope in _locals(c.description, values)[-1]:
        grads[p] += slope
    return None, grads, None


def _draw_7_2(rng, k):
    if k == 0:
        desc = _tree_case()
    elif k == 1:
        desc = _self_fan_out_case()
    elif k == 2:
        desc = _two_depths_case()
    elif k == 6:
        desc = diamond_description(DIAMONDS)
    else:
        desc = random_expression(rng, n_inputs=3, n_ops=9 + 2 * k)
    return {"description": desc, "limit": LIMIT}


def _reference_7_2(c):
    if "reference" not in c.extra:
        c.extra["reference"] = engine_reference(c.description)
    values, grads = c.extra["reference"]
    return values, grads, np.array([LIMIT])


def _is(category):
    def predicate(c, got):
        values, grads = c.extra["reference"]
        found = analyse_engine(c.description, values, grads, got.get("grads"))
        if found is None or category in found:
            return True
        return False

    return predicate


register(
    ValueSpec(
        id="7.2",
        title="Value",
        signature="Value(data), a + b, a * b, a.tanh(), out.backward()",
        inputs={"description": (), "limit": ()},
        outputs=("values", "grads", "calls_per_node"),
        cases=7,
        draw=_draw_7_2,
        reference=_reference_7_2,
        driver="scalar_engine",
        rtol=1e-6,
        atol=1e-9,
        bugs=[
            Bug(
                "output never passed on",
                "Every gradient is 0 except the output's 1: the output's own _backward never "
                "ran with its gradient set. Set self.grad = 1.0 before the loop, and run every "
                "node's _backward, the output's included.",
                variant=_only_root,
                outputs=("grads",),
            ),
            Bug(
                "inputs first",
                "Only the output's direct inputs received a gradient: backward() ran the nodes "
                "in topological order, inputs first, so every other node passed its gradient "
                "on before it had received any. Run them in reverse topological order "
                "(for node in reversed(order)).",
                variant=_inputs_first,
                outputs=("grads",),
            ),
            Bug(
                "not seeded with 1",
                "After backward() the output's gradient is not 1. backward() must start by "
                "setting the output's grad to 1.0 (dL/dL = 1); left at 0, every product is 0 "
                "and every gradient stays 0.",
                predicate=_is("seed"),
                outputs=("grads",),
            ),
            Bug(
                "overwrite at a fan-out",
                "A value used by two or more operations gets the gradient of only one of them: "
                "a backward step assigns (=) where it must accumulate (+=). Each use adds its "
                "share to the value's grad; the multivariate chain rule sums over the uses, "
                "and for x * x both shares go into the same x.",
                predicate=_is("overwrite"),
                outputs=("grads",),
            ),
            Bug(
                "visited before all its consumers",
                "Some gradients are missing contributions: a node passed its gradient on "
                "before every node that uses it had sent its share. Visit the nodes in reverse "
                "topological order (each node after all of its consumers), not breadth-first "
                "or depth-first from the output.",
                predicate=_is("order"),
                outputs=("grads",),
            ),
            Bug(
                "shared node revisited",
                "Some gradients are too large: a shared node passed its gradient on more than "
                "once, each time with what it had accumulated so far (a recursion that walks "
                "into a node once per path). Run each node's backward step exactly once, "
                "after its gradient is complete, in topological order built with a visited "
                "set.",
                predicate=_is("revisit"),
                outputs=("grads",),
            ),
            Bug(
                "multiply rule",
                "The multiply gate's backward is wrong: for out = a * b, a receives "
                "out.grad * b.data and b receives out.grad * a.data (the OTHER operand).",
                predicate=_is("local_mul"),
                outputs=("grads",),
            ),
            Bug(
                "tanh rule",
                "tanh's backward is wrong: d tanh(a)/da = 1 - tanh(a)**2, which is "
                "1 - t**2 with t = out.data, the value tanh returned.",
                predicate=_is("local_tanh"),
                outputs=("grads",),
            ),
            Bug(
                "add rule",
                "The add gate's backward is wrong: it passes out.grad unchanged to BOTH operands.",
                predicate=_is("local_add"),
                outputs=("grads",),
            ),
            Bug(
                "exponential backward",
                "Your backward() makes more than 25 Python calls per node on a chain of 14 "
                "diamonds: it walks into a shared node once per path to it, and there are "
                "2**14 = 16384 paths. Visit every node once, in topological order.",
                predicate=lambda c, got: (
                    got.get("calls_per_node") is not None
                    and np.shape(got["calls_per_node"]) == (1,)
                    and float(got["calls_per_node"][0]) >= LIMIT
                ),
                outputs=("calls_per_node",),
            ),
        ],
        forbidden=ENGINE_GRADIENTS,
    )
)


# --------------------------------------------------------------------------- 7.3


def _draw_7_3(rng, k):
    batch = int([1, 7, 32, 5][k])
    depth = int([2, 3, 4, 3][k])
    dims = [int(d) for d in rng.integers(2, 40, size=depth + 1)]
    itemsize = [8, 8, 4, 4][k]
    activation = ["tanh", "sigmoid", "tanh", "sigmoid"][k]
    return {"batch": batch, "dims": dims, "itemsize": itemsize, "activation": activation}


def measured_saved_bytes(batch, dims, itemsize, activation, seed=0) -> int:
    """The peak of ``bl.measure_memory`` over the forward pass of exercise 7.3's network."""
    dtype = {8: "float64", 4: "float32"}[itemsize]
    rng = np.random.default_rng(seed)
    X = bl.tensor(rng.normal(size=(batch, dims[0])), requires_grad=True, dtype=dtype)
    Ws = [bl.tensor(rng.normal(size=(a, b)), requires_grad=True, dtype=dtype)
          for a, b in zip(dims, dims[1:])]  # fmt: skip
    bs = [bl.tensor(np.zeros(b), requires_grad=True, dtype=dtype) for b in dims[1:]]
    target = bl.tensor(np.zeros((batch, dims[-1])), dtype=dtype)
    act = {"tanh": bl.tanh, "sigmoid": bl.sigmoid}[activation]
    with bl.measure_memory() as mem:
        h = X
        for i, (W, b) in enumerate(zip(Ws, bs)):
            h = h @ W + b
            if i < len(Ws) - 1:
                h = act(h)
        loss = bl.mse(h, target)
        peak = mem.peak
        del loss
    return int(peak)


def _reference_7_3(c):
    return np.array([float(measured_saved_bytes(c.batch, c.dims, c.itemsize, c.activation))])


def _plus(fn):
    return lambda c: c.expected[0] + c.itemsize * fn(c)


def _hidden(c):
    return sum(c.dims[1:-1])


def _weights(c):
    return sum(a * b for a, b in zip(c.dims, c.dims[1:]))


register(
    ValueSpec(
        id="7.3",
        title="predicted_saved_bytes",
        inputs={"batch": (), "dims": (), "itemsize": ()},
        outputs=("bytes",),
        cases=4,
        draw=_draw_7_3,
        reference=_reference_7_3,
        driver="saved_bytes",
        rtol=0.0,
        atol=1e-12,
        bugs=[
            Bug(
                "biases counted",
                "Too many bytes by exactly the biases: the bias add saves nothing (its "
                "gradients need no values, only shapes).",
                variant=_plus(lambda c: sum(c.dims[1:])),
            ),
            Bug(
                "hidden activations twice",
                "Too many bytes by one batch of every hidden layer: either H is counted twice "
                "(the activation keeps it as its output and the next matmul as its input, but "
                "it is one array, stored once) or the pre-activation Z is counted too (the "
                "bias add saves nothing, and tanh/sigmoid keep only their output).",
                variant=_plus(lambda c: c.batch * _hidden(c)),
            ),
            Bug(
                "weights omitted",
                "Too few bytes by exactly the weight matrices: each matmul keeps its weight, "
                "which the backward pass needs for the input's gradient.",
                variant=_plus(lambda c: -_weights(c)),
            ),
            Bug(
                "input omitted",
                "Too few bytes by one input batch X: the first matmul keeps X, which the "
                "backward pass needs for the first weight's gradient.",
                variant=_plus(lambda c: -c.batch * c.dims[0]),
            ),
            Bug(
                "loss's saved difference omitted",
                "Too few bytes by one batch of outputs: mse keeps the difference Yhat - Y for "
                "its backward rule.",
                variant=_plus(lambda c: -c.batch * c.dims[-1]),
            ),
            Bug(
                "output counted twice",
                "Too many bytes by one batch of outputs: the last layer's output is not kept "
                "(the bias add saves nothing); mse keeps only its own difference Yhat - Y.",
                variant=_plus(lambda c: c.batch * c.dims[-1]),
            ),
            Bug(
                "hidden activations omitted",
                "Too few bytes by one batch of every hidden layer: tanh and sigmoid keep their "
                "output H (their derivative is computed from it), and the next matmul keeps "
                "the same array as its input.",
                variant=_plus(lambda c: -c.batch * _hidden(c)),
            ),
            Bug(
                "a scalar counted",
                "Too many bytes by exactly one number: nothing keeps the loss itself (a "
                "scalar); mse keeps only the difference Yhat - Y.",
                variant=_plus(lambda c: 1),
            ),
            Bug(
                "itemsize ignored",
                "Right in float64, too large in float32: multiply the number of entries by "
                "itemsize (4 bytes in float32, 8 in float64).",
                variant=lambda c: c.expected[0] * 8 / c.itemsize,
            ),
            Bug(
                "bits",
                "8 times too large: that is bits, not bytes.",
                variant=lambda c: c.expected[0] * 8,
            ),
            Bug(  # last: said only when no named slip fits (a single number has no ratio)
                "several slips",
                "No single slip explains your numbers. Go through the network op by op and "
                "list the arrays each one keeps (Section 7.1's table): matmul both operands, "
                "the bias add nothing, tanh and sigmoid their output, mse the difference. "
                "Count each distinct array once, in entries times itemsize.",
                predicate=lambda c, got: got.get("bytes") is not None,
            ),
        ],
        forbidden=(  # anything that measures the saved bytes instead of predicting them
            "backprop_lab.instrument.memory.measure_memory",
            "backprop_lab.instrument.memory.SavedMemory",
            "backprop_lab.trace.Trace.memory",
            "backprop_lab.explore.computational_graph.mlp_memory",
            "backprop_lab.explore.computational_graph.saved_rows",
            # building the network and reading what its nodes saved is measuring too: a
            # prediction needs no tensor at all
            "backprop_lab.instrument.trace.Trace",
            "backprop_lab.instrument.trace.trace",
            "backprop_lab.tensor.tensor",
            "backprop_lab.tensor.Tensor",
        ),
    )
)
