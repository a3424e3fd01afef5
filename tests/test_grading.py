"""Tamper and fault tests for ``backprop-lab grade``.

One grade run (module fixture) grades every case below in parallel against the fixture
chapter ``tests/fixtures/grading/chapter.ipynb`` (exercise 1.1: 1 point, exercise 1.2: 1 + 2
points). Each case states the score it deserves and a word the gradebook's reason must hold.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from backprop_lab.grading import sandbox
from backprop_lab.grading.release import release_notebook

FIXTURES = Path(__file__).parent / "fixtures" / "grading"
CHAPTER = FIXTURES / "chapter.ipynb"
SEED = 4242
CELL_TIMEOUT = 4

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX grading sandbox")


def _nb():
    return nbformat.read(CHAPTER, as_version=4)


def _cell(nb, cell_id):
    return next(c for c in nb.cells if c.get("id") == cell_id)


def _answer(nb, cell_id, source):
    _cell(nb, cell_id).source = source
    return nb


SIGMOID_OK = (
    "def sigmoid_backward(upstream, x):\n"
    "    s = 1.0 / (1.0 + np.exp(-x))\n"
    "    return upstream * s * (1.0 - s)\n"
)
SIGMOID_WRONG = "def sigmoid_backward(upstream, x):\n    return upstream * 0.25\n"
LINEAR_WRONG = (
    "def linear_backward(upstream, x, w, b):\n    return upstream @ w.T, x.T @ upstream, upstream\n"
)


def released():
    return release_notebook(_nb())


def honest():
    return _nb()


def wrong_sign():
    return _answer(
        _nb(),
        "ex-1-1-answer",
        "def sigmoid_backward(upstream, x):\n"
        "    s = 1.0 / (1.0 + np.exp(-x))\n"
        "    return -upstream * s * (1.0 - s)\n",
    )


def edited_checks():
    """Wrong answers; each check cell replaced by a print of its stored (public) output."""
    nb = released()
    for cell in nb.cells:
        if "check" in cell.metadata.get("tags", []):
            text = "".join(o.get("text", "") for o in cell.outputs)
            cell.source = f"print({text!r}, end='')"
    return nb


def edited_outputs():
    """Wrong answers; stored outputs of the check cells set to those of another run."""
    nb = released()
    for cell in nb.cells:
        if "check" in cell.metadata.get("tags", []):
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="OK\n")]
    return nb


def deleted_answer():
    nb = _nb()
    nb.cells = [c for c in nb.cells if c.get("id") != "ex-1-1-answer"]
    return nb


def deleted_checks():
    nb = _nb()
    nb.cells = [c for c in nb.cells if "check" not in c.metadata.get("tags", [])]
    return nb


def monkeypatched_checker():
    src = (
        "import backprop_lab.checks as _c\n"
        "_c.check_backward = lambda *a, **k: print('OK')\n" + SIGMOID_WRONG
    )
    return _answer(_answer(released(), "ex-1-1-answer", src), "ex-1-2-answer", LINEAR_WRONG)


def monkeypatched_print():
    src = "import builtins\nbuiltins.print = lambda *a, **k: None\n" + SIGMOID_WRONG
    return _answer(_answer(released(), "ex-1-1-answer", src), "ex-1-2-answer", LINEAR_WRONG)


def monkeypatched_numpy():
    src = (
        "np.allclose = lambda *a, **k: True\n"
        "np.isclose = lambda a, b, *r, **k: np.ones(np.shape(b), bool)\n" + SIGMOID_WRONG
    )
    return _answer(_answer(released(), "ex-1-1-answer", src), "ex-1-2-answer", LINEAR_WRONG)


def reads_instructor():
    """Tries to read the instructor notebook and the grader's files, and to use them.

    It stops at the first solution it finds (the instructor notebook is looked at first): a
    full scan of a busy /tmp can outlast the exercise's time limit, which would score 0 for
    the wrong reason and make the no-sandbox test depend on the machine's /tmp.
    """
    paths = [str(CHAPTER), str(CHAPTER.parent), "/tmp", os.getcwd()]
    src = (
        "import json, glob, os\n"
        f"_found = []\n"
        f"for _p in {paths!r}:\n"
        "    for _f in glob.glob(os.path.join(_p, '**', '*.ipynb'), recursive=True) + [_p]:\n"
        "        try:\n"
        "            _nb = json.load(open(_f))\n"
        "        except Exception:\n"
        "            continue\n"
        "        for _c in _nb.get('cells', []) if isinstance(_nb, dict) else []:\n"
        "            _s = ''.join(_c['source'])\n"
        "            if _c.get('id') == 'ex-1-1-answer' and 'BEGIN SOLUTION' in _s:\n"
        "                _found.append(_s)\n"
        "        if _found:\n"
        "            break\n"
        "    if _found:\n"
        "        break\n"
        "if _found:\n"
        "    exec(_found[0])\n"
        "else:\n" + "".join("    " + line + "\n" for line in SIGMOID_WRONG.splitlines())
    )
    return _answer(released(), "ex-1-1-answer", src)


def infinite_loop():
    """Exercise 1.1's cell never ends; 1.2 is right and must still score."""
    return _answer(_nb(), "ex-1-1-answer", "while True:\n    pass\n" + SIGMOID_OK)


