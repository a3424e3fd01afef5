"""Trusted verdicts in ``backprop-lab grade``: the expected values live in the grader.

A small instructor chapter whose check cells are ``check("1.1", ...)`` / ``check("1.2", ...)``
(registered exercises) is graded. The kernel gets a check folder with the case arguments and
no seed; points and feedback come from :func:`backprop_lab.checks.oracle.verdict`, computed in
the grader's process. The attack of issue 14 (an answer that walks up the call stack to the
checker's locals) finds nothing there and scores 0.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from backprop_lab.grading.release import release_notebook

SEED = 987654321
CELL_TIMEOUT = 6

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX grading sandbox")


def _code(text, id, tags=()):
    cell = new_code_cell(text, id=id)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


FD_OK = (
    "def fd_gradient(w, h=1e-6):\n"
    "    # BEGIN SOLUTION\n"
    "    w = np.array(w, dtype=float)\n"
    "    grad = np.zeros_like(w)\n"
    "    for k in range(w.size):\n"
    "        e = np.zeros_like(w)\n"
    "        e[k] = h\n"
    "        grad[k] = (toy_loss(w + e) - toy_loss(w - e)) / (2 * h)\n"
    "    return grad\n"
    "    # END SOLUTION"
)
LSQ_OK = (
    "def lsq_backward(upstream, w):\n"
    "    # BEGIN SOLUTION\n"
    "    r = A @ w - t\n"
    "    return upstream * (2.0 / len(t)) * (A.T @ r)\n"
    "    # END SOLUTION"
)
LSQ_HALF = (
    "def lsq_backward(upstream, w):\n"
    "    r = A @ w - t\n"
    "    return upstream * (1.0 / len(t)) * (A.T @ r)\n"
)


def chapter():
    return new_notebook(
        cells=[
            new_markdown_cell("# Trusted fixture chapter", id="intro"),
            _code(
                "import numpy as np\n\n\n"
                "def toy_loss(w):\n"
                "    return float(np.sum(np.sin(w) * w**2) + 0.5 * np.sum(w) ** 2)\n\n\n"
                "rng = np.random.default_rng(0)\n"
                "A = rng.normal(size=(8, 3))\n"
                "t = rng.normal(size=8)",
                "setup",
            ),
            _code(FD_OK, "ex-1-1-answer", ["answer"]),
            _code(
                'from backprop_lab.checks import check\n\ncheck("1.1", fd_gradient)',
                "ex-1-1-check",
                ["check"],
            ),
            _code(LSQ_OK, "ex-1-2-answer", ["answer"]),
            _code(
                'from backprop_lab.checks import check\n\ncheck("1.2", lsq_backward)',
                "ex-1-2-check",
                ["check"],
            ),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )


def _with(nb, cell_id, source):
    next(c for c in nb.cells if c.get("id") == cell_id).source = source
    return nb


# Walks up the call stack from the answer for anything named like the expected value, a
# reference or the seed (and reads the seed from the environment). Where it finds a seed it
# asks the oracle for the cases under it and returns the expected output of the matching
# case; otherwise it returns zeros. Against the in-kernel grader (the seed in the kernel,
# check() judging in the kernel's process) it scored 1/1 on both exercises.
STACK_WALK = """
import inspect, os

def _steal(args):
    found = {}
    f = inspect.currentframe().f_back
    while f is not None:
        for name, value in list(f.f_locals.items()):
            low = name.lower()
            if any(k in low for k in ("expected", "reference", "seed", "want")):
                found.setdefault(low, value)
        f = f.f_back
    for name, value in found.items():
        if "expected" in name or "reference" in name:
            try:
                return np.asarray(value[0] if isinstance(value, (tuple, list)) else value, float)
            except Exception:
                pass
    seeds = [v for k, v in found.items() if "seed" in k and isinstance(v, int)]
    if os.environ.get("BACKPROP_LAB_SEED"):
        seeds.append(int(os.environ["BACKPROP_LAB_SEED"]))
    for seed in seeds:
        try:
            from backprop_lab.checks import oracle
            for ex in ("1.1", "1.2"):
                _spec, cases, _large = oracle._built(ex, seed)
                for c in cases:
                    if len(c.args) == len(args) and all(
                        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(c.args, args)
                    ):
                        return c.expected[0]
        except Exception:
            pass
    return None

