"""Helpers for tests of exercise checks (planted-bug tables), for chapter authors.

    answer = answer_from_source(SOURCE, namespace={"np": np, "softmax_np": softmax})
    practice_verdict("3.2", answer)            # in-process, public seed
    grading_verdict("3.2", answer, folder)     # prepare -> kernel side -> verdict

Both return the verdict dict of :func:`backprop_lab.checks.oracle.verdict`; a planted bug's
diagnosis must be the same in both.
"""

from __future__ import annotations

import ast
import itertools
import linecache
import os
from typing import Any

from backprop_lab.checks import run_grading, run_practice
from backprop_lab.checks.seeding import PUBLIC_SEED

_counter = itertools.count()


def answer_from_source(source: str, namespace: dict | None = None, name: str | None = None):
    """Define the function(s) in ``source`` as a notebook cell would and return the last one
    defined (or ``name``). Its lines are registered with linecache, so an error's line shows
    in the feedback as it would in a notebook."""
    filename = f"<answer-cell-{next(_counter)}>"
    source = source.strip("\n") + "\n"
    lines = source.splitlines(keepends=True)
    linecache.cache[filename] = (len(source), None, lines, filename)
    scope: dict[str, Any] = {} if namespace is None else dict(namespace)
    exec(compile(source, filename, "exec"), scope)  # noqa: S102 - test helper
    if name is None:
        defs = [n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)]
        if not defs:
            raise ValueError("the source defines no function")
        name = defs[-1]
    return scope[name]


def practice_verdict(exercise: str, *answers, seed: int = PUBLIC_SEED) -> dict:
    """The verdict practice mode shows for ``answers``."""
    return run_practice(exercise, answers, seed)


def grading_verdict(
    exercise: str, *answers, folder: str | os.PathLike, seed: int = PUBLIC_SEED
) -> dict:
    """The verdict grading mode gives: prepare, the kernel side in this process, verdict."""
    from backprop_lab.checks import oracle

    oracle.prepare([exercise], seed, folder)
    run_grading(exercise, answers, os.fspath(folder))
    return oracle.verdict(exercise, seed, folder)
