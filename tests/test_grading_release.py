"""``backprop-lab release`` and ``scripts/check_student_release.py``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from backprop_lab.grading import notebook as nbu
from backprop_lab.grading.release import release, release_notebook, strip_solution

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "tests" / "fixtures" / "grading" / "chapter.ipynb"
SCRIPT = ROOT / "scripts" / "check_student_release.py"


def test_placeholder_is_indented_and_named():
    src = (
        "def f(x):\n"
        '    """Doc."""\n'
        "    if x:\n"
        "        # BEGIN SOLUTION\n"
        "        return 1\n"
        "        # END SOLUTION\n"
        "    return 0\n"
    )
    out = strip_solution(src, "4.2")
    assert out == (
        "def f(x):\n"
        '    """Doc."""\n'
        "    if x:\n"
        "        raise NotImplementedError('Exercise 4.2: implement f')\n"
        "    return 0\n"
    )
    compile(out, "<answer>", "exec")


def test_marker_text_becomes_message():
    src = "def g():\n    # BEGIN SOLUTION write the VJP of tanh\n    pass\n    # END SOLUTION\n"
    assert "Exercise 1.1: write the VJP of tanh" in strip_solution(src, "1.1")


@pytest.mark.parametrize(
    "src, words",
    [
        ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n", "inside a function body"),
        ("def f():\n    # BEGIN SOLUTION\n    pass\n", "without"),
        ("def f():\n    pass\n    # END SOLUTION\n", "without"),
        ("def f():\n    pass\n", "no '# BEGIN SOLUTION'"),
    ],
)
def test_bad_markers_are_refused(src, words):
    with pytest.raises(nbu.NotebookError, match=words):
        strip_solution(src, "1.1")


def test_release_notebook_clears_outputs_and_drops_solution_directives():
    nb = nbformat.read(CHAPTER, as_version=4)
    out = release_notebook(nb)
    directives = [c.get("id") for c in nb.cells if "{solution-" in c.source]
    assert directives  # the fixture has gated solutions
    kept = [c for c in nb.cells if c.get("id") not in directives]
    assert [c.get("id") for c in out.cells] == [c.get("id") for c in kept]
    assert [c.metadata.get("tags") for c in out.cells] == [c.metadata.get("tags") for c in kept]
    for cell in out.cells:
        assert "{solution" not in cell.source
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [] and cell.execution_count is None
        if nbu.is_answer(cell):
            assert "BEGIN SOLUTION" not in cell.source
            assert "raise NotImplementedError(" in cell.source
    assert any(c.outputs for c in nb.cells if nbu.is_check(c))  # the source is left alone
    assert "BEGIN SOLUTION" in nb.cells[4].source
    assert "{solution-start}" in nb.cells[3].source


@pytest.mark.parametrize(
    "source",
    [
        "```{solution-start} ex-1-1\n:class: dropdown\n```",
        "```{solution-end}\n```",
        ":::{solution} ex-1-1\n:class: dropdown\nThe answer is 42.\n:::",
        "````{solution} ex-1-1\nThe answer is 42.\n````",
    ],
)
def test_every_kind_of_solution_directive_is_removed(source):
    nb = nbformat.read(CHAPTER, as_version=4)
    cell = nbformat.v4.new_markdown_cell(source)
    cell["id"] = "extra-solution"
    nb.cells.insert(3, cell)
    out = release_notebook(nb)
    assert "extra-solution" not in [c.get("id") for c in out.cells]
    assert not any("42" in c.source for c in out.cells)


def test_a_gate_sharing_its_cell_with_text_is_refused():
    nb = nbformat.read(CHAPTER, as_version=4)
    nb.cells[3].source = "Try it first.\n\n```{solution-start} ex-1-1\n:class: dropdown\n```"
    with pytest.raises(nbu.NotebookError, match="a markdown cell of its own"):
        release_notebook(nb)
    nb.cells[3].source = "```{solution-start} ex-1-1\n:class: dropdown\n```\nHint: try it."
    with pytest.raises(nbu.NotebookError, match="a markdown cell of its own"):
        release_notebook(nb)


def test_release_drops_widget_state_and_execution_timings():
    nb = nbformat.read(CHAPTER, as_version=4)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.cells[1].metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00Z"}
    out = release_notebook(nb)
    assert "widgets" not in out.metadata
    assert all("execution" not in c.metadata for c in out.cells)


def test_release_directory_and_file(tmp_path):
    written = release(CHAPTER.parent, tmp_path / "dir")
    assert [p.name for p in written] == ["chapter.ipynb"]
    one = release(CHAPTER, tmp_path / "one.ipynb")
    assert one == [tmp_path / "one.ipynb"]
    nbformat.validate(nbformat.read(one[0], as_version=4))


def test_release_cli(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "backprop_lab.grading.cli",
            "release",
            str(CHAPTER),
            str(tmp_path / "s.ipynb"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.ipynb"
    nb = nbformat.read(CHAPTER, as_version=4)
    nb.cells[4].source = "# BEGIN SOLUTION\nx = 1\n# END SOLUTION"
    bad.write_text(nbformat.writes(nb))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "backprop_lab.grading.cli",
            "release",
            str(bad),
            str(tmp_path / "o.ipynb"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "ex-1-1-answer" in r.stderr


def test_register_adds_subcommands():
    import argparse

    from backprop_lab.grading.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["release", "a", "b"])
    assert callable(args.func)
    args = parser.parse_args(["grade", "s1", "s2", "--source", "n", "--out", "o"])
    assert args.submissions == ["s1", "s2"] and callable(args.func)


def test_check_student_release_empty(tmp_path):
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--notebooks", str(tmp_path)], capture_output=True, text=True
    )
    assert r.returncode == 0 and "nothing to check" in r.stdout


def test_check_student_release_fixture_passes():
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--notebooks", str(CHAPTER.parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "exactly at its check cells" in r.stdout


def test_check_student_release_catches_a_cell_using_the_answer(tmp_path):
    nb = nbformat.read(CHAPTER, as_version=4)
    nb.cells[-1].source = "print(sigmoid_backward(1.0, 0.0))"  # uses the student's answer
    (tmp_path / "ch.ipynb").write_text(nbformat.writes(nb))
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--notebooks", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1
    assert "FAILS but is not a check cell" in r.stdout and "id after" in r.stdout


# --------------------------------------------------------------------------------------
# The book's own chapters: what a student receives
# --------------------------------------------------------------------------------------
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
HELPERS = sorted((ROOT / "backprop_lab" / "explore").glob("*.py")) + sorted(
    (ROOT / "backprop_lab" / "instrument").glob("*.py")
)
#: Lines of a solution that give nothing away: the given forward pass (4.2), a seeded
#: generator (10.2), and running a segment's layers forward (11.1: the same line as plain
#: backprop's forward walk in explore/checkpointing.py, which the exercise must improve on).
GIVEN = ("two_layer_forward(", "np.random.default_rng(", "hs.append(forward(i,hs[-1]))")


def _norm(line: str) -> str:
    """A code line without its comment and whitespace, for comparing lines of code."""
    return re.sub(r"\s+", "", line.split("#")[0])


def _solution_lines(cell) -> list[str]:
    """The significant lines between the solution markers of an answer cell."""
    body = cell.source.split(nbu.BEGIN, 1)[1].split(nbu.END, 1)[0]
    out = []
    for line in body.splitlines():
        n = _norm(line)
        generic = re.match(r"(for|while|if|elif|else|with|try|def)\b", line.strip())
        if len(n) < 12 or re.fullmatch(r"return[\w,]+", n) or any(g in n for g in GIVEN):
            continue
        if generic:  # control flow alone gives nothing away
            continue
        out.append(n)
    return out


def _leaks(nb) -> list[str]:
    """Lines of a solution that appear elsewhere in the notebook's release or in a helper."""
    released = release_notebook(nb)
    released_lines = {_norm(line) for c in released.cells for line in c.source.splitlines()}
    helper_lines = {_norm(line) for p in HELPERS for line in p.read_text().splitlines()}
    found = []
    for cell in nb.cells:
        if nbu.is_answer(cell):
            for line in _solution_lines(cell):
                if line in released_lines:
                    found.append(f"{cell.get('id')}: {line} is in the release")
                if line in helper_lines:
                    found.append(f"{cell.get('id')}: {line} is in a helper module")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_student_edition_of_each_chapter_gives_nothing_away(path):
    """No output, no solution directive, no solution marker; and no line of any solution
    appears anywhere else in the released notebook (a worked cell) or in a helper module."""
    nb = nbformat.read(path, as_version=4)
    released = release_notebook(nb)
    text = nbformat.writes(released)
    assert "BEGIN SOLUTION" not in text and "{solution" not in text
    assert "widgets" not in released.metadata
    for cell in released.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.get("id")
    assert _leaks(nb) == []


