"""Imported by a grading kernel before any cell runs (IPKernelApp.exec_lines).

Pre-imports what check cells use (so that kernel start-up is paid once, before the clock of
the first cell starts) and takes the integrity snapshot of :mod:`backprop_lab.grading.guard`.
"""

import numpy  # noqa: F401

import backprop_lab.checks  # noqa: F401
from backprop_lab.grading import guard

try:  # the engine, when it imports cleanly, is what chapters use
    import backprop_lab  # noqa: F401
except Exception:  # noqa: BLE001
    pass

guard.install()
del guard
