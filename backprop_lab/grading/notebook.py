"""Reading notebooks and recognising exercise cells (the authoring conventions)."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path

import nbformat

ANSWER_TAG = "answer"
CHECK_TAG = "check"
COMPARE_TAG = "nbval-check-output"
BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
AUDIT_ID = "backprop-lab-grader-audit"

#: ex-<chapter>-<number>-answer | ex-<chapter>-<number>-check[-k]
ID_RE = re.compile(r"^ex-(?P<chapter>\d+)-(?P<number>\d+)-(?P<kind>answer|check)(?:-\d+)?$")


#: The largest submitted notebook the grader reads (the fixture chapter is about 10 KiB).
MAX_SUBMISSION_BYTES = 16 * 2**20


class NotebookError(Exception):
    """A notebook that cannot be read or does not follow the conventions."""


class Refused(NotebookError):
    """A submitted file refused at the door: a link, a special file, or too large."""


def read_submission(path: str | Path, max_bytes: int = MAX_SUBMISSION_BYTES):
    """Read a student's notebook without following a symbolic link, opening a special file
    (a FIFO would block), or reading more than ``max_bytes``; :class:`Refused` for those,
    :class:`NotebookError` for anything unreadable."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(
                f"{path.name} is a symbolic link; submit the notebook file itself"
            ) from None
        raise NotebookError(f"cannot read {path.name}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"{path.name} is not a regular file; submit the notebook file itself")
        limit = f"the limit is {max_bytes / 2**20:g} MiB (clear the outputs and resubmit)"
        if info.st_size > max_bytes:
            raise Refused(f"{path.name} is {info.st_size / 2**20:.1f} MiB; {limit}")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise Refused(f"{path.name} grew past {max_bytes} bytes while read; {limit}")
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if not raw.strip():
        raise NotebookError(f"{path.name} is empty")
    return loads(raw.decode("utf-8", errors="replace"), path.name)


def read(path: str | Path) -> nbformat.NotebookNode:
    """Read a notebook as nbformat 4, with a one-line error for anything unreadable."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NotebookError(f"cannot read {path.name}: {exc.strerror}") from None
    if not raw.strip():
        raise NotebookError(f"{path.name} is empty")
    return loads(raw.decode("utf-8", errors="replace"), path.name)


def loads(text: str, name: str = "notebook") -> nbformat.NotebookNode:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(f"{name} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise NotebookError(f"{name} is not a Jupyter notebook (JSON nested too deeply)") from None
    if not isinstance(data, dict):
        raise NotebookError(f"{name} is not a Jupyter notebook")
    major = data.get("nbformat")
    if major != 4:
        raise NotebookError(f"{name} has nbformat {major!r}; only nbformat 4 is accepted")
    if not isinstance(data.get("cells"), list):
        raise NotebookError(f"{name} is not a Jupyter notebook (no list of cells)")
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # noqa: BLE001  (nbformat raises many kinds)
        raise NotebookError(f"{name} is not a valid notebook: {exc}") from None
    for cell in nb.cells:
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str):
            raise NotebookError(f"{name} has a cell that is not a notebook cell")
        if not isinstance(cell.get("source", ""), str):
            raise NotebookError(f"{name} has a cell whose source is not text")
        if not isinstance(cell.get("id", ""), (str, type(None))):
            raise NotebookError(f"{name} has a cell whose id is not text")
        if not isinstance(cell.get("metadata", {}), dict):
            raise NotebookError(f"{name} has a cell whose metadata is not a mapping")
    return nb


def write_text(nb) -> str:
    return nbformat.writes(nb) + "\n"


def tags(cell) -> list[str]:
    t = cell.get("metadata", {}).get("tags", [])
    return list(t) if isinstance(t, list) else []


def is_answer(cell) -> bool:
    return cell.get("cell_type") == "code" and ANSWER_TAG in tags(cell)


def is_check(cell) -> bool:
    return cell.get("cell_type") == "code" and CHECK_TAG in tags(cell)


def exercise_of(cell) -> str | None:
    """'5.1' for a cell with id ex-5-1-answer / ex-5-1-check[-k] (or metadata override)."""
    meta = cell.get("metadata", {}).get("backprop_lab", {})
    if isinstance(meta, dict) and meta.get("exercise"):
        return str(meta["exercise"])
    m = ID_RE.match(str(cell.get("id", "")))
    return f"{int(m['chapter'])}.{int(m['number'])}" if m else None


def points(cell) -> float:
    meta = cell.get("metadata", {}).get("backprop_lab", {})
    try:
        return float(meta.get("points", 1)) if isinstance(meta, dict) else 1.0
    except (TypeError, ValueError):
        return 1.0


def answer_cells(nb) -> list:
    return [c for c in nb.cells if is_answer(c)]


def check_cells(nb) -> list:
    return [c for c in nb.cells if is_check(c)]


def exercises(nb) -> dict[str, dict]:
    """{exercise: {"answer": cell id, "checks": [cell ids], "max_points": float}}."""
    out: dict[str, dict] = {}
    for cell in nb.cells:
        if not (is_answer(cell) or is_check(cell)):
            continue
        ex = exercise_of(cell)
        if ex is None:
            raise NotebookError(
                f"cell {cell.get('id')!r} is tagged {tags(cell)} but its id does not follow "
                "ex-<chapter>-<number>-answer / -check"
            )
        entry = out.setdefault(ex, {"answer": None, "checks": [], "max_points": 0.0})
        if is_answer(cell):
            if entry["answer"] is not None:
                raise NotebookError(f"exercise {ex} has two answer cells")
            entry["answer"] = cell["id"]
        else:
            entry["checks"].append(cell["id"])
            entry["max_points"] += points(cell)
    return out


def code_cell_ids(nb) -> list[str]:
    """Cell id of each code cell, in the order nbval numbers them (``Cell N``)."""
    return [c.get("id", "") for c in nb.cells if c.get("cell_type") == "code"]


def find_notebooks(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*.ipynb")
        if ".ipynb_checkpoints" not in p.parts and not p.name.startswith(".")
    )
