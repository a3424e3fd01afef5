"""Chapter 7's exercise checks (the computational graph): the right answers pass, and every
planted bug gets its own diagnosis, in practice mode and through the grading path. The
engine exercise (7.2) plants each classic bug of a hand-written reverse-mode engine."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest

from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

TOPO = """
def topological_order(root):
    order, visited = [], set()

    def visit(node):
        if node in visited:
            return
        visited.add(node)
        for parent in node.parents:
            visit(parent)
        order.append(node)

    visit(root)
    return order
"""

# The engine of exercise 7.2 with its backward closures and backward() as fragments, so
# that each planted bug replaces exactly one fragment.
ENGINE = """
class Value:
    def __init__(self, data, parents=()):
        self.data = float(data)
        self.grad = 0.0
        self.parents = parents
        self._backward = lambda: None

    def __add__(self, other):
        out = Value(self.data + other.data, (self, other))

        def _backward():
{ADD}
        out._backward = _backward
        return out

    def __mul__(self, other):
        out = Value(self.data * other.data, (self, other))

        def _backward():
{MUL}
        out._backward = _backward
        return out

    def tanh(self):
        out = Value(math.tanh(self.data), (self,))

        def _backward():
{TANH}
        out._backward = _backward
        return out

    def backward(self):
{BACKWARD}
"""

RIGHT_PARTS = {
    "ADD": """
self.grad += out.grad
other.grad += out.grad
""",
    "MUL": """
self.grad += other.data * out.grad
other.grad += self.data * out.grad
""",
    "TANH": """
self.grad += (1.0 - out.data**2) * out.grad
""",
    "BACKWARD": """
order = topological_order(self)
self.grad = 1.0
for node in reversed(order):
    node._backward()
""",
}


def engine(**parts):
    chosen = dict(RIGHT_PARTS, **parts)
    indent = {"ADD": 12, "MUL": 12, "TANH": 12, "BACKWARD": 8}
    body = {
        k: textwrap.indent(textwrap.dedent(v).strip("\n"), " " * indent[k])
        for k, v in chosen.items()
    }
    return ENGINE.format(**body)


SAVED = """
def predicted_saved_bytes(batch, dims, itemsize):
    weights = sum(a * b for a, b in zip(dims, dims[1:]))
    return itemsize * (weights + batch * sum(dims))
"""


def saved_with(expression):
    return f"""
def predicted_saved_bytes(batch, dims, itemsize):
    weights = sum(a * b for a, b in zip(dims, dims[1:]))
    return {expression}
"""


RIGHT = {"7.1": TOPO, "7.2": engine(), "7.3": SAVED}

PLANTED = [
    (
        "7.1",
        """
def topological_order(root):
    order = []

    def visit(node):
        for parent in node.parents:
            visit(parent)
        order.append(node)     # no record of what was visited

    visit(root)
    return order
""",
        "Keep a set of the nodes already visited",
    ),
    (
        "7.1",
        """
def topological_order(root):
    order, visited = [], set()

    def visit(node):
        if node in visited:
            return
        visited.add(node)
        order.append(node)     # before its parents: a pre-order
        for parent in node.parents:
            visit(parent)

    visit(root)
    return order
""",
        "a pre-order",
    ),
    (
        "7.1",
        TOPO.replace("    return order", "    return order[::-1]"),
        "the root first and the inputs last",
    ),
    (
        "7.1",
        """
def topological_order(root):
    chain = [root]
    while chain[-1].parents:
        chain.append(chain[-1].parents[0])
    return chain[::-1]
""",
        "only the first parent of each node is followed",
    ),
    (
        "7.2",
        engine(
            BACKWARD="""
for node in reversed(topological_order(self)):
    node._backward()
"""
        ),
        "must start by setting the output's grad to 1.0",
    ),
    (
        "7.2",
        engine(
            ADD="""
self.grad = out.grad
other.grad = out.grad
""",
            MUL="""
self.grad = other.data * out.grad
other.grad = self.data * out.grad
""",
            TANH="""
self.grad = (1.0 - out.data**2) * out.grad
""",
        ),
        "assigns (=) where it must accumulate (+=)",
    ),
    (
        "7.2",
        engine(
            BACKWARD="""
