"""Check the student edition: released notebooks must fail exactly at their check cells.

    .venv/bin/python scripts/check_student_release.py [--notebooks notebooks/] [--keep DIR]
                                                       [--practice]

Releases every notebook in ``notebooks/`` to a temporary directory (``backprop-lab release``),
runs ``pytest --nbval-lax`` on the result with JUnit XML and ``BACKPROP_LAB_STRICT=1`` (so a
failing check raises instead of printing its feedback), and compares the failing items with
the check cells (``Cell N``, N counting code cells). Exit status 0 when they are exactly the
check cells (or when there is no notebook at all, which it says), 1 otherwise.

``--practice`` also runs each released notebook the way a student's Run All in JupyterLab
does (practice mode: no ``BACKPROP_LAB_STRICT``): every cell must run without an error, and
every check cell must show its feedback ("Exercise N.k (...): not implemented yet").
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backprop_lab.grading.run_nbval import fast_imports  # noqa: E402

fast_imports()

from backprop_lab.grading import notebook as nbu  # noqa: E402
from backprop_lab.grading.release import release  # noqa: E402

_ANSI = re.compile(r"(?:\x1b|#x1B)\[[0-9;]*[A-Za-z]")


def failing_items(junit: Path) -> dict[tuple[str, int], str]:
    """{(classname, N): first line of the error} for every failed or errored ``Cell N``."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        m = re.match(r"Cell (\d+)$", case.get("name", ""))
        bad = [c for c in case if c.tag in ("failure", "error")]
        if m and bad:
            text = _ANSI.sub("", (bad[0].get("message") or "") + "\n" + (bad[0].text or ""))
            lines = [ln for ln in text.splitlines() if re.match(r"^\w+(Error|Exception)", ln)]
            out[(case.get("classname", ""), int(m[1]))] = (
                lines[-1] if lines else text.strip().splitlines()[0]
            )
    return out


def _owner(classname: str, names: list[str]) -> str | None:
    """The notebook a JUnit classname ('05-backprop.ipynb' or 'dir.05-backprop') belongs to."""
    for name in sorted(names, key=len, reverse=True):
        stem = name[: -len(".ipynb")]
        if classname.endswith(name) or classname.endswith(stem) or name in classname:
            return name
    return None