def fd_gradient(w, h=1e-6):
    got = _steal((w,))
    return np.zeros_like(np.asarray(w, float)) if got is None else got

def lsq_backward(upstream, w):
    got = _steal((upstream, w))
    return np.zeros(3) if got is None else got
"""

# Right answers only where the kernel has a check folder and no seed in its environment.
ENV_PROBE = (
    "import os\n"
    "assert 'BACKPROP_LAB_SEED' not in os.environ, 'the kernel has the seed'\n"
    "assert os.environ.get('BACKPROP_LAB_CHECK_DIR'), 'the kernel has no check folder'\n" + FD_OK
)


# Right answers only where the oracle's package is hidden from the kernel (the sandbox).
ORACLE_PROBE = (
    "try:\n"
    "    from backprop_lab.checks import oracle as _o\n"
    "    _visible = bool(_o.ids())\n"
    "except Exception:\n"
    "    _visible = False\n"
    "assert not _visible, 'the oracle is importable in the kernel'\n" + FD_OK
)


def honest():
    return chapter()


def released():
    return release_notebook(chapter())


def half():
    return _with(chapter(), "ex-1-2-answer", LSQ_HALF)


def stack_walk():
    nb = _with(chapter(), "ex-1-1-answer", STACK_WALK)
    return _with(nb, "ex-1-2-answer", "# (defined above)\n")


def env_probe():
    return _with(chapter(), "ex-1-1-answer", ENV_PROBE)


def oracle_probe():
    return _with(chapter(), "ex-1-1-answer", ORACLE_PROBE)


def infinite_loop():
    return _with(chapter(), "ex-1-1-answer", "while True:\n    pass\n" + FD_OK)


def os_exit():
    return _with(chapter(), "ex-1-2-answer", "import os\nos._exit(0)\n" + LSQ_OK)


# name: (builder, points for 1.1, points for 1.2, words in the reasons)
CASES = {
    "honest": (honest, 1, 1, ["passed"]),
    "released": (released, 0, 0, ["wrong answer"]),
    "half": (half, 1, 0, ["wrong answer", "half the right value"]),
    "stack_walk": (stack_walk, 0, 0, ["wrong answer"]),
    "env_probe": (env_probe, 1, 1, ["passed"]),
    "oracle_probe": (oracle_probe, 1, 1, ["passed"]),
    "infinite_loop": (infinite_loop, 0, 1, ["timed out"]),
    "os_exit": (os_exit, 1, 0, ["kernel died"]),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("trusted")
    source = root / "source"
    source.mkdir()
    (source / "chapter.ipynb").write_text(nbformat.writes(chapter()))
    subs = root / "submissions"
    for name, (build, *_rest) in CASES.items():
        (subs / name).mkdir(parents=True)
        (subs / name / "chapter.ipynb").write_text(nbformat.writes(build()))
    out = root / "out"
    cmd = [
        sys.executable, "-m", "backprop_lab.grading.cli", "grade",
        *sorted(str(p) for p in subs.iterdir()),
        "--source", str(source), "--out", str(out), "--seed", str(SEED),
        "--cell-timeout", str(CELL_TIMEOUT), "--memory-mb", "2048", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    book = {}
    if (out / "gradebook.csv").exists():
        rows = list(csv.DictReader((out / "gradebook.csv").open()))
        book = {(r["student"], r["exercise"]): r for r in rows}
    return {"proc": proc, "out": out, "book": book}


def test_run_succeeds_in_trusted_mode(graded):
    proc = graded["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "grades the old way" not in proc.stderr
    assert {s for s, _ in graded["book"]} == set(CASES)


NEEDS_MOUNT_NAMESPACE = {"oracle_probe"}


@pytest.mark.parametrize("name", list(CASES))
def test_score_and_reason(graded, name):
    if name in NEEDS_MOUNT_NAMESPACE:
        from backprop_lab.grading import sandbox

        probe = sandbox.probe()
        if not (probe["pidns"] and probe["mountns"]):
            pytest.skip("hiding files from the kernel needs the sandbox (root on Linux)")
    _, p11, p12, words = CASES[name]
    r11, r12 = graded["book"][(name, "1.1")], graded["book"][(name, "1.2")]
    assert (float(r11["points"]), float(r12["points"])) == (p11, p12), (r11, r12)
    assert (r11["max_points"], r12["max_points"]) == ("1", "1")
    reasons = r11["reason"] + " | " + r12["reason"]
    for word in words:
        assert word.lower() in reasons.lower(), reasons


def _numbers(values) -> set[str]:
    return {f"{v:.4f}" for v in values if abs(v) > 1e-3} | {
        f"{v:.3g}" for v in values if abs(v) > 1e-3
    }


def test_feedback_holds_no_expected_output(graded):
    """The feedback of a wrong answer says what is wrong and quotes no expected value."""
    from backprop_lab.checks import oracle

    text = (graded["out"] / "feedback" / "half.md").read_text()
    assert "half the right value" in text
    assert "differ" not in text.lower()
    _spec, cases, _large = oracle._built("1.2", SEED)
    expected = _numbers([float(x) for c in cases for x in c.expected[0].ravel()])
    printed = set(re.findall(r"-?\d+\.\d+(?:e[-+]?\d+)?", text))
    shown = {f"{float(p):.4f}" for p in printed} | {f"{float(p):.3g}" for p in printed}
    assert not (expected & shown), sorted(expected & shown)


def test_instructor_notebook_failing_its_checks_is_not_graded(tmp_path):
    """A solution the oracle judges wrong under the secret seed: exit 1, NOT GRADED rows that
    name the exercise (the students' answers are not graded against it)."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "chapter.ipynb").write_text(nbformat.writes(half()))
    sub = tmp_path / "subs" / "someone"
    sub.mkdir(parents=True)
    (sub / "chapter.ipynb").write_text(nbformat.writes(chapter()))
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "backprop_lab.grading.cli", "grade", str(sub),
        "--source", str(source), "--out", str(out), "--seed", str(SEED),
        "--cell-timeout", str(CELL_TIMEOUT), "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = list(csv.DictReader((out / "gradebook.csv").open()))
    assert [float(r["points"]) for r in rows] == [0, 0]
    for r in rows:
        assert r["reason"].startswith("NOT GRADED: the instructor notebook fails its own checks")
        assert "1.2: " in r["reason"] and "half the right value" in r["reason"], r["reason"]


def test_launcher_names_match_the_check_side():
    """The sandbox launcher spells out the check side's variable names (it stays free of
    NumPy); a rename on one side must not silently hand the kernel nothing."""
    from backprop_lab.checks import seeding
    from backprop_lab.grading import sandbox

    assert sandbox.CHECK_DIR_ENV == seeding.CHECK_DIR_ENV
    assert sandbox.LEGACY_SEED_ENV == seeding.LEGACY_SEED_ENV


def test_check_ids_cover_every_chapter_and_refuse_other_check_cells():
    """Every chapter of the book is graded with trusted verdicts; a check cell of another form
    (the grading tests' old fixture) makes a notebook fall back to the old way."""
    from pathlib import Path

    from backprop_lab.checks import oracle
    from backprop_lab.grading import notebook as nbu
    from backprop_lab.grading import verdicts

    root = Path(__file__).parent.parent
    covered = []
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        ids = verdicts.check_ids(nbu.read(path))
        assert ids is not None, path.name
        covered += ids.values()
    assert sorted(covered) == sorted(oracle.ids())
    assert verdicts.check_ids(nbu.read(root / "tests/fixtures/grading/chapter.ipynb")) is None
    nb = chapter()
    nb.cells[3].source = 'check("99.1", fd_gradient)'  # not a registered exercise
    assert verdicts.check_ids(nb) is None
