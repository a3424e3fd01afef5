"""Operations of ``backprop-lab grade``: shards and grade-merge, regrading into an existing
``--out``, stale work folders, Ctrl-C, the progress bar, and usage errors.

The fixture chapter is ``tests/fixtures/grading/chapter.ipynb`` (exercise 1.1: 1 point,
exercise 1.2: 1 + 2 points); the submissions are built with ``test_grading.py``'s helpers.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from test_grading import _answer, _nb, honest, released, wrong_sign

from backprop_lab.grading import report

FIXTURES = Path(__file__).parent / "fixtures" / "grading"
CHAPTER = FIXTURES / "chapter.ipynb"
SEED = "31337"
GRADE = [sys.executable, "-m", "backprop_lab.grading.cli", "grade"]
MERGE = [sys.executable, "-m", "backprop_lab.grading.cli", "grade-merge"]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX grading sandbox")


def slow():
    """Exercise 1.1's cell never ends (the cell timeout stops it)."""
    return _answer(_nb(), "ex-1-1-answer", "while True:\n    pass\n")


# student: submission; "jo se" and "jo_se" share a naive file name ("jo_se")
CLASS = {
    "ann": honest,
    "ben": wrong_sign,
    "cai": released,
    "dee": honest,
    "eve": wrong_sign,
    "fay": honest,
    "jo se": honest,
    "jo_se": wrong_sign,
    "kim": "{ not json",
}
EXPECTED = {  # (points 1.1, points 1.2)
    "ann": (1, 3),
    "ben": (0, 3),
    "cai": (0, 0),
    "dee": (1, 3),
    "eve": (0, 3),
    "fay": (1, 3),
    "jo se": (1, 3),
    "jo_se": (0, 3),
    "kim": (0, 0),
}


def _write_class(root: Path, cls: dict) -> list[str]:
    paths = []
    for name, build in cls.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        text = build if isinstance(build, str) else nbformat.writes(build())
        (d / CHAPTER.name).write_text(text)
        paths.append(str(d))
    return sorted(paths)


def _grade_cmd(subs, out, *extra, seed=SEED):
    cmd = [*GRADE, *subs, "--source", str(FIXTURES), "--out", str(out), "--cell-timeout", "4"]
    if seed is not None:
        cmd += ["--seed", seed]
    return cmd + list(extra)


def _rows(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "gradebook.csv").open()))


