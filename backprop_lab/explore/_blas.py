"""One BLAS thread for the chapters' experiments.

The experiments multiply small matrices (a few hundred rows), where a second BLAS thread
gains nothing; on a shared machine the idle threads spin and made the same products thirty
times slower in our measurements. ``one_blas_thread`` is a decorator that limits BLAS to one
thread while the function runs (threadpoolctl); without threadpoolctl it does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["one_blas_thread"]

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - threadpoolctl is in requirements.txt
    threadpool_limits = None


def one_blas_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with BLAS limited to one thread during each call."""
    if threadpool_limits is None:  # pragma: no cover
        return fn
    return threadpool_limits.wrap(limits=1, user_api="blas")(fn)
