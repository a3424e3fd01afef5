"""``backprop-lab release``, ``grade`` and ``grade-merge`` (registered by backprop_lab.cli)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``release``, ``grade`` and ``grade-merge`` subcommands to an argparse
    subparsers object."""
    rel = subparsers.add_parser(
        "release",
        help="write the student edition of instructor notebooks",
        description="Replace solutions by a placeholder raise, drop the solution directives "
        "and clear every output (check cells too: a stored check printout would show what a "
        "right answer prints). SRC and OUT may be a notebook or a directory.",
    )
    rel.add_argument("src", metavar="SRC")
    rel.add_argument("out", metavar="OUT")
    rel.set_defaults(func=run_release)

    gr = subparsers.add_parser(
        "grade",
        help="grade submissions with nbval against the instructor notebooks",
        description="Grade SUBMISSIONS (student directories or notebooks). Writes "
        "OUT/gradebook.csv, OUT/feedback/<student>.md, OUT/results/, OUT/junit/. Exit "
        "status 0 when every submission was graded, 1 otherwise, 2 for a usage error.",
    )
    gr.add_argument("submissions", nargs="+", metavar="SUBMISSION")
    gr.add_argument("--source", required=True, help="instructor notebook or directory")
    gr.add_argument("--out", required=True, help="output directory")
    gr.add_argument(
        "--seed",
        type=int,
        default=None,
        help="secret seed (default: $BACKPROP_LAB_SECRET_SEED, else a fresh one for each run)",
    )
    gr.add_argument(
        "--jobs", type=int, default=0, help="submissions at once (default: two per core)"
    )
    gr.add_argument("--cell-timeout", type=float, default=30.0, help="seconds per cell")
    gr.add_argument(
        "--memory-mb",
        type=int,
        default=4096,
        help="address-space limit of each kernel process and, with cgroup v2, the memory "
        "budget of one submission as a whole",
    )
    gr.add_argument("--cpu-seconds", type=int, default=120, help="kernel CPU-time limit")
    gr.add_argument(
        "--cpus",
        type=float,
        default=1.0,
        help="CPU budget of one submission as a whole, in cores (needs cgroup v2; see the "
        "isolation column)",
    )
    gr.add_argument(
        "--hide", action="append", default=[], help="a path the kernel must not see (repeatable)"
    )
    gr.add_argument("--no-progress", action="store_true", help="no progress bar")
    gr.add_argument(
        "--shard",
        metavar="K/N",
        default=None,
        help="grade only slice K of N (K = 0 .. N-1; a student's slice is a hash of the "
        "student id, the same on every machine); needs --seed or $BACKPROP_LAB_SECRET_SEED "
        "so that every shard grades under the same secret seed. Combine the shards' OUT "
        "folders with 'backprop-lab grade-merge'",
    )
    gr.set_defaults(func=run_grade)

    mg = subparsers.add_parser(
        "grade-merge",
        help="combine the OUT folders of 'grade --shard K/N' runs into one gradebook",
        description="Combine the OUT folders of 'backprop-lab grade --shard K/N' runs into "
        "OUT/gradebook.csv, OUT/feedback/, OUT/results/ and OUT/junit/. Refuses folders graded "
        "against different instructor notebooks or secret seeds, a student graded in two "
        "folders, and a missing shard (unless --partial). Exit status 0 when every student "
        "was graded, 1 otherwise, 2 when the folders cannot be merged.",
    )
    mg.add_argument("shards", nargs="+", metavar="SHARD_OUT")
    mg.add_argument("--out", required=True, help="a new (or empty) output directory")
    mg.add_argument(
        "--partial", action="store_true", help="merge even when some shards are missing"
    )
    mg.set_defaults(func=run_merge)


def run_release(args) -> int:
    from backprop_lab.grading.run_nbval import fast_imports

    fast_imports()
    from backprop_lab.grading import notebook as nbu
    from backprop_lab.grading.release import release

    try:
        written = release(args.src, args.out)
    except nbu.NotebookError as exc:
        print(f"backprop-lab release: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    if not written:
        print(f"backprop-lab release: no notebooks in {args.src}", file=sys.stderr)
    return 0


def run_grade(args) -> int:
    from backprop_lab.grading.run_nbval import fast_imports

    fast_imports()
    from backprop_lab.grading import notebook as nbu
    from backprop_lab.grading.grader import SECRET_ENV, GradeError, Options, grade
    from backprop_lab.grading.report import ReportError

    def usage(message: str) -> int:
        print(f"backprop-lab grade: {message}", file=sys.stderr)
        return 2

    if not Path(args.source).exists():
        return usage(f"--source {args.source} does not exist")
    for sub in args.submissions:
        if not os.path.lexists(sub):
            return usage(f"submission {sub} does not exist (check the path; nothing was graded)")
    if args.cpus <= 0 or args.memory_mb <= 0 or args.cpu_seconds <= 0 or args.jobs < 0:
        return usage("--cpus, --memory-mb and --cpu-seconds must be positive, --jobs >= 0")
    shard = None
    if args.shard is not None:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", args.shard)
        if not m or int(m[2]) < 1 or int(m[1]) >= int(m[2]):
            return usage(
                f"--shard {args.shard!r}: expected K/N with N >= 1 and 0 <= K < N "
                "(e.g. --shard 0/4 ... --shard 3/4; Slurm: $SLURM_ARRAY_TASK_ID/N with "
                "--array=0-(N-1); Kubernetes: $JOB_COMPLETION_INDEX/N)"
            )
        shard = (int(m[1]), int(m[2]))
        if args.seed is None and not os.environ.get(SECRET_ENV, "").strip():
            return usage(
                "--shard needs one secret seed for all shards: pass the same --seed to every "
                f"shard or set ${SECRET_ENV} (e.g. from a secret of your scheduler)"
            )
    opts = Options(
        source=Path(args.source),
        out=Path(args.out),
        seed=args.seed,
        jobs=args.jobs,
        cell_timeout=args.cell_timeout,
        memory_mb=args.memory_mb,
        cpu_seconds=args.cpu_seconds,
        cpus=args.cpus,
        hide=args.hide,
        progress=not args.no_progress,
        shard=shard,
    )
    try:
        return grade(args.submissions, opts)
    except (nbu.NotebookError, GradeError, ReportError) as exc:
        return usage(str(exc))
    except KeyboardInterrupt:
        print("backprop-lab grade: interrupted before grading started", file=sys.stderr)
        return 130


def run_merge(args) -> int:
    from backprop_lab.grading.report import ReportError, merge

    try:
        results = merge([Path(s) for s in args.shards], Path(args.out), partial=args.partial)
    except ReportError as exc:
        print(f"backprop-lab grade-merge: {exc}", file=sys.stderr)
        return 2
    ungraded = sorted(r["student"] for r in results if not r.get("graded", True))
    if ungraded:
        print(f"NOT GRADED: {', '.join(ungraded)}", file=sys.stderr)
    print(
        f"gradebook: {Path(args.out) / 'gradebook.csv'} ({len(results)} students from "
        f"{len(args.shards)} folders)",
        file=sys.stderr,
    )
    return 1 if ungraded else 0


def main(argv=None) -> int:
    """Stand-alone entry point (``python -m backprop_lab.grading.cli``)."""
    parser = argparse.ArgumentParser(prog="backprop-lab")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
