"""The old import path of :mod:`backprop_lab.instrument.trace` (tracing now lives with the
other listeners in ``instrument/``). ``from backprop_lab.trace import Trace`` keeps working."""

from .instrument.trace import *  # noqa: F403
from .instrument.trace import __all__  # noqa: F401
