"""Kernel side of chapter 7's checks (the computational graph).

* ``topological_order`` (7.1): builds a graph of :class:`GraphNode` objects from a list of
  parent indices, calls the answer on the last node, and reports how often each node was
  listed and, for every edge, whether the input came before the node that uses it.
* ``scalar_engine`` (7.2): builds an expression graph from a serialized description with
  the student's ``Value`` class, runs ``backward()`` on the last node, and reports every
  node's value and gradient and the number of Python function calls that ``backward()``
  made per node (at least ``limit``: every engine within the limit reads the same).

The descriptions are data: ``("input", x)``, ``("add", i, j)``, ``("mul", i, j)``,
``("tanh", i)``, with ``i, j`` indices of earlier nodes. No answer and no expected value
lives here.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from backprop_lab.checks.drivers import driver

MAX_LISTED = 2_000_000


class GraphNode:
    """A node of a test graph: ``parents`` are the nodes it was computed from."""

    __slots__ = ("name", "parents")

    def __init__(self, name: str, parents: tuple) -> None:
        self.name = name
        self.parents = parents

    def __repr__(self) -> str:
        return f"<GraphNode {self.name}>"


def build_graph(parents: list[list[int]]) -> list[GraphNode]:
    nodes: list[GraphNode] = []
    for k, ps in enumerate(parents):
        nodes.append(GraphNode(f"n{k}", tuple(nodes[i] for i in ps)))
    return nodes


@driver("topological_order")
def topological_order(answers: tuple, args: tuple) -> tuple:
    """Exercise 7.1: ``(multiplicity, inputs_first)``."""
    (answer,) = answers
    (parents,) = args
    nodes = build_graph(parents)
    index = {id(n): k for k, n in enumerate(nodes)}
    result = answer(nodes[-1])
    if isinstance(result, (set, frozenset)):
        raise TypeError(
            "topological_order returned a set, which keeps no order: return a list, with every "
            "node after its inputs"
        )
    if result is None or isinstance(result, (str, bytes)) or not hasattr(result, "__iter__"):
        raise TypeError(
            f"topological_order must return a list of nodes, not {type(result).__name__}"
        )
    listed = []
    for item in result:
        k = index.get(id(item))
        if k is None:
            raise TypeError(
                f"topological_order returned {item!r}, which is not a node of the graph: return "
                "the node objects themselves"
            )
        listed.append(k)
        if len(listed) > MAX_LISTED:
            break
    multiplicity = np.bincount(np.array(listed, dtype=np.int64), minlength=len(nodes))
    first = {}
    for pos, k in enumerate(listed):
        first.setdefault(k, pos)
    edges = sorted({(p, c) for c, ps in enumerate(parents) for p in ps})
    inputs_first = np.array(
        [1.0 if p in first and c in first and first[p] < first[c] else 0.0 for p, c in edges]
    )
    return multiplicity.astype(np.float64), inputs_first


def build_expression(Value: Any, description: list) -> list:
    """The nodes of ``description`` built with ``Value`` (operators ``+``, ``*``, ``.tanh()``)."""
    nodes: list = []
    for step in description:
        op = step[0]
        if op == "input":
            nodes.append(Value(float(step[1])))
        elif op == "add":
            nodes.append(nodes[step[1]] + nodes[step[2]])
        elif op == "mul":
            nodes.append(nodes[step[1]] * nodes[step[2]])
        elif op == "tanh":
            nodes.append(nodes[step[1]].tanh())
        else:  # pragma: no cover - descriptions come from the oracle
            raise ValueError(f"unknown operation {op!r} in a test graph")
    return nodes


def _counted_calls(fn) -> int:
    """Run ``fn()`` and return how many Python-level function calls it made (chaining any
    profile function that is already installed, such as the check's call monitor)."""
    previous = sys.getprofile()
    calls = [0]

    def hook(frame, event, arg):
        if event == "call":
            calls[0] += 1
        if previous is not None:
            previous(frame, event, arg)

    sys.setprofile(hook)
    try:
        fn()
    finally:
        sys.setprofile(previous)
    return calls[0]


def _number(x: Any, what: str) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        raise TypeError(f"{what} should be a number, but it is {type(x).__name__}") from None


@driver("scalar_engine")
def scalar_engine(answers: tuple, args: tuple) -> tuple:
    """Exercise 7.2: ``(values, grads, calls_per_node)``."""
    (Value,) = answers
    description, limit = args
    nodes = build_expression(Value, description)
    root = nodes[-1]
    calls = _counted_calls(root.backward)
    values = np.array([_number(n.data, "a Value's .data") for n in nodes])
    grads = np.array([_number(n.grad, "a Value's .grad") for n in nodes])
    # a one-element array, not a scalar: a 0-d output comes back from the grading record as
    # shape (1,)
    return values, grads, np.array([max(calls / len(nodes), float(limit))])


@driver("saved_bytes")
def saved_bytes(answers: tuple, args: tuple) -> np.ndarray:
    """Exercise 7.3: the prediction as a one-element array."""
    (answer,) = answers
    result = answer(*args)
    if isinstance(result, (int, float, np.integer, np.floating)):
        return np.array([float(result)])
    return result  # reported as it is (the check says what is wrong with it)
