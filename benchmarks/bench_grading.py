"""Grading throughput: grade N copies of a one-chapter submission (default 100).

    .venv/bin/python benchmarks/bench_grading.py [--copies 100] [--jobs 2]

Uses the fixture chapter ``tests/fixtures/grading/chapter.ipynb`` (two exercises, three
check cells) as the source and its honest solution as every submission. Prints the wall time
of the whole command (including the one-off instructor run under the secret seed), the
submissions per minute, and checks that every copy got full marks. Target: >= 30 per minute
on a 2-core machine.

Unless ``--no-baseline``, it then runs plain ``pytest --nbval-lax`` on the same copies (no
sandbox, no merge, no audit; ``-n`` = the number of cores and ``--dist loadfile``, via
pytest-xdist, so that each notebook runs in one kernel) and prints the
ratio of the two wall times per notebook: the grading overhead (target of issue 14: <= 1.5).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "grading" / "chapter.ipynb"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=0, help="0: the grader's default")
    ap.add_argument("--target", type=float, default=30.0, help="submissions per minute")
    ap.add_argument("--no-baseline", action="store_true", help="skip the plain nbval run")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    try:
        subs = tmp / "submissions"
        for i in range(args.copies):
            d = subs / f"student{i:03d}"
            d.mkdir(parents=True)
            shutil.copy(FIXTURE, d / FIXTURE.name)
        out = tmp / "out"
        cmd = [
            sys.executable,
            "-m",
            "backprop_lab.grading.cli",
            "grade",
            *sorted(map(str, subs.iterdir())),
            "--source",
            str(FIXTURE.parent),
            "--out",
            str(out),
            "--seed",
            "987654321",
            "--jobs",
            str(args.jobs),
            "--no-progress",
        ]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        rows = list(csv.DictReader((out / "gradebook.csv").open()))
        full = sum(1 for row in rows if row["points"] == row["max_points"])
        rate = args.copies / wall * 60
        print(f"copies={args.copies} jobs={args.jobs} cores={os.cpu_count()} exit={r.returncode}")
        print(f"wall {wall:.1f} s (incl. instructor run) -> {rate:.1f} submissions per minute")
        print(f"rows with full marks: {full}/{len(rows)}")
        ok = r.returncode == 0 and full == len(rows) == 2 * args.copies and rate >= args.target
        print("PASS" if ok else f"FAIL (target {args.target:g} per minute)")
        if r.returncode:
            print(r.stderr[-2000:])
        if not args.no_baseline:
            base = tmp / "baseline"
            base.mkdir()
            for i in range(args.copies):
                shutil.copy(FIXTURE, base / f"chapter{i:03d}.ipynb")
            jobs = str(os.cpu_count() or 1)
            cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider",
                   "-q", "-n", jobs, "--dist", "loadfile", "--rootdir", str(base),
                   str(base)]  # fmt: skip
            t0 = time.perf_counter()
            b = subprocess.run(cmd, capture_output=True, text=True, cwd=base)
            plain = time.perf_counter() - t0
            tail = (b.stdout.strip().splitlines() or ["(no output)"])[-1]
            print(f"plain nbval: {plain:.1f} s for {args.copies} notebooks (exit {b.returncode}: "
                  f"{tail})")  # fmt: skip
            ratio = wall / plain if plain > 0 else float("inf")
            verdict = "meets" if ratio <= 1.5 else "misses"
            if b.returncode != 0:
                verdict = "not meaningful: plain nbval failed"
            print(f"grading / plain nbval, wall time per notebook: {ratio:.2f} "
                  f"({verdict}; target <= 1.5)")  # fmt: skip
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