def slow_function():
    """1.2's function loops forever when called by the check; 1.1 is right."""
    src = "def linear_backward(upstream, x, w, b):\n    while True:\n        pass\n"
    return _answer(_nb(), "ex-1-2-answer", src)


def sys_exit():
    return _answer(_nb(), "ex-1-1-answer", "import sys\nsys.exit(0)\n" + SIGMOID_OK)


def os_exit():
    return _answer(_nb(), "ex-1-1-answer", "import os\nos._exit(0)\n" + SIGMOID_OK)


def kernel_crash():
    return _answer(_nb(), "ex-1-1-answer", "import ctypes\nctypes.string_at(0)\n" + SIGMOID_OK)


def huge_allocation():
    src = "_big = np.ones(10 * 2**30 // 8)\n" + SIGMOID_OK
    return _answer(_nb(), "ex-1-1-answer", src)


def fork():
    """Forks a child that would outlive the kernel; the answers are right."""
    src = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n" + SIGMOID_OK
    )
    return _answer(_nb(), "ex-1-1-answer", src)


def renamed_ids():
    nb = _nb()
    _cell(nb, "ex-1-1-answer").id = "my-answer-one"
    _cell(nb, "ex-1-2-answer").id = "my-answer-two"
    return nb


# name: (builder or raw text, points for 1.1, points for 1.2, word in the reason)
CASES = {
    "honest": (honest, 1, 3, "passed"),
    "released": (released, 0, 0, "not implemented"),
    "wrong_sign": (wrong_sign, 0, 3, "sign error"),
    "edited_checks": (edited_checks, 0, 0, "not implemented"),
    "edited_outputs": (edited_outputs, 0, 0, "not implemented"),
    "deleted_answer": (deleted_answer, 0, 3, "missing"),
    "deleted_checks": (deleted_checks, 1, 3, "passed"),
    "monkeypatched_checker": (monkeypatched_checker, 0, 0, "tampering"),
    "monkeypatched_print": (monkeypatched_print, 0, 0, "tampering"),
    "monkeypatched_numpy": (monkeypatched_numpy, 0, 0, "tampering"),
    "reads_instructor": (reads_instructor, 0, 0, "wrong answer"),
    "infinite_loop": (infinite_loop, 0, 3, "timed out"),
    "slow_function": (slow_function, 1, 0, "timed out"),
    "sys_exit": (sys_exit, 0, 3, "SystemExit"),
    "os_exit": (os_exit, 0, 0, "kernel died"),
    "kernel_crash": (kernel_crash, 0, 0, "kernel died"),
    "huge_allocation": (huge_allocation, 0, 3, "MemoryError"),
    "fork": (fork, 1, 3, "passed"),
    "renamed_ids": (renamed_ids, 1, 3, "matched by position"),
    "malformed_json": ('{"cells": [', 0, 0, "not valid JSON"),
    "wrong_nbformat": (
        json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": [], "metadata": {}}),
        0,
        0,
        "nbformat 3",
    ),
    "empty_file": ("", 0, 0, "empty"),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    subs = root / "submissions"
    for name, (build, *_rest) in CASES.items():
        d = subs / name
        d.mkdir(parents=True)
        text = build if isinstance(build, str) else nbformat.writes(build())
        (d / CHAPTER.name).write_text(text)
    out = root / "out"
    cmd = [
        sys.executable,
        "-m",
        "backprop_lab.grading.cli",
        "grade",
        *sorted(str(p) for p in subs.iterdir()),
        "--source",
        str(FIXTURES),
        "--out",
        str(out),
        "--seed",
        str(SEED),
        "--cell-timeout",
        str(CELL_TIMEOUT),
        "--memory-mb",
        "2048",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    rows = list(csv.DictReader((out / "gradebook.csv").open()))
    book = {(r["student"], r["exercise"]): r for r in rows}
    return {"proc": proc, "out": out, "book": book, "rows": rows}


def test_every_submission_graded(graded):
    assert graded["proc"].returncode == 0, graded["proc"].stderr[-3000:]
    students = {r["student"] for r in graded["rows"]}
    assert students == set(CASES)


NEEDS_MOUNT_NAMESPACE = {"reads_instructor"}


@pytest.mark.parametrize("name", list(CASES))
def test_score_and_reason(graded, name):
    if name in NEEDS_MOUNT_NAMESPACE:
        probe = sandbox.probe()
        if not (probe["pidns"] and probe["mountns"]):
            pytest.skip("hiding files from the kernel needs the sandbox (root on Linux)")
    _, p11, p12, word = CASES[name]
    r11, r12 = graded["book"][(name, "1.1")], graded["book"][(name, "1.2")]
    assert (float(r11["points"]), float(r12["points"])) == (p11, p12), (r11, r12)
    assert (r11["max_points"], r12["max_points"]) == ("1", "3")
    reasons = r11["reason"] + " | " + r12["reason"]
    assert word.lower() in reasons.lower(), reasons


def test_isolation_reported(graded):
    probe = sandbox.probe()
    isolation = {r["isolation"] for r in graded["rows"]}
    assert len(isolation) == 1
    label = isolation.pop()
    assert label.startswith("full") or label.startswith("partial")
    if os.geteuid() == 0 and probe["pidns"] and probe["mountns"] and probe["netns"]:
        # full, except where the machine gives no cgroup v2 budget per submission (said so
        # in the label; tests/test_grading_ops.py checks both paths)
        notes = [] if label == "full" else label.removeprefix("partial: ").split("; ")
        assert all(n.startswith("no memory/CPU budget per submission") for n in notes), label


def test_feedback_and_results_written(graded):
    out = graded["out"]
    for name in CASES:
        text = (out / "feedback" / f"{name}.md").read_text()
        assert text.startswith(f"# Feedback for {name}")
        assert json.loads((out / "results" / f"{name}.json").read_text())["student"] == name
    diag = (out / "feedback" / "wrong_sign.md").read_text()
    assert "opposite sign" in diag and "expected" in diag
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"
    assert (out / ".private").stat().st_mode & 0o077 == 0


def test_junit_maps_cells(graded):
    xml = (graded["out"] / "junit" / "honest" / "junit.xml").read_text()
    assert 'name="Cell 0"' in xml and "chapter" in xml


def test_no_process_outlives_grading(graded):
    """The forked child (and any kernel) is gone: nothing runs under a sandbox uid."""
    leftover = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        if sandbox.UID_BASE <= uid < sandbox.UID_BASE + sandbox.UID_SPAN:
            leftover.append(pid)
    assert not leftover


def test_broken_source_is_not_graded(tmp_path):
    """An instructor notebook that fails under the secret seed: exit 1, NOT GRADED rows."""
    nb = _nb()
    _cell(nb, "ex-1-1-answer").source = SIGMOID_WRONG  # the solution itself is wrong
    src = tmp_path / "src"
    src.mkdir()
    (src / CHAPTER.name).write_text(nbformat.writes(nb))
    sub = tmp_path / "alice"
    sub.mkdir()
    (sub / CHAPTER.name).write_text(CHAPTER.read_text())
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "backprop_lab.grading.cli",
            "grade",
            str(sub),
            "--source",
            str(src),
            "--out",
            str(out),
            "--seed",
            "1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    rows = list(csv.DictReader((out / "gradebook.csv").open()))
    assert rows and all(r["reason"].startswith("NOT GRADED") for r in rows)


def test_usage_errors(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "backprop_lab.grading.cli",
            "grade",
            str(tmp_path),
            "--source",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_merge_takes_only_answers():
    from backprop_lab.grading.grader import Grader

    expected = _nb()
    sub = copy.deepcopy(expected)
    _cell(sub, "ex-1-1-check").source = "print('hacked')"
    _cell(sub, "ex-1-1-answer").source = "# mine"
    merged, notes = Grader.merge(expected, sub)
    assert _cell(merged, "ex-1-1-answer").source == "# mine"
    assert _cell(merged, "ex-1-1-check").source == _cell(expected, "ex-1-1-check").source
    assert notes == {"ex-1-1-answer": None, "ex-1-2-answer": None}


def test_without_sandbox_grades_and_says_so(tmp_path):
    """Where the OS cannot isolate (here: forced off), grading works and the gradebook says so."""
    subs = []
    cases = (("honest", honest), ("released", released), ("reads_instructor", reads_instructor))
    for name, build in cases:
        (tmp_path / name).mkdir()
        (tmp_path / name / CHAPTER.name).write_text(nbformat.writes(build()))
        subs.append(str(tmp_path / name))
    out = tmp_path / "out"
    env = {**os.environ, sandbox.DISABLE_ENV: "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "backprop_lab.grading.cli", "grade", *subs, "--source",
         str(FIXTURES), "--out", str(out), "--seed", "7", "--no-progress"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader((out / "gradebook.csv").open()))
    points = {(r["student"], r["exercise"]): r["points"] for r in rows}
    assert points == {("honest", "1.1"): "1", ("honest", "1.2"): "3",
                      ("released", "1.1"): "0", ("released", "1.2"): "0",
                      # the limit the label warns about: without the sandbox's mount
                      # namespace the kernel can read the instructor notebook
                      ("reads_instructor", "1.1"): "1", ("reads_instructor", "1.2"): "0",
                      }, rows  # fmt: skip
    assert all(r["isolation"].startswith("partial: sandbox disabled") for r in rows)