def check(notebooks: Path, keep: Path | None = None, timeout: int = 120) -> int:
    sources = nbu.find_notebooks(notebooks) if notebooks.exists() else []
    if not sources:
        print(f"check_student_release: no notebooks in {notebooks}/ - nothing to check (OK).")
        return 0
    tmp = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="student-release-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        return _check(notebooks, tmp, timeout)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _check(notebooks: Path, tmp: Path, timeout: int) -> int:
    try:
        written = release(notebooks, tmp / "release")
    except nbu.NotebookError as exc:
        print(f"check_student_release: cannot release: {exc}")
        return 1
    expected: dict[tuple[str, int], str] = {}
    names = []
    for path in written:
        rel = str(path.relative_to(tmp / "release"))
        names.append(rel)
        nb = nbu.read(path)
        for n, cell in enumerate(c for c in nb.cells if c.get("cell_type") == "code"):
            if nbu.is_check(cell):
                expected[(rel, n)] = cell.get("id", "")
    ini = tmp / "pytest.ini"
    ini.write_text("[pytest]\naddopts =\n")
    junit = tmp / "junit.xml"
    cmd = [
        sys.executable,
        "-m",
        "backprop_lab.grading.run_nbval",
        "-p",
        "nbval.plugin",
        "-p",
        "no:cacheprovider",
        "--nbval-lax",
        "--nbval-current-env",
        "--nbval-cell-timeout",
        str(timeout),
        "-c",
        str(ini),
        "--rootdir",
        str(tmp),
        "--junitxml",
        str(junit),
        "-q",
        "--no-header",
        "-o",
        "junit_logging=no",
        str(tmp / "release"),
    ]
    # Strict practice mode: a failing check raises, so each unanswered exercise fails at its
    # check cell (a student's own Run All shows the feedback and goes on instead).
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "BACKPROP_LAB_STRICT": "1"}
    env.pop("BACKPROP_LAB_SEED", None)
    env.pop("BACKPROP_LAB_CHECK_DIR", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
    if not junit.exists():
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        print("check_student_release: nbval produced no JUnit XML")
        return 1
    failed = {}
    for (cls, n), line in failing_items(junit).items():
        owner = _owner(cls, names)
        failed[(owner or cls, n)] = line
    ids = {}
    for path in written:
        rel = str(path.relative_to(tmp / "release"))
        ids[rel] = nbu.code_cell_ids(nbu.read(path))

    def label(key):
        nb, n = key
        cid = ids.get(nb, [])[n] if n < len(ids.get(nb, [])) else "?"
        return f"{nb}::Cell {n} (id {cid})"

    unexpected = sorted(set(failed) - set(expected))
    passing_checks = sorted(set(expected) - set(failed))
    print(
        f"check_student_release: {len(written)} notebook(s), {len(expected)} check cell(s), "
        f"{len(failed)} failing item(s)"
    )
    for key in unexpected:
        print(f"  FAILS but is not a check cell: {label(key)}: {failed[key]}")
    for key in passing_checks:
        print(
            f"  check cell PASSES in the student edition (it must fail until the exercise "
            f"is done): {label(key)}"
        )
    if unexpected or passing_checks:
        print("check_student_release: FAILED")
        return 1
    print("check_student_release: OK - the student edition fails exactly at its check cells")
    return 0


def practice_run(released: list[Path], timeout: int = 120) -> list[str]:
    """Run each released notebook top to bottom in practice mode, as a student's Run All;
    return the problems found (an error in any cell, a check cell without its feedback)."""
    import nbclient

    problems = []
    saved = {k: os.environ.pop(k) for k in ("BACKPROP_LAB_STRICT", "BACKPROP_LAB_CHECK_DIR",
                                              "BACKPROP_LAB_SEED") if k in os.environ}  # fmt: skip
    try:
        for path in released:
            nb = nbu.read(path)
            client = nbclient.NotebookClient(
                nb,
                timeout=timeout,
                kernel_name="python3",
                allow_errors=True,
                resources={"metadata": {"path": str(path.parent)}},
            )
            client.execute()
            for cell in nb.cells:
                if cell.get("cell_type") != "code":
                    continue
                errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
                where = f"{path.name}::{cell.get('id')}"
                if errors:
                    problems.append(f"{where} raised {errors[0].get('ename')}: "
                                    f"{str(errors[0].get('evalue'))[:200]}")  # fmt: skip
                elif nbu.is_check(cell):
                    text = "".join(o.get("text", "") for o in cell.get("outputs", []))
                    ex = nbu.exercise_of(cell)
                    if f"Exercise {ex}" not in text or "not implemented yet" not in text:
                        problems.append(f"{where} shows no feedback for exercise {ex}: {text!r}")
    finally:
        os.environ.update(saved)
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notebooks", type=Path, default=ROOT / "notebooks")
    ap.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="write the release and JUnit XML here (default: a temp dir)",
    )
    ap.add_argument("--cell-timeout", type=int, default=120)
    ap.add_argument(
        "--practice",
        action="store_true",
        help="also run the release as a student's Run All (practice mode) and check that "
        "every cell runs and every check cell shows its feedback",
    )
    args = ap.parse_args(argv)
    if not args.practice:
        return check(args.notebooks, args.keep, args.cell_timeout)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="student-practice-"))
    try:
        status = check(args.notebooks, tmp, args.cell_timeout)
        released = sorted((tmp / "release").rglob("*.ipynb"))
        problems = practice_run(released, args.cell_timeout) if released else []
        for line in problems:
            print(f"  Run All (practice mode): {line}")
        if problems:
            print("check_student_release: Run All in practice mode FAILED")
            return 1
        print(
            f"check_student_release: Run All in practice mode OK - {len(released)} notebook(s) "
            "run to the end and every check cell shows its feedback"
        )
        return status
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
