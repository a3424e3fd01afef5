"""Planted bugs of Chapter 11's exercises (memory and checkpointing): each buggy answer must
fail, in practice mode and through the grading path, with a diagnosis naming its bug."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict
from backprop_lab.explore import checkpointing as ck

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "11-memory-and-checkpointing.ipynb"
NAMESPACE = {"np": np, "ck": ck}

PLANTED = [
    (
        "11.1",
        """
def checkpointed_backward(x, n_layers, forward, backward, upstream, k):
    hs = [x]
    for i in range(n_layers):
        hs.append(forward(i, hs[-1]))
    g, dWs = upstream, [None] * n_layers
    for i in reversed(range(n_layers)):
        g, dWs[i] = backward(i, g, hs[i], hs[i + 1])
    return g, dWs
""",
        "which is what plain backprop does",
    ),
    (
        "11.1",
        """
def checkpointed_backward(x, n_layers, forward, backward, upstream, k):
    g, dWs = upstream, [None] * n_layers
    for i in reversed(range(n_layers)):
        h = x
        for j in range(i):
            h = forward(j, h)
        g, dWs[i] = backward(i, g, h, forward(i, h))
    return g, dWs
""",
        "recomputes every layer from the network's input",
    ),
    (
        "11.1",
        """
def checkpointed_backward(x, n_layers, forward, backward, upstream, k):
    starts = list(range(0, n_layers, k))
    ckpt, h = {}, x
    for i in range(n_layers):
        if i % k == 0:
            ckpt[i] = h
        h = forward(i, h)
    g, dWs = upstream, []
    for s in reversed(starts):
        hs = [ckpt.pop(s)]
        for i in range(s, min(s + k, n_layers)):
            hs.append(forward(i, hs[-1]))
        for i in reversed(range(s, min(s + k, n_layers))):
            g, dW = backward(i, g, hs[i - s], hs[i - s + 1])
            dWs.append(dW)
    return g, dWs
""",
        "in reverse order",
    ),
    (
        "11.1",
        """
def checkpointed_backward(x, n_layers, forward, backward, upstream, k):
    ckpt, h = {}, x
    for i in range(n_layers):
        if i % k == 0:
            ckpt[i] = h
        h = forward(i, h)
    dWs = [None] * n_layers
    dx = None
    for s in reversed(range(0, n_layers, k)):
        hs = [ckpt.pop(s)]
        for i in range(s, min(s + k, n_layers)):
            hs.append(forward(i, hs[-1]))
        g = upstream
        for i in reversed(range(s, min(s + k, n_layers))):
            g, dWs[i] = backward(i, g, hs[i - s], hs[i - s + 1])
        dx = g
    return dx, dWs
""",
        "carry it from segment to segment",
    ),
    (
        "11.1",
        """
def checkpointed_backward(x, n_layers, forward, backward, upstream, k):
    k = 2  # every other layer, whatever k says
    ckpt, h = {}, x
    for i in range(n_layers):
        if i % k == 0:
            ckpt[i] = h
        h = forward(i, h)
    g, dWs = upstream, [None] * n_layers
    for s in reversed(range(0, n_layers, k)):
        hs = [ckpt.pop(s)]
        for i in range(s, min(s + k, n_layers)):
            hs.append(forward(i, hs[-1]))
        for i in reversed(range(s, min(s + k, n_layers))):
            g, dWs[i] = backward(i, g, hs[i - s], hs[i - s + 1])
    return g, dWs
""",
        "though below plain backprop's L",
    ),
    (
        "11.2",
        """
