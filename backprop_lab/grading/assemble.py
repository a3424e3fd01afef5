"""What gets run: the instructor notebook as graded, with a student's answers put in.

:func:`instrument` marks the check cells for comparison and appends the audit cell;
:func:`merge` takes only the answer cells of a submission into the instructor's run;
:func:`scan_answer` lists what in an answer cell an instructor may want to read.
"""

from __future__ import annotations

import ast
import copy

import nbformat

from backprop_lab.grading import notebook as nbu

SUSPICIOUS_NAMES = {
    "builtins",
    "__builtins__",
    "exec",
    "eval",
    "compile",
    "open",
    "__import__",
    "importlib",
    "os",
    "subprocess",
    "ctypes",
    "gc",
    "inspect",
    "globals",
    "setattr",
    "signal",
    "socket",
    "multiprocessing",
    "sys",
    "shutil",
    "pathlib",
    "io",
}


def scan_answer(source: str) -> list[str]:
    """Things in an answer cell an instructor may want to read (never changes the score)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [f"does not parse as Python ({exc.msg}, line {exc.lineno})"]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in SUSPICIOUS_NAMES:
            found.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for m in mods:
                if m and m.split(".")[0] in SUSPICIOUS_NAMES | {"backprop_lab"}:
                    found.add(f"import {m}")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, (ast.Name, ast.Attribute)):
                    base = ast.unparse(t.value)
                    if base.split(".")[0] in {
                        "np",
                        "numpy",
                        "backprop_lab",
                        "checks",
                        "sys",
                        "builtins",
                        "bl",
                    }:
                        found.add(f"assigns {ast.unparse(t)}")
    return sorted(found)


def instrument(nb, compare_checks: bool = True):
    """The instructor notebook as graded: check cells compared (unless the verdicts are
    trusted: then nbval only runs them and :mod:`.verdicts` judges), an audit cell at the end."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        tags = [t for t in nbu.tags(cell) if t != nbu.COMPARE_TAG]
        if nbu.is_check(cell) and compare_checks:
            tags.append(nbu.COMPARE_TAG)  # only check cells are compared when grading
        cell.metadata["tags"] = tags
    audit = nbformat.v4.new_code_cell(
        "from backprop_lab.grading import guard as _bl_guard\n_bl_guard.report()",
        id=nbu.AUDIT_ID,
    )
    audit.metadata["tags"] = [nbu.COMPARE_TAG]
    nb.cells.append(audit)
    return nb


def merge(expected, submission):
    """The graded notebook: the instructor's run with the student's answer sources.

    Returns (notebook, {answer id: note or None}); note is 'missing' or how it matched.
    """
    nb = copy.deepcopy(expected)
    sub_cells = [c for c in submission.cells if c.get("cell_type") == "code"]
    by_id = {c.get("id"): c for c in sub_cells}
    answer_ids = [c["id"] for c in nbu.answer_cells(nb)]
    unclaimed = [c for c in sub_cells if nbu.is_answer(c) and c.get("id") not in answer_ids]
    matched: dict[str, tuple] = {}
    for aid in answer_ids:
        if aid in by_id:
            matched[aid] = (by_id[aid], None)
    for aid in answer_ids:
        if aid not in matched and unclaimed:
            matched[aid] = (unclaimed.pop(0), "matched by position: its cell id changed")
    notes = {}
    for cell in nb.cells:
        if not nbu.is_answer(cell):
            continue
        aid = cell["id"]
        if aid in matched:
            cell.source = matched[aid][0].get("source", "")
            notes[aid] = matched[aid][1]
        else:
            cell.source = "# answer cell missing from the submission"
            notes[aid] = "missing"
        cell.outputs = []
        cell.execution_count = None
    return nb, notes


def merged_source(nb, cell_id) -> str:
    for c in nb.cells:
        if c.get("id") == cell_id:
            return c.get("source", "")
    return ""