self.grad = 1.0
queue, seen = [self], {self}
while queue:
    node = queue.pop(0)          # breadth-first from the output
    node._backward()
    for parent in node.parents:
        if parent not in seen:
            seen.add(parent)
            queue.append(parent)
"""
        ),
        "before every node that uses it had sent its share",
    ),
    (
        "7.2",
        engine(
            BACKWARD="""
self.grad = 1.0

def walk(node):                  # once per path, with the running sum
    node._backward()
    for parent in node.parents:
        walk(parent)

walk(self)
"""
        ),
        "passed its gradient on more than once",
    ),
    (
        "7.2",
        engine(
            BACKWARD="""
self.grad = 1.0
order = []

def visit(node):                 # no visited set: shared nodes listed once per path
    for parent in node.parents:
        visit(parent)
    order.append(node)

visit(self)
for node in reversed(order):
    node._backward()
"""
        ),
        "more than 25 Python calls per node",
    ),
    (
        "7.2",
        engine(
            MUL="""
self.grad += self.data * out.grad
other.grad += other.data * out.grad
"""
        ),
        "the OTHER operand",
    ),
    (
        "7.2",
        engine(
            TANH="""
self.grad += (1.0 - self.data**2) * out.grad
"""
        ),
        "d tanh(a)/da = 1 - tanh(a)**2",
    ),
    (
        "7.2",
        engine(
            ADD="""
self.grad += out.grad
"""
        ),
        "unchanged to BOTH operands",
    ),
    # found in review: breadth-first reversed, a set, inputs-first order, an output that
    # never passed its gradient on, hidden activations left out, a scalar too many, two slips
    (
        "7.1",
        """
def topological_order(root):
    order, seen, queue = [], {root}, [root]
    while queue:
        node = queue.pop(0)
        order.append(node)
        for p in node.parents:
            if p not in seen:
                seen.add(p)
                queue.append(p)
    return order[::-1]
""",
        "a breadth-first walk from the root, reversed",
    ),
    ("7.1", TOPO.replace("    return order", "    return set(order)"), "returned a set"),
    (
        "7.2",
        engine(
            BACKWARD="""
order = topological_order(self)
self.grad = 1.0
for node in order:              # inputs first
    node._backward()
"""
        ),
        "Only the output's direct inputs received a gradient",
    ),
    (
        "7.2",
        engine(
            BACKWARD="""
order = topological_order(self)
for node in reversed(order):
    node._backward()
