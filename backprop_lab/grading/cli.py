"""``backprop-lab release`` and ``backprop-lab grade`` (registered by backprop_lab.cli)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``release`` and ``grade`` subcommands to an argparse subparsers object."""
    rel = subparsers.add_parser(
        "release",
        help="write the student edition of instructor notebooks",
        description="Replace solutions by a placeholder raise and clear outputs (check cells "
        "keep theirs). SRC and OUT may be a notebook or a directory.",
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
        help="secret seed (default: $BACKPROP_LAB_SECRET_SEED, else one kept in OUT/.private/seed)",
    )
    gr.add_argument(
        "--jobs", type=int, default=0, help="submissions at once (default: two per core)"
    )
    gr.add_argument("--cell-timeout", type=float, default=30.0, help="seconds per cell")
    gr.add_argument("--memory-mb", type=int, default=4096, help="kernel address-space limit")
    gr.add_argument("--cpu-seconds", type=int, default=120, help="kernel CPU-time limit")
    gr.add_argument(
        "--hide", action="append", default=[], help="a path the kernel must not see (repeatable)"
    )
    gr.add_argument("--no-progress", action="store_true")
    gr.set_defaults(func=run_grade)


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
    from backprop_lab.grading.grader import Options, grade

    if not Path(args.source).exists():
        print(f"backprop-lab grade: --source {args.source} does not exist", file=sys.stderr)
        return 2
    opts = Options(
        source=Path(args.source),
        out=Path(args.out),
        seed=args.seed,
        jobs=args.jobs,
        cell_timeout=args.cell_timeout,
        memory_mb=args.memory_mb,
        cpu_seconds=args.cpu_seconds,
        hide=args.hide,
        progress=not args.no_progress,
    )
    try:
        return grade(args.submissions, opts)
    except nbu.NotebookError as exc:
        print(f"backprop-lab grade: {exc}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    """Stand-alone entry point (``python -m backprop_lab.grading.cli``)."""
    parser = argparse.ArgumentParser(prog="backprop-lab")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
