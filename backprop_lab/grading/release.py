"""Write the student edition of instructor notebooks (``backprop-lab release SRC OUT``).

The student edition of a notebook is the instructor notebook with

* every ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` block of an answer cell replaced by a
  ``raise NotImplementedError("Exercise N.k: ...")`` at the same indentation (the cell still
  defines the function, so the check cell runs and says "not implemented yet");
* every markdown cell that holds a solution directive removed (``{solution-start}``,
  ``{solution-end}``, and ``{solution}``, whose body is a written solution), so that
  JupyterLab shows no empty "Start of Solution" box; the exercise text stays;
* every output cleared, check cells included, with execution counts, per-cell execution
  timings and the saved widget state (the instructor's run shows nothing to a student).

A markdown cell that mixes a solution directive with other text is refused rather than
guessed at: put the directive in a cell of its own.
"""

from __future__ import annotations

import re
from pathlib import Path

from backprop_lab.grading import notebook as nbu
from backprop_lab.grading.atomic import write_atomic

_DEF = re.compile(r"^(?P<indent>\s*)(?:async\s+)?def\s+(?P<name>\w+)")
#: A line that opens a solution directive: ```{solution-start} ..., :::{solution} ..., etc.
_SOLUTION = re.compile(r"^\s*(?:`{3,}|:{3,})\s*\{solution(?P<kind>-start|-end)?\}", re.M)


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


def _solution_directive(cell) -> str | None:
    """The kind of solution directive a markdown cell holds ("solution", "solution-start",
    "solution-end"), or None. Refuses a cell that mixes one with other text."""
    if cell.get("cell_type") != "markdown":
        return None
    source = cell.get("source", "")
    match = _SOLUTION.search(source)
    if match is None:
        return None
    kind = "solution" + (match["kind"] or "")
    if kind != "solution":  # a gate: the cell must hold the directive and its options only
        lines = [ln for ln in source.strip().splitlines() if ln.strip()]
        opener = lines[0].strip()
        fence = opener[: len(opener) - len(opener.lstrip("`:"))]
        rest = lines[1:]
        if rest and rest[-1].strip() == fence:
            rest = rest[:-1]
        if any(not ln.strip().startswith(":") for ln in rest):
            raise nbu.NotebookError(
                f"cell {cell.get('id')}: a {{{kind}}} directive shares its cell with other "
                "text; put the directive in a markdown cell of its own"
            )
    return kind


def release_notebook(nb):
    """Student edition of a notebook (a new object; ``nb`` is left alone): solutions
    replaced by placeholders, solution directives removed, every output cleared."""
    import copy

    nb = copy.deepcopy(nb)
    nbu.exercises(nb)  # validates ids and tags
    kept = []
    for cell in nb.cells:
        if _solution_directive(cell) is not None:
            continue
        kept.append(cell)
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
        cell.outputs = []
        cell.execution_count = None
        cell.get("metadata", {}).pop("execution", None)
    nb.cells = kept
    nb.metadata.pop("widgets", None)  # the instructor run's widget state is output too
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
