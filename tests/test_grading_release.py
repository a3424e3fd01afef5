"""``backprop-lab release`` and ``scripts/check_student_release.py``."""

from __future__ import annotations

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


def test_release_notebook_keeps_ids_tags_and_check_outputs():
    nb = nbformat.read(CHAPTER, as_version=4)
    out = release_notebook(nb)
    assert [c.get("id") for c in out.cells] == [c.get("id") for c in nb.cells]
    assert [c.metadata.get("tags") for c in out.cells] == [c.metadata.get("tags") for c in nb.cells]
    for before, after in zip(nb.cells, out.cells):
        if after.cell_type != "code":
            continue
        if nbu.is_check(after):
            assert after.outputs == before.outputs and after.execution_count
        else:
            assert after.outputs == [] and after.execution_count is None
        if nbu.is_answer(after):
            assert "BEGIN SOLUTION" not in after.source
            assert "raise NotImplementedError(" in after.source
    assert "BEGIN SOLUTION" in nb.cells[4].source  # the source is left alone


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