def predicted_peak(n_layers, segments):
    k = -(-n_layers // segments)
    return n_layers / k + k
""",
        "These are the model L/k + k",
    ),
    (
        "11.2",
        """
def predicted_peak(n_layers, segments):
    chunks = ck.chunk_sizes(n_layers, segments)
    if len(chunks) == 1:
        return n_layers
    return max(segments - 1 + chunks[-1], segments - 2 + chunks[0])
""",
        "can make fewer chunks",
    ),
    (
        "11.2",
        """
def predicted_peak(n_layers, segments):
    chunks = ck.chunk_sizes(n_layers, segments)
    return n_layers if len(chunks) == 1 else len(chunks) - 1 + chunks[-1]
""",
        "the peak can come later",
    ),
    (
        "11.2",
        """
def predicted_peak(n_layers, segments):
    chunks = ck.chunk_sizes(n_layers, segments)
    n = len(chunks)
    return 1 + (n_layers if n == 1 else max(n - 1 + chunks[-1], n - 2 + chunks[0]))
""",
        "the input batch is not counted",
    ),
    (
        "11.2",
        """
def predicted_peak(n_layers, segments):
    chunks = ck.chunk_sizes(n_layers, segments)
    n = len(chunks)
    return n_layers if n == 1 else max(n - 1 + chunks[-1], n - 1 + chunks[0])
""",
        "has already been freed",
    ),
    (
        "11.3",
        """
def _peak(L, s):
    c = ck.chunk_sizes(L, s)
    return L if len(c) == 1 else max(len(c) - 1 + c[-1], len(c) - 2 + c[0])

def best_segments(n_layers, batch, width, budget_bytes):
    for s in range(1, n_layers + 1):
        if _peak(n_layers, s) * 8 * batch * width <= budget_bytes:
            return s
    return 0
""",
        "25 layers in 4 segments",
    ),
    (
        "11.3",
        """
def _peak(L, s):
    c = ck.chunk_sizes(L, s)
    return L if len(c) == 1 else max(len(c) - 1 + c[-1], len(c) - 2 + c[0])

def best_segments(n_layers, batch, width, budget_bytes):
    s = min(range(1, n_layers + 1), key=lambda s: (_peak(n_layers, s), s))
    return s if _peak(n_layers, s) * 8 * batch * width <= budget_bytes else 0
""",
        "rarely the cheapest",
    ),
    (
        "11.3",
        """
def _peak(L, s):
    c = ck.chunk_sizes(L, s)
    return L if len(c) == 1 else max(len(c) - 1 + c[-1], len(c) - 2 + c[0])

def best_segments(n_layers, batch, width, budget_bytes):
    best, cost = 0, None
    for s in range(1, n_layers + 1):
        c = ck.chunk_sizes(n_layers, s)
        r = n_layers - c[-1] if len(c) > 1 else 0
        if _peak(n_layers, s) * 4 * batch * width <= budget_bytes and (cost is None or r < cost):
            best, cost = s, r
    return best
""",
        "8 bytes a number",
    ),
    (
        "11.3",
        """
def _peak(L, s):
    c = ck.chunk_sizes(L, s)
    return L if len(c) == 1 else max(len(c) - 1 + c[-1], len(c) - 2 + c[0])

def best_segments(n_layers, batch, width, budget_bytes):
    best, cost = None, None
    for s in range(1, n_layers + 1):
        c = ck.chunk_sizes(n_layers, s)
        r = n_layers - c[-1] if len(c) > 1 else 0
        if _peak(n_layers, s) * 8 * batch * width <= budget_bytes and (cost is None or r < cost):
            best, cost = s, r
    if best is None:
        best = min(range(1, n_layers + 1), key=lambda s: _peak(n_layers, s))
    return best
""",
        "return 0",
    ),
]


def _answers_in_notebook():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    out = {}
    for cell in cells:
        m = re.fullmatch(r"ex-(\d+)-(\d+)-answer", cell.get("id", ""))
        if m:
            out[f"{m[1]}.{m[2]}"] = "".join(cell["source"])
    return out


# found in review: a segment range off by one (a layer without dW), and peak formulas that
# no single named slip explains
_SOLUTIONS = _answers_in_notebook()
PLANTED += [
    (
        "11.1",
        _SOLUTIONS["11.1"].replace(
            "stop = min(start + k, n_layers)", "stop = min(start + k, n_layers - 1)"
        ),
        "are None: every one of the",
    ),
    (
        "11.2",
        _SOLUTIONS["11.2"].replace(
            "return max(n - 1 + chunks[-1], n - 2 + chunks[0])",
            "return int(round(n_layers / chunks[0] + chunks[0]))",
        ),
        "No single slip explains your numbers",
    ),
    (
        "11.2",
        _SOLUTIONS["11.2"].replace("return n_layers\n", "return n_layers + 1\n"),
        "mind the case of a single chunk",
    ),
]


def test_every_exercise_has_two_planted_bugs():
    counts = {}
    for exercise, _, _ in PLANTED:
        counts[exercise] = counts.get(exercise, 0) + 1
    assert counts == {"11.1": 6, "11.2": 7, "11.3": 4}
    assert set(_answers_in_notebook()) == set(counts)


@pytest.mark.parametrize("exercise", ["11.1", "11.2", "11.3"])
def test_the_notebook_solution_passes(exercise, tmp_path):
    answer = answer_from_source(_answers_in_notebook()[exercise], NAMESPACE)
    practice = practice_verdict(exercise, answer)
    assert practice["passed"], practice["feedback"]
    graded = grading_verdict(exercise, answer, folder=tmp_path)
    assert graded["passed"], graded["feedback"]


@pytest.mark.parametrize(
    "exercise,source,phrase", PLANTED, ids=[f"{e}-{p[:24]}" for e, _, p in PLANTED]
)
def test_planted_bug_is_diagnosed(exercise, source, phrase, tmp_path):
    answer = answer_from_source(source, NAMESPACE)
    practice = practice_verdict(exercise, answer)
    assert not practice["passed"]
    assert phrase in practice["feedback"], practice["feedback"]
    graded = grading_verdict(exercise, answer, folder=tmp_path)
    assert not graded["passed"]
    assert phrase in graded["feedback"], graded["feedback"]
    assert graded["feedback"] == practice["feedback"]


def test_measuring_instead_of_predicting_is_refused():
    answer = answer_from_source(
        """
def predicted_peak(n_layers, segments):
    return ck.measure(n_layers, segments=segments).peak_activations
""",
        NAMESPACE,
    )
    verdict = practice_verdict("11.2", answer)
    assert not verdict["passed"] and verdict["status"] == "forbidden"