def _points(rows) -> dict:
    book = {}
    for r in rows:
        book.setdefault(r["student"], {})[r["exercise"]] = float(r["points"])
    return {s: (e["1.1"], e["1.2"]) for s, e in book.items()}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The whole class graded in one run (no progress bar)."""
    root = tmp_path_factory.mktemp("single")
    subs = _write_class(root / "subs", CLASS)
    out = root / "out"
    proc = subprocess.run(
        _grade_cmd(subs, out, "--no-progress"), capture_output=True, text=True, timeout=600
    )
    return {"proc": proc, "out": out, "subs": subs, "root": root}


def test_single_run_grades_the_class(single):
    proc = single["proc"]
    # kim's notebook is unreadable: that is a grade of 0, not an ungraded student
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _points(_rows(single["out"])) == EXPECTED
    assert "%|" not in proc.stderr, "--no-progress printed a progress bar"


def test_names_differing_by_a_space_get_their_own_files(single):
    out = single["out"]
    files = {p.stem for p in (out / "feedback").glob("*.md")}
    assert len(files) == len(CLASS), files
    by_student = {}
    for path in (out / "results").glob("*.json"):
        by_student[json.loads(path.read_text())["student"]] = path.stem
    assert by_student["jo se"] != by_student["jo_se"]
    assert "opposite sign" in (out / "feedback" / f"{by_student['jo_se']}.md").read_text()
    assert "Total: 4 / 4" in (out / "feedback" / f"{by_student['jo se']}.md").read_text()


def test_four_shards_in_parallel_merge_into_the_single_run(single, tmp_path):
    shards = [report.shard_of(s, 4) for s in CLASS]
    assert len(set(shards)) >= 3, "the test class should spread over the shards"
    procs, outs = [], []
    for k in range(4):
        out = tmp_path / f"shard{k}"
        outs.append(out)
        procs.append(
            subprocess.Popen(
                _grade_cmd(single["subs"], out, "--no-progress", "--shard", f"{k}/4"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for k, proc in enumerate(procs):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (k, err[-3000:])
    for k, out in enumerate(outs):
        run = json.loads((out / "run.json").read_text())
        assert run["shard"] == f"{k}/4"
        graded = {r["student"] for r in _rows(out)}
        assert graded == {s for s in CLASS if report.shard_of(s, 4) == k}
    merged = tmp_path / "merged"
    proc = subprocess.run(
        [*MERGE, *map(str, outs), "--out", str(merged)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert (merged / "gradebook.csv").read_text() == (single["out"] / "gradebook.csv").read_text()
    assert sorted(p.name for p in (merged / "feedback").iterdir()) == sorted(
        p.name for p in (single["out"] / "feedback").iterdir()
    )
    assert len(list((merged / "results").glob("*.json"))) == len(CLASS)
    # merging the same shards twice, or a shard with the single run, overlaps
    again = subprocess.run(
        [*MERGE, str(outs[0]), str(single["out"]), "--out", str(tmp_path / "m2")],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 2 and "graded in both" in again.stderr, again.stderr


def test_regrade_updates_some_rows_keeps_the_others_and_cleans_stale_work(single, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(single["out"], out)
    before = {(r["student"], r["exercise"]): r for r in _rows(out)}
    # what a killed run leaves: work folders, a kernel home, a half-written result
    stale = [
        out / ".private" / "work" / "ann-deadbeef" / CHAPTER.name,
        out / ".private" / "scratch" / "kernel-x" / "connection.json",
        out / "results" / ".ann.json.abc123.tmp",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    # ann resubmits a wrong answer; dee resubmits unchanged
    subs = _write_class(tmp_path / "subs", {"ann": wrong_sign, "dee": honest})
    proc = subprocess.run(_grade_cmd(subs, out), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out)
    points = _points(rows)
    assert points == {**EXPECTED, "ann": (0, 3)}, rows
    for r in rows:
        if r["student"] not in ("ann", "dee"):
            assert r == before[(r["student"], r["exercise"])]
    assert "kept from earlier runs" in proc.stderr
    for path in stale:
        assert not path.exists(), f"stale {path} was not cleaned"
    # the progress bar is tqdm's (it was not turned off here)
    assert "100%|" in proc.stderr and "2/2" in proc.stderr, proc.stderr[-2000:]


def test_regrading_against_other_notebooks_is_refused(single, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(single["out"], out)
    src = tmp_path / "src"
    src.mkdir()
    nb = _nb()
    nb.cells[0].source += "\n\nA changed introduction."
    (src / CHAPTER.name).write_text(nbformat.writes(nb))
    cmd = [*GRADE, single["subs"][0], "--source", str(src), "--out", str(out), "--seed", SEED]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "other instructor notebooks" in proc.stderr and "new --out" in proc.stderr
    assert (out / "gradebook.csv").read_text() == (single["out"] / "gradebook.csv").read_text()


# --------------------------------------------------------------------------- merge refusals


def _fake_out(path: Path, students, shard=None, source="s" * 24, seed="x" * 16) -> Path:
    for student in students:
        result = {
            "student": student,
            "isolation": "full",
            "graded": True,
            "notes": [],
            "exercises": [
                {
                    "exercise": "1.1",
                    "notebook": "chapter.ipynb",
                    "points": 1,
                    "max_points": 1,
                    "reason": "passed",
                    "details": "",
                }
            ],
        }
        report.write_student(path, report.file_name(student), result)
    report.write_run(path, source_digest=source, seed=seed, shard=shard)
    return path


@pytest.mark.parametrize(
    "case, words",
    [
        ("overlap", "graded in both"),
        ("seed", "different secret seeds"),
        ("source", "different instructor notebooks"),
        ("missing", "shard(s) 1/2 missing"),
        ("twice", "given twice"),
        ("not_a_run", "not the --out folder"),
        ("out_not_empty", "not empty"),
    ],
)
def test_merge_refuses_with_a_reason(tmp_path, case, words):
    a = _fake_out(tmp_path / "a", ["ann"], shard="0/2")
    b = _fake_out(tmp_path / "b", ["ben"], shard="1/2")
    out = tmp_path / "merged"
    if case == "overlap":
        b = _fake_out(tmp_path / "b2", ["ann"], shard="1/2")
    elif case == "seed":
        b = _fake_out(tmp_path / "b2", ["ben"], shard="1/2", seed="y" * 16)
    elif case == "source":
        b = _fake_out(tmp_path / "b2", ["ben"], shard="1/2", source="t" * 24)
    elif case == "twice":
        b = _fake_out(tmp_path / "b2", ["ben"], shard="0/2")
    elif case == "not_a_run":
        b = tmp_path / "empty"
        b.mkdir()
    elif case == "out_not_empty":
        out.mkdir()
        (out / "x").write_text("")
    folders = [str(a)] if case == "missing" else [str(a), str(b)]
    proc = subprocess.run([*MERGE, *folders, "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr, proc.stderr


def test_merge_partial_and_complete(tmp_path):
    a = _fake_out(tmp_path / "a", ["ann"], shard="0/2")
    b = _fake_out(tmp_path / "b", ["ben", "jo se"], shard="1/2")
    proc = subprocess.run(
        [*MERGE, str(a), "--partial", "--out", str(tmp_path / "p")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["student"] for r in _rows(tmp_path / "p")] == ["ann"]
    proc = subprocess.run(
        [*MERGE, str(b), str(a), "--out", str(tmp_path / "m")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["student"] for r in _rows(tmp_path / "m")] == ["ann", "ben", "jo se"]
    assert len(list((tmp_path / "m" / "feedback").glob("*.md"))) == 3


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    "shard, words",
    [
        ("4/4", "0 <= K < N"),
        ("0/0", "N >= 1"),
        ("one/4", "expected K/N"),
        ("1", "expected K/N"),
    ],
)
def test_bad_shard_is_a_usage_error(tmp_path, shard, words):
    subs = _write_class(tmp_path / "subs", {"ann": honest})
    proc = subprocess.run(
        _grade_cmd(subs, tmp_path / "out", "--shard", shard), capture_output=True, text=True
    )
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_shard_without_a_pinned_seed_is_a_usage_error(tmp_path):
    subs = _write_class(tmp_path / "subs", {"ann": honest})
    env = {k: v for k, v in os.environ.items() if k != "BACKPROP_LAB_SECRET_SEED"}
    proc = subprocess.run(
        _grade_cmd(subs, tmp_path / "out", "--shard", "0/2", seed=None),
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2 and "same --seed" in proc.stderr, proc.stderr


def test_a_missing_submission_is_a_usage_error(tmp_path):
    subs = _write_class(tmp_path / "subs", {"ann": honest})
    missing = str(tmp_path / "subs" / "bob")
    proc = subprocess.run(
        _grade_cmd([*subs, missing], tmp_path / "out"), capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert f"submission {missing} does not exist" in proc.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- Ctrl-C


def _our_processes(out: Path) -> list[str]:
    """Processes started for this grading run (their environment names its --out)."""
    marker = f"JUPYTER_PATH={out}/.private/jupyter".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if marker in env.split(b"\0"):
            found.append(f"{pid}: {cmdline[:200].decode(errors='replace')}")
    return found


def test_ctrl_c_stops_promptly_and_writes_what_finished(tmp_path):
    cls = {"a_first": honest, **{f"slow{i}": slow for i in range(6)}}
    subs = _write_class(tmp_path / "subs", cls)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _grade_cmd(subs, out, "--no-progress", "--jobs", "1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a test run started in the background of a shell without job
        # control inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while not list((out / "results").glob("*.json")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no submission was graded in 300 s"
        time.sleep(0.2)
    running = _our_processes(out)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    stopped_in = time.monotonic() - t0
    assert proc.returncode == 130, err[-3000:]
    assert stopped_in < 30, f"Ctrl-C took {stopped_in:.1f} s"
    assert "interrupted" in err
    rows = _rows(out)
    assert {r["student"] for r in rows} == set(cls)
    points = _points(rows)
    assert points["a_first"] == (1, 3), rows
    stopped = [r for r in rows if "interrupted" in r["reason"]]
    assert stopped and all(r["reason"].startswith("NOT GRADED") for r in stopped)
    assert all(r["points"] == "0" for r in stopped)
    assert len({r["student"] for r in stopped}) >= 5  # jobs=1: at most one slow one finished
    assert running, "the test should have caught the grader's workers running"
    time.sleep(1)
    assert _our_processes(out) == [], "a worker or kernel outlived Ctrl-C"
    assert not (out / ".private" / "work").exists()


# --------------------------------------------------------------------------- budget


NO_BUDGET = "no memory/CPU budget per submission as a whole"


def _isolation(out: Path) -> str:
    return json.loads((out / "run.json").read_text())["isolation"]


def test_without_a_cgroup_budget_the_gradebook_and_stderr_say_so(single):
    label = _isolation(single["out"])
    if NO_BUDGET not in label:
        pytest.skip(f"this machine gives each kernel a cgroup v2 budget (isolation: {label})")
    assert NO_BUDGET in single["proc"].stderr
    assert all(NO_BUDGET in r["isolation"] for r in _rows(single["out"]))
    why = label.split(NO_BUDGET, 1)[1]
    assert why.startswith(" (") and len(why.split(")")[0]) > 5, label  # the reason is given
    assert "Grading isolation:" in next((single["out"] / "feedback").glob("*.md")).read_text()


def forks_to_share_memory():
    """Three children of 900 MB each: under a 2048 MB per-process limit every one fits, under
    a 2048 MB budget for the submission as a whole they do not."""
    src = (
        "import os, time\n"
        "_pids = []\n"
        "for _i in range(3):\n"
        "    _pid = os.fork()\n"
        "    if _pid == 0:\n"
        "        _a = np.ones(900 * 2**20 // 8)\n"
        "        time.sleep(3)\n"
        "        os._exit(0)\n"
        "    _pids.append(_pid)\n"
        "_codes = [os.waitpid(_p, 0)[1] for _p in _pids]\n"
        "if any(_codes):\n"
        "    raise MemoryError(f'children stopped: {_codes}')\n"
        "def sigmoid_backward(upstream, x):\n"
        "    s = 1.0 / (1.0 + np.exp(-x))\n"
        "    return upstream * s * (1.0 - s)\n"
    )
    return _answer(_nb(), "ex-1-1-answer", src)


def test_a_cgroup_budget_holds_for_the_submission_as_a_whole(single, tmp_path):
    label = _isolation(single["out"])
    if NO_BUDGET in label:
        pytest.skip(f"no cgroup v2 budget on this machine: {label.split(NO_BUDGET, 1)[1]}")
    subs = _write_class(tmp_path / "subs", {"forker": forks_to_share_memory, "ok": honest})
    out = tmp_path / "out"
    proc = subprocess.run(
        _grade_cmd(subs, out, "--no-progress", "--memory-mb", "2048"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    points = _points(_rows(out))
    assert points["ok"] == (1, 3)
    assert points["forker"][0] == 0, _rows(out)


def test_kernel_cgroup_settings_are_written(tmp_path):
    """What the kernel launcher writes into its cgroup (checked on a plain folder, so it runs on
    every machine; the kernel enforcing it is the test above)."""
    from backprop_lab.grading import sandbox

    parent = tmp_path / "backprop-lab-1"
    parent.mkdir()
    cfg = {"cgroup": str(parent), "memory_mb": 1024, "cpus": 1.5, "max_processes": 32}
    sandbox.join_cgroup(cfg, "kernel-1")
    leaf = parent / "kernel-1"
    assert (leaf / "memory.max").read_text() == str(1024 * 2**20)
    assert (leaf / "cpu.max").read_text() == "150000 100000"
    assert (leaf / "pids.max").read_text() == "32"
    assert (leaf / "cgroup.procs").read_text() == "0"
    sandbox.join_cgroup({"cgroup": None}, "kernel-2")  # no budget: nothing to do
    assert not (parent / "kernel-2").exists()


def test_cgroup_parent_needs_the_controllers(tmp_path, monkeypatch):
    from backprop_lab.grading import sandbox

    own = tmp_path / "own"
    own.mkdir()
    (own / "cgroup.subtree_control").write_text("")
    monkeypatch.delenv(sandbox.DISABLE_ENV, raising=False)
    monkeypatch.setattr(sandbox, "own_cgroup", lambda: (str(own), ""))
    (own / "cgroup.controllers").write_text("hugetlb memory\n")
    parent, why = sandbox.cgroup_parent("77")
    assert parent is None and "no cpu/pids controller" in why and "hugetlb memory" in why
    (own / "cgroup.controllers").write_text("cpu io memory pids\n")
    parent, why = sandbox.cgroup_parent("77")
    assert (parent, why) == (str(own / "backprop-lab-77"), "")
    assert (own / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    assert (own / "backprop-lab-77" / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"


# --------------------------------------------------------------------------- at the door


def test_submissions_are_checked_at_the_door(tmp_path):
    """Links and special files are refused, the student is named by the path as given, a size
    cap holds, and any malformed notebook costs only its own student (exit status 0)."""
    subs = tmp_path / "subs"
    _write_class(subs, {"victim": honest})
    victim = subs / "victim" / CHAPTER.name
    (subs / "mallory").mkdir()
    (subs / "mallory" / CHAPTER.name).symlink_to(victim)  # a classmate's notebook
    (subs / "copycat").symlink_to(subs / "victim", target_is_directory=True)
    (subs / "peeker").mkdir()
    (subs / "peeker" / CHAPTER.name).symlink_to(CHAPTER)  # the instructor's notebook
    (subs / "piper").mkdir()
    os.mkfifo(subs / "piper" / CHAPTER.name)  # reading it would block the grader
    (subs / "hoarder").mkdir()
    (subs / "hoarder" / CHAPTER.name).write_text(" " * (17 * 2**20) + "{}")
    (subs / "nester").mkdir()
    (subs / "nester" / CHAPTER.name).write_text("[" * 200_000 + "]" * 200_000)
    (subs / "oddcells").mkdir()
    odd = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [1, [2]]}
    (subs / "oddcells" / CHAPTER.name).write_text(json.dumps(odd))
    args = [str(victim), str(subs / "mallory" / CHAPTER.name)]  # file arguments
    args += [str(subs / n) for n in ("copycat", "peeker", "piper", "hoarder", "nester", "oddcells")]
    out = tmp_path / "out"
    proc = subprocess.run(
        _grade_cmd(args, out, "--no-progress"), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out)
    reasons = {r["student"]: r["reason"] for r in rows if r["exercise"] == "1.1"}
    points = _points(rows)
    assert points == {
        "victim": (1, 3),
        "mallory": (0, 0),
        "copycat": (0, 0),
        "peeker": (0, 0),
        "piper": (0, 0),
        "hoarder": (0, 0),
        "nester": (0, 0),
        "oddcells": (0, 0),
    }, rows
    assert reasons["victim"] == "passed"
    for name in ("mallory", "copycat", "peeker"):
        assert reasons[name].startswith("refused:") and "symbolic link" in reasons[name]
    assert reasons["piper"].startswith("refused:") and "not a regular file" in reasons["piper"]
    assert reasons["hoarder"].startswith("refused:") and "MiB" in reasons["hoarder"]
    assert reasons["nester"] == f"not a readable notebook: {CHAPTER.name} is not a Jupyter " \
        "notebook (JSON nested too deeply)"  # fmt: skip
    assert reasons["oddcells"].startswith("not a readable notebook:")


def test_each_run_draws_a_fresh_seed_unless_pinned(tmp_path):
    subs = _write_class(tmp_path / "subs", {"ann": honest})
    env = {k: v for k, v in os.environ.items() if k != "BACKPROP_LAB_SECRET_SEED"}
    out = tmp_path / "out"
    digests = []
    for _ in range(2):
        proc = subprocess.run(
            _grade_cmd(subs, out, "--no-progress", seed=None),
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        digests.append(json.loads((out / "run.json").read_text())["seed_digest"])
        assert _points(_rows(out)) == {"ann": (1, 3)}
    assert digests[0] != digests[1]
    assert not (out / ".private" / "seed").exists()
    assert len(list((out / ".private" / "expected").glob("*.ipynb"))) == 1  # no pile-up
    pinned = subprocess.run(
        _grade_cmd(subs, out, "--no-progress", seed="5"), capture_output=True, text=True, env=env
    )
    assert pinned.returncode == 0
    assert json.loads((out / "run.json").read_text())["seed_digest"] == report.seed_digest(5)


# --------------------------------------------------------------------------- the sandbox


def leaves_traces(lock_file: str, shm_key: int):
    """Right answers, plus a file in /run/lock and a SysV shared-memory segment that would
    outlive the kernel on the host."""
    src = (
        "import ctypes\n"
        "try:\n"
        f"    open({lock_file!r}, 'w').write('x')\n"
        "except OSError:\n"
        "    pass\n"
        "_libc = ctypes.CDLL(None, use_errno=True)\n"
        f"_libc.shmget(ctypes.c_int({shm_key}), ctypes.c_size_t(1 << 20), 0o1666)\n"
        "def sigmoid_backward(upstream, x):\n"
        "    s = 1.0 / (1.0 + np.exp(-x))\n"
        "    return upstream * s * (1.0 - s)\n"
    )
    return lambda: _answer(_nb(), "ex-1-1-answer", src)


def _shm_keys() -> set[int]:
    lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    return {int(line.split()[0]) for line in lines if line.strip()}


def test_lock_folder_and_sysv_ipc_are_private_to_the_kernel(tmp_path):
    from backprop_lab.grading import sandbox

    probe = sandbox.probe()
    if not (probe["pidns"] and probe["mountns"] and probe["ipcns"]):
        pytest.skip(f"no PID, mount and IPC namespaces here: {probe['notes']}")
    if not (os.path.isdir("/run/lock") and os.path.exists("/proc/sysvipc/shm")):
        pytest.skip("no /run/lock or no /proc/sysvipc/shm on this machine")
    token = os.urandom(4).hex()
    lock_file = f"/run/lock/backprop-lab-test-{token}"
    key = int(token, 16) & 0x7FFFFFFF
    subs = _write_class(tmp_path / "subs", {"tracer": leaves_traces(lock_file, key)})
    out = tmp_path / "out"
    try:
        proc = subprocess.run(
            _grade_cmd(subs, out, "--no-progress"), capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert _points(_rows(out)) == {"tracer": (1, 3)}  # the cell ran to the end
        assert not os.path.exists(lock_file), "a file the kernel wrote outlived it"
        assert key not in _shm_keys(), "a SysV segment the kernel made outlived it"
    finally:  # what the unprotected code would leave on this machine
        if os.path.exists(lock_file):
            os.unlink(lock_file)
        if key in _shm_keys():
            subprocess.run(["ipcrm", "-M", str(key)], capture_output=True)


def test_the_seed_and_the_graders_paths_never_reach_feedback(tmp_path):
    """An answer that puts the secret seed, its working folder and the kernel's mount table
    (which names the hidden folders) into an exception message."""
    src = (
        "import os\n"
        "raise RuntimeError('seed=' + os.environ.get('BACKPROP_LAB_SEED', '') + ' cwd='\n"
        "                   + os.getcwd() + ' mounts=' + open('/proc/self/mountinfo').read())\n"
    )
    subs = _write_class(tmp_path / "subs", {"leaker": lambda: _answer(_nb(), "ex-1-1-answer", src)})
    out = tmp_path / "out"
    seed = "9876543210123"
    proc = subprocess.run(
        _grade_cmd(subs, out, "--no-progress", seed=seed), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    texts = [(out / "feedback" / "leaker.md").read_text(), (out / "gradebook.csv").read_text()]
    texts.append((out / "results" / "leaker.json").read_text())
    for text in texts:
        assert "RuntimeError" in text and "<secret seed>" in text, text[-3000:]
        assert seed not in text
        assert str(out) not in text and str(FIXTURES) not in text
        assert os.path.realpath(FIXTURES) not in text


def test_a_damaged_earlier_result_is_reported_before_grading(tmp_path):
    out = _fake_out(tmp_path / "out", ["ann"])
    (out / "results" / "ann.json").write_text("{ truncated")
    (out / "run.json").unlink()  # (as written by an older grader)
    subs = _write_class(tmp_path / "subs", {"ben": honest})
    t0 = time.monotonic()
    proc = subprocess.run(_grade_cmd(subs, out), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "ann.json is not a grading result" in proc.stderr and "delete it" in proc.stderr
    assert not (out / "results" / "ben.json").exists()  # nothing was graded
    assert time.monotonic() - t0 < 60


def reads_the_checkout(root: Path):
    """Right answers only if nothing of the instructor's checkout but the package is visible:
    its .git (solutions in every commit), its notebooks, its README."""
    probes = [str(root / ".git" / "HEAD"), str(root / "notebooks"), str(root / "README.md")]
    src = (
        "import os\n"
        f"_seen = [p for p in {probes!r} if os.path.exists(p)]\n"
        "def sigmoid_backward(upstream, x):\n"
        "    s = 1.0 / (1.0 + np.exp(-x))\n"
        "    return (-1.0 if _seen else 1.0) * upstream * s * (1.0 - s)\n"
    )
    return lambda: _answer(_nb(), "ex-1-1-answer", src)


def test_the_instructors_checkout_is_covered_but_the_package(tmp_path):
    """The sandbox covered only the source folder, the submissions and the output: the rest
    of the checkout (.git with every solution, a built book) stayed readable. Now the whole
    checkout is covered and only the package and the Python environment are bound back (the
    kernel still imports backprop_lab: exercise 1.2 passes)."""
    from backprop_lab.grading import sandbox

    probe = sandbox.probe()
    if not (probe["pidns"] and probe["mountns"]):
        pytest.skip(f"no PID and mount namespaces here: {probe['notes']}")
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        pytest.skip(f"{root} is not a git checkout")
    subs = _write_class(tmp_path / "subs", {"snoop": reads_the_checkout(root)})
    out = tmp_path / "out"
    proc = subprocess.run(
        _grade_cmd(subs, out, "--no-progress"), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _points(_rows(out)) == {"snoop": (1, 3)}, _rows(out)
