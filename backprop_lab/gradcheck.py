"""Gradient checking: compare backprop's gradient with centered finite differences.

The comparison is done in float64 (inputs are copied and promoted), element by element,
with the relative error ``|a - n| / (|a| + |n|)``; elements where both values are below
``atol`` in size count as agreeing (a relative error of two numbers near zero is noise).

The default step is the cube root of float64's machine epsilon (about 6e-6) times
``max(1, |x|)``: for centered differences, truncation error grows like h^2 and round-off
like eps/h, and this h balances the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .backend import device_kwargs, namespace_of, to_numpy
from .tensor import Tensor, backward, no_grad

__all__ = ["gradcheck", "GradcheckReport", "GradcheckError"]

EPS64 = 2.220446049250313e-16


class GradcheckError(AssertionError):
    """Raised by ``gradcheck(..., raise_exception=True)`` when the gradients disagree."""


@dataclass
class GradcheckReport:
    """What :func:`gradcheck` found. ``bool(report)`` is ``report.passed``."""

    passed: bool
    worst_error: float
    worst_input: int
    worst_index: tuple[int, ...]
    analytic: float
    numeric: float
    eps: float | None
    rtol: float
    errors_per_input: list[float] = field(default_factory=list)
    projected: bool = False
    evaluations: int = 0

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        what = "u . f(x) for a fixed random u" if self.projected else "f(x)"
        step = "default (~6e-6 * max(1,|x|))" if self.eps is None else f"{self.eps:g}"
        return (
            f"gradcheck {verdict}: worst relative error {self.worst_error:.3e} "
            f"(tolerance {self.rtol:g}) at input {self.worst_input}, element "
            f"{self.worst_index}: backprop gave {self.analytic:.10g}, centered "
            f"differences gave {self.numeric:.10g}. Checked {what}; step {step}; "
            f"{self.evaluations} function evaluations."
        )


def _host64(x: Any) -> Any:
    import numpy as np  # host-side bookkeeping only; the function runs on its own backend

    return np.asarray(to_numpy(x), dtype=np.float64)


def gradcheck(
    f: Callable[..., Tensor],
    *inputs: Any,
    eps: float | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    raise_exception: bool = False,
    seed: int = 0,
) -> GradcheckReport:
    """Check backprop's gradient of ``f`` against centered differences at ``inputs``.

    ``f`` takes Tensors and returns a Tensor. Non-scalar outputs are reduced to
    ``sum(u * f(x))`` with a fixed random ``u`` (seeded), which checks ``u^T J``. Every
    input is checked; integer inputs are passed through unchanged and not differentiated.
    Returns a :class:`GradcheckReport`; with ``raise_exception=True`` a failure raises
    :class:`GradcheckError` carrying the same readable message.
    """
    import numpy as np

    xs = []
    diff_idx = []
    for i, x in enumerate(inputs):
        data = x.data if isinstance(x, Tensor) else x
        if not hasattr(data, "dtype"):
            data = np.asarray(data)
        host = to_numpy(data)
        if np.issubdtype(host.dtype, np.floating):
            xp = namespace_of(data)
            xs.append(xp.astype(xp.asarray(data), xp.float64))
            diff_idx.append(i)
        else:
            xs.append(data)
    if not diff_idx:
        raise TypeError("gradcheck needs at least one floating-point input")

    rng = np.random.default_rng(seed)
    u_cache: list[Any] = []

    def scalar(*args: Any) -> Tensor:
        out = f(*args)
        if not isinstance(out, Tensor):
            raise TypeError(f"gradcheck: f must return a Tensor, not {type(out).__name__}")
        if tuple(out.shape) == ():
            return out
        if not u_cache:
            xp = namespace_of(out.data)
            u = rng.standard_normal(tuple(out.shape))
            u_cache.append(xp.asarray(u, dtype=xp.float64, **device_kwargs(out.data)))
        return (out * u_cache[0]).sum()

    # Backprop's gradient.
    leaves = [Tensor(x, True) if i in diff_idx else Tensor(x) for i, x in enumerate(xs)]
    out = scalar(*leaves)
    projected = bool(u_cache)
    if out.requires_grad:
        backward(out)
    analytic = [
        _host64(leaves[i].grad) if leaves[i].grad is not None else np.zeros(_shape(xs[i]))
        for i in diff_idx
    ]

    # Centered differences, one element at a time.
    evaluations = 1
    best = (-1.0, diff_idx[0], (), 0.0, 0.0)
    per_input = []
    for k, i in enumerate(diff_idx):
        base = _host64(xs[i])
        xp = namespace_of(xs[i])
        numeric = np.zeros_like(base)
        for idx in np.ndindex(*base.shape):
            h = (EPS64 ** (1 / 3)) * max(1.0, abs(base[idx])) if eps is None else eps
            vals = []
            for sign in (1.0, -1.0):
                moved = base.copy()
                moved[idx] += sign * h
                args = list(leaves)
                args[i] = Tensor(xp.asarray(moved, dtype=xp.float64, **device_kwargs(xs[i])))
                with no_grad():
                    vals.append(float(to_numpy(scalar(*args).data)))
                evaluations += 1
            numeric[idx] = (vals[0] - vals[1]) / (2 * h)
        a = analytic[k]
        denom = np.abs(a) + np.abs(numeric)
        err = np.where(denom < atol, 0.0, np.abs(a - numeric) / np.maximum(denom, atol))
        worst_here = float(err.max()) if err.size else 0.0
        per_input.append(worst_here)
        if err.size and worst_here > best[0]:
            j = np.unravel_index(int(err.argmax()), err.shape)
            j = tuple(int(v) for v in j)
            best = (worst_here, i, j, float(a[j]), float(numeric[j]))
    worst, wi, widx, av, nv = best
    report = GradcheckReport(
        passed=bool(worst <= rtol),
        worst_error=max(worst, 0.0),
        worst_input=wi,
        worst_index=widx,
        analytic=av,
        numeric=nv,
        eps=eps,
        rtol=rtol,
        errors_per_input=per_input,
        projected=projected,
        evaluations=evaluations,
    )
    if raise_exception and not report.passed:
        raise GradcheckError(str(report))
    return report


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape)