def test_a_worked_cell_holding_a_solution_line_is_caught():
    nb = nbformat.read(ROOT / "notebooks" / "04-two-layer-network.ipynb", as_version=4)
    worked = next(c for c in nb.cells if c.get("id") == "code-014")
    worked.source += "\ndZ = dH * H * (1.0 - H)  # the line of Exercise 4.2\n"
    assert any("ex-4-2-answer" in leak and "release" in leak for leak in _leaks(nb))


def test_chapters_have_exercises_only_with_check_cells_in_the_release():
    for path in NOTEBOOKS:
        released = release_notebook(nbformat.read(path, as_version=4))
        exercises = nbu.exercises(released)
        assert exercises, path.name
        for ex, entry in exercises.items():
            assert entry["answer"] and entry["checks"], (path.name, ex)


def _practice_notebook(tmp_path: Path) -> Path:
    """A small chapter with two Contract A exercises (2.1 and 5.4) and a cell after them."""
    new_md, new_code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell

    def cell(kind, cid, source, tags=()):
        c = kind(source)
        c["id"] = cid
        if tags:
            c.metadata["tags"] = list(tags)
        return c

    cells = [cell(new_code, "setup", "import numpy as np")]
    for ex, name, body in [
        ("2.1", "sin_cubed_backward", "return upstream * 6 * w * np.sin(w**2) ** 2 * np.cos(w**2)"),
        ("5.4", "sigmoid_backward", "s = 1 / (1 + np.exp(-x))\n    return upstream * s * (1 - s)"),
    ]:
        label = "ex-" + ex.replace(".", "-")
        arg = "w" if ex == "2.1" else "x"
        cells += [
            cell(
                new_md, f"{label}-task", f":::{{exercise}}\n:label: {label}\n\nWrite {name}.\n:::"
            ),
            cell(new_md, f"{label}-start", f"```{{solution-start}} {label}\n:class: dropdown\n```"),
            cell(
                new_code,
                f"{label}-answer",
                f"def {name}(upstream, {arg}):\n    # BEGIN SOLUTION\n    {body}\n"
                "    # END SOLUTION",
                ["answer"],
            ),
            cell(new_md, f"{label}-end", "```{solution-end}\n```"),
            cell(
                new_code,
                f"{label}-check",
                f'from backprop_lab.checks import check\n\ncheck("{ex}", {name})',
                ["check", "nbval-check-output"],
            ),
        ]
    cells.append(cell(new_code, "after", "print('the last cell ran')", ["nbval-check-output"]))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    folder = tmp_path / "chapter"
    folder.mkdir()
    nbformat.write(nb, folder / "practice.ipynb")
    return folder


def test_run_all_in_practice_mode_runs_to_the_end_and_shows_each_checks_feedback(tmp_path):
    """A student's Run All (no BACKPROP_LAB_STRICT): every cell runs, every check cell says
    'not implemented yet'; the strict nbval run still fails exactly at the check cells."""
    folder = _practice_notebook(tmp_path)
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--notebooks", str(folder), "--practice"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "exactly at its check cells" in r.stdout
    assert "Run All in practice mode OK - 1 notebook(s)" in r.stdout


def test_practice_run_reports_a_cell_that_fails_after_the_checks(tmp_path):
    folder = _practice_notebook(tmp_path)
    path = folder / "practice.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[-1].source = "print(sigmoid_backward(1.0, 0.0))"  # uses the student's answer
    nbformat.write(nb, path)
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--notebooks", str(folder), "--practice"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 1
    assert "practice.ipynb::after raised NotImplementedError" in r.stdout
