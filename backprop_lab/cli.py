"""The ``backprop-lab`` command: ``doctor`` (what is installed and usable), plus the
instructor commands ``release``, ``grade`` and ``grade-merge`` (from
:mod:`backprop_lab.grading`)."""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata

__all__ = ["main", "doctor"]

_PACKAGES = [
    "numpy",
    "array-api-compat",
    "array-api-strict",
    "cupy-cuda12x",
    "jupyter-book",
    "myst-nb",
    "sphinx-exercise",
    "jupyterlab",
    "ipywidgets",
    "nbval",
    "matplotlib",
    "playwright",
]


def doctor(args: argparse.Namespace | None = None) -> int:
    """Print versions, the active backend and whether a GPU can be used (and why not)."""
    import backprop_lab as bl

    print(f"backprop_lab {bl.__version__} (Python {platform.python_version()}, "
          f"{platform.system()} {platform.machine()})")  # fmt: skip
    print("packages:")
    for name in _PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        print(f"  {name:18} {version}")
    info = bl.backend_info()
    print(f"backend: {info.name} {info.version} on {info.device} ({info.reason})")
    print(f"GPU: {'found' if info.gpu_available else 'not available'}: {info.gpu_reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backprop-lab",
        description="Backprop Lab: an instrumented autodiff engine and interactive textbook.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("doctor", help="show versions, backend, and whether a GPU is usable")
    p.set_defaults(func=doctor)
    try:
        from .grading import cli as grading_cli
    except ImportError as exc:  # the grading package is optional at import time
        grading_cli = None
        grading_error = exc
    if grading_cli is not None:
        grading_cli.register(sub)
    else:
        for name in ("release", "grade", "grade-merge"):
            q = sub.add_parser(name, help=f"(unavailable: {grading_error})")
            q.set_defaults(func=lambda a, e=grading_error: _unavailable(e))
    return parser


def _unavailable(exc: Exception) -> int:
    print(f"backprop-lab: the grading tools could not be loaded: {exc}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
