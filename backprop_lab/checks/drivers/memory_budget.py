"""A driver that calls the answer and measures the memory it allocates (``tracemalloc``).

Exercises whose point is to *avoid* holding a large array (attention's recomputing backward,
per-example gradient norms, the clipped DP-SGD gradient) pass a budget in bytes as the last
case argument. The driver calls ``answer(*other_arguments)`` and appends one more output,
``memory``: 1.0 when the peak of memory allocated during the call
stayed within the budget, otherwise the peak divided by the budget (3.0: three times
over). The budget is infinite on the small cases, so only the large case can fail it.
NumPy reports its array allocations to ``tracemalloc``, so the arrays an answer creates
are counted; its inputs, allocated before the call, are not.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np

from backprop_lab.checks.drivers import driver


@driver("memory_budget")
def call_within_memory_budget(answers, args):
    *call_args, budget = args
    budget = float(budget)
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    try:
        result = answers[0](*call_args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if started:
            tracemalloc.stop()
    used = max(0, peak - base)
    over = 1.0 if not math.isfinite(budget) or used <= budget else used / budget
    values = result if isinstance(result, tuple) else (result,)
    return (*values, np.array(over))
