"""Write the student edition of instructor notebooks (``backprop-lab release SRC OUT``)."""

from __future__ import annotations

import re
from pathlib import Path

from backprop_lab.grading import notebook as nbu
from backprop_lab.grading.atomic import write_atomic

_DEF = re.compile(r"^(?P<indent>\s*)(?:async\s+)?def\s+(?P<name>\w+)")


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def strip_solution(source: str, exercise: str, where: str = "answer cell") -> str:
    """Replace every ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` block by a placeholder raise."""
    lines = source.splitlines()
    out: list[str] = []
    i = 0
    found = False
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(nbu.END):
            raise nbu.NotebookError(f"{where}: '{nbu.END}' without '{nbu.BEGIN}'")
        if not stripped.startswith(nbu.BEGIN):
            out.append(line)
            i += 1
            continue
        found = True
        indent = _indent(line)
        if not indent:
            raise nbu.NotebookError(
                f"{where}: '{nbu.BEGIN}' must sit inside a function body, so that the "
                "released answer cell still runs (the placeholder raise goes there)"
            )
        message = stripped[len(nbu.BEGIN) :].strip(" :-")
        if not message:
            name = None
            for prev in reversed(out):
                m = _DEF.match(prev)
                if m and len(m["indent"]) < len(indent):
                    name = m["name"]
                    break
            message = f"implement {name}" if name else "write your answer here"
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(nbu.END):
            if lines[j].strip().startswith(nbu.BEGIN):
                raise nbu.NotebookError(f"{where}: nested '{nbu.BEGIN}'")
            j += 1
        if j == len(lines):
            raise nbu.NotebookError(f"{where}: '{nbu.BEGIN}' without '{nbu.END}'")
        text = f"Exercise {exercise}: {message}"
        out.append(f"{indent}raise NotImplementedError({text!r})")
        i = j + 1
    if not found:
        raise nbu.NotebookError(f"{where}: no '{nbu.BEGIN}' / '{nbu.END}' markers")
    return "\n".join(out) + ("\n" if source.endswith("\n") else "")


def release_notebook(nb):
    """Student edition of a notebook (a new object; ``nb`` is left alone)."""
    import copy

    nb = copy.deepcopy(nb)
    nbu.exercises(nb)  # validates ids and tags
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        if nbu.is_answer(cell):
            cell.source = strip_solution(
                cell.source, nbu.exercise_of(cell), f"cell {cell.get('id')}"
            )
        elif nbu.BEGIN in cell.source:
            raise nbu.NotebookError(
                f"cell {cell.get('id')} has solution markers but no '{nbu.ANSWER_TAG}' tag"
            )
        if not nbu.is_check(cell):
            cell.outputs = []
            cell.execution_count = None
    return nb


def release(src: str | Path, out: str | Path) -> list[Path]:
    """Release a notebook or a directory of notebooks; returns the files written."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise nbu.NotebookError(f"{src} does not exist")
    pairs = []
    if src.is_file():
        target = out / src.name if out.is_dir() or out.suffix != ".ipynb" else out
        pairs.append((src, target))
    else:
        for path in nbu.find_notebooks(src):
            pairs.append((path, out / path.relative_to(src)))
    released = []
    for path, target in pairs:  # check everything before writing anything
        try:
            released.append((target, release_notebook(nbu.read(path))))
        except nbu.NotebookError as exc:
            raise nbu.NotebookError(f"{path}: {exc}") from None
    for target, nb in released:
        write_atomic(target, nbu.write_text(nb))
    return [t for t, _ in released]