self.grad = 1.0                 # seeded too late
"""
        ),
        "the output's own _backward never ran with its gradient set",
    ),
    (
        "7.3",
        saved_with("itemsize * (weights + batch * (dims[0] + dims[-1]))"),
        "tanh and sigmoid keep their output H",
    ),
    ("7.3", saved_with("itemsize * (weights + batch * sum(dims) + 1)"), "exactly one number"),
    (
        "7.3",
        saved_with(
            "itemsize * (weights + batch * sum(dims) + sum(dims[1:]) + batch * sum(dims[1:-1]))"
        ),
        "No single slip explains your numbers",
    ),
    ("7.3", saved_with("itemsize * (weights + batch * sum(dims) + sum(dims[1:]))"), "the biases"),
    (
        "7.3",
        saved_with("itemsize * (weights + batch * sum(dims) + batch * sum(dims[1:-1]))"),
        "it is one array, stored once",
    ),
    ("7.3", saved_with("itemsize * batch * sum(dims)"), "each matmul keeps its weight"),
    ("7.3", saved_with("8 * (weights + batch * sum(dims))"), "Right in float64, too large"),
    ("7.3", saved_with("itemsize * (weights + batch * sum(dims[1:]))"), "the first matmul keeps X"),
]


def answer(exercise, source):
    namespace = {"np": np, "math": math}
    if exercise == "7.2":
        namespace["topological_order"] = answer_from_source(TOPO)
        return answer_from_source(source, namespace=namespace, name="Value")
    return answer_from_source(source, namespace=namespace)


@pytest.mark.parametrize("exercise", sorted(RIGHT))
def test_right_answers_pass_in_both_modes(exercise, tmp_path):
    ans = answer(exercise, RIGHT[exercise])
    practice = practice_verdict(exercise, ans)
    assert practice["passed"], practice["feedback"]
    assert grading_verdict(exercise, ans, folder=tmp_path)["passed"]


@pytest.mark.parametrize(
    "exercise, source, phrase", PLANTED, ids=[f"{e}-{k}" for k, (e, _, _) in enumerate(PLANTED)]
)
def test_planted_bug_is_diagnosed(exercise, source, phrase, tmp_path):
    ans = answer(exercise, source)
    practice = practice_verdict(exercise, ans)
    assert not practice["passed"]
    assert phrase in practice["feedback"], practice["feedback"]
    graded = grading_verdict(exercise, ans, folder=tmp_path)
    assert not graded["passed"]
    assert graded["feedback"] == practice["feedback"]


def test_every_exercise_has_two_planted_bugs():
    for exercise in RIGHT:
        assert sum(1 for e, _, _ in PLANTED if e == exercise) >= 2


def test_engine_diagnosis_points_at_the_first_wrong_node():
    """The analysis behind 7.2's diagnoses, on a graph small enough to work by hand:
    b = x * y is used directly by the output and, three steps later, again."""
    from backprop_lab.checks.oracle.computational_graph import analyse_engine, engine_reference

    desc = [("input", 0.9), ("input", -0.7), ("input", 1.4), ("mul", 0, 1), ("tanh", 3),
            ("tanh", 4), ("mul", 5, 2), ("add", 3, 6)]  # fmt: skip
    values, grads = engine_reference(desc)
    assert analyse_engine(desc, values, grads, grads) is None
    early = grads.copy()  # b passed on only the direct share (1) before the long path's
    early[0] = values[1] * 1.0
    early[1] = values[0] * 1.0
    assert analyse_engine(desc, values, grads, early) == {"order"}
    zero = np.zeros_like(grads)
    assert analyse_engine(desc, values, grads, zero) == {"seed"}


def test_measuring_instead_of_predicting_is_refused():
    source = """
def predicted_saved_bytes(batch, dims, itemsize):
    import backprop_lab as bl
    dtype = {8: "float64", 4: "float32"}[itemsize]
    X = bl.tensor(np.ones((batch, dims[0])), requires_grad=True, dtype=dtype)
    with bl.measure_memory() as mem:
        h = X
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            W = bl.tensor(np.ones((a, b)), requires_grad=True, dtype=dtype)
            h = h @ W + bl.tensor(np.zeros(b), requires_grad=True, dtype=dtype)
            if i < len(dims) - 2:
                h = bl.tanh(h)
        bl.mse(h, bl.tensor(np.zeros((batch, dims[-1])), dtype=dtype))
        return mem.peak
"""
    verdict = practice_verdict("7.3", answer("7.3", source))
    assert not verdict["passed"]
    assert "backprop_lab.instrument.memory.measure_memory" in verdict["feedback"]


def test_reading_the_recorded_graph_instead_of_predicting_is_refused():
    """Found in review: building the network under bl.trace() and summing the arrays its
    nodes saved passed 7.3 without predicting anything."""
    source = """
def predicted_saved_bytes(batch, dims, itemsize):
    import backprop_lab as bl
    dtype = {8: "float64", 4: "float32"}[itemsize]
    X = bl.tensor(np.ones((batch, dims[0])), requires_grad=True, dtype=dtype)
    with bl.trace() as tr:
        h = X
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            W = bl.tensor(np.ones((a, b)), requires_grad=True, dtype=dtype)
            h = h @ W + bl.tensor(np.zeros(b), requires_grad=True, dtype=dtype)
            if i < len(dims) - 2:
                h = bl.tanh(h)
        bl.mse(h, bl.tensor(np.zeros((batch, dims[-1])), dtype=dtype))
    seen = {}
    for ev in tr.forward:
        for a in ev.saved or ():
            if hasattr(a, "nbytes"):
                seen[id(a)] = a.nbytes
    return sum(seen.values())
"""
    verdict = practice_verdict("7.3", answer("7.3", source))
    assert not verdict["passed"]
    assert "backprop_lab.instrument.trace.trace" in verdict["feedback"]
