"""Grading support: seeds for check cells, the student release, and the grader.

Only :func:`seed` lives here, so that ``import backprop_lab.checks`` inside a student's
kernel stays light. The heavy parts are :mod:`backprop_lab.grading.release`,
:mod:`backprop_lab.grading.grader` and :mod:`backprop_lab.grading.cli`.
"""

from __future__ import annotations

import os

#: Seed that check cells use in the book, in JupyterLab and in the released notebooks.
#: Stored check-cell outputs in the notebooks are produced under this seed.
PUBLIC_SEED = 20240917

#: Environment variable through which the grader passes the secret seed to the kernel.
SEED_ENV = "BACKPROP_LAB_SEED"


def seed() -> int:
    """The seed check cells draw their inputs from.

    The public seed unless the grader has set ``BACKPROP_LAB_SEED`` (a secret seed, so that
    stored outputs and hard-coded answers are worthless when grading).
    """
    value = os.environ.get(SEED_ENV, "").strip()
    if not value:
        return PUBLIC_SEED
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{SEED_ENV} must be an integer, got {value!r}") from None


def grading() -> bool:
    """True inside a kernel started by ``backprop-lab grade``."""
    return bool(os.environ.get(SEED_ENV, "").strip())
