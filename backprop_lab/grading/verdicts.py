"""Trusted verdicts: the expected values live in the grader, never in the student's kernel.

A check cell of the book is exactly ``check("<chapter>.<n>", answer)``. For a notebook whose
check cells are all of that form (and name registered exercises), the grader

1. before the kernel starts, writes ``<work>/check/inputs/<id>.pkl`` with
   :func:`backprop_lab.checks.oracle.prepare` (case arguments only: no seed, no expected
   value) -- :func:`prepare`;
2. starts the kernel in ``<work>`` without the seed; the sandbox hands it the check folder
   as ``BACKPROP_LAB_CHECK_DIR``, so ``check`` only runs the answer and writes what it
   returned to ``check/outputs/`` (:mod:`backprop_lab.grading.sandbox`);
3. afterwards judges each exercise in its own process with
   :func:`backprop_lab.checks.oracle.verdict` -- :func:`judge` -- and the points and the
   feedback come from those verdicts, not from nbval's comparison of printouts.

Notebooks whose check cells call the deprecated checkers (``check_backward`` ...) are graded
as before: the kernel gets the seed and nbval compares printouts.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from backprop_lab.grading import notebook as nbu
from backprop_lab.grading import sandbox


def check_ids(nb) -> dict[str, str] | None:
    """{check cell id: exercise id} when every check cell of ``nb`` is a trusted check
    (``check("<id>", ...)`` with a registered id); None when any is not (legacy grading)."""
    from backprop_lab.checks import oracle

    known = set(oracle.ids())
    found = {}
    for cell in nbu.check_cells(nb):
        exercise = _called_id(cell.get("source", ""))
        if exercise is None or exercise not in known:
            return None
        found[cell.get("id")] = exercise
    return found or None


def _called_id(source: str) -> str | None:
    """The exercise id of the single ``check("<id>", ...)`` call in ``source``, else None."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "check"
    ]
    if len(calls) != 1 or not calls[0].args:
        return None
    first = calls[0].args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


def folder(workdir: Path) -> Path:
    """The check folder of a kernel that starts in ``workdir``."""
    return Path(workdir) / sandbox.CHECK_FOLDER


def prepare(workdir: Path, exercises: list[str], seed: int) -> Path:
    """Write the inputs of ``exercises`` under the secret ``seed`` for a kernel starting in
    ``workdir``: inputs readable, ``outputs/`` there (the sandbox hands it to the kernel)."""
    from backprop_lab.checks import oracle

    check = folder(workdir)
    check.mkdir(mode=0o755, exist_ok=True)
    oracle.prepare(sorted(set(exercises)), seed, check)
    for path in (check, check / "inputs", check / "outputs"):
        os.chmod(path, 0o755)  # the kernel may run as another uid
    for path in (check / "inputs").iterdir():
        os.chmod(path, 0o644)
    # (a kernel under another uid gets outputs/ from the launcher, which runs as root)
    return check


def judge(check: Path, exercises: list[str], seed: int) -> dict[str, dict]:
    """{exercise id: verdict} from what the kernel wrote (missing outputs: a 0 verdict)."""
    from backprop_lab.checks import oracle

    return {ex: oracle.verdict(ex, seed, check) for ex in sorted(set(exercises))}


def summary(verdict: dict) -> str:
    """One line for the gradebook: what was wrong, never an expected value."""
    lines = [ln.strip() for ln in str(verdict.get("feedback", "")).splitlines() if ln.strip()]
    diagnosis = verdict.get("diagnosis") or []
    if isinstance(diagnosis, str):
        diagnosis = [diagnosis]
    first = next((d for d in diagnosis if isinstance(d, str) and d.strip()), None)
    text = first or (lines[0] if lines else "the check failed")
    return text.strip()[:300]
