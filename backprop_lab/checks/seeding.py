"""Seeds and the environment switches of the check side (kernel-safe: NumPy and os only).

* ``PUBLIC_SEED``: what practice mode draws its cases from (the book, JupyterLab, nbval).
* ``BACKPROP_LAB_STRICT=1``: a failing check raises :class:`~backprop_lab.checks.CheckFailure`
  (nbval of the student edition and the grader set it); otherwise the feedback is printed
  and Run All goes on.
* ``BACKPROP_LAB_CHECK_DIR=<dir>``: grading mode. The kernel reads the case arguments from
  ``<dir>/inputs/<id>.pkl`` and writes what the answer returned to ``<dir>/outputs/``; it
  never sees a seed or an expected value.
* ``BACKPROP_LAB_SEED``: the seed of the first grader (the one that ran the oracle inside the
  kernel). Practice mode still honours it so that notebooks graded that way keep working; the
  grading mode above ignores it.
"""

from __future__ import annotations

import os
import zlib

import numpy as np

#: Seed of practice mode: the stored outputs of check cells are produced under it.
PUBLIC_SEED = 20240917

STRICT_ENV = "BACKPROP_LAB_STRICT"
CHECK_DIR_ENV = "BACKPROP_LAB_CHECK_DIR"
LEGACY_SEED_ENV = "BACKPROP_LAB_SEED"


def strict() -> bool:
    """True when a failing check must raise (``BACKPROP_LAB_STRICT=1``, or a legacy grader)."""
    if os.environ.get(STRICT_ENV, "").strip() not in ("", "0"):
        return True
    return bool(os.environ.get(LEGACY_SEED_ENV, "").strip())


def check_dir() -> str | None:
    """The grading folder, or None in practice mode."""
    value = os.environ.get(CHECK_DIR_ENV, "").strip()
    return value or None


def practice_seed() -> int:
    """The public seed, or the legacy grader's ``BACKPROP_LAB_SEED`` when it is set."""
    value = os.environ.get(LEGACY_SEED_ENV, "").strip()
    if not value:
        return PUBLIC_SEED
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{LEGACY_SEED_ENV} must be an integer, got {value!r}") from None


def rng_for(exercise: str, seed: int, stream: str = "cases") -> np.random.Generator:
    """The generator of one exercise under one seed: one stream per (seed, exercise, stream)."""
    salt = zlib.crc32(f"{exercise}/{stream}".encode())
    return np.random.default_rng([int(seed) % 2**63, salt])
