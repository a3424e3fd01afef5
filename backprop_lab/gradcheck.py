"""Gradient checking: compare backprop's gradient with centered finite differences.

The comparison is done in float64 (inputs are copied and promoted), element by element,
with the relative error ``|a - n| / (|a| + |n|)``; elements where both values are below
``atol`` in size count as agreeing (a relative error of two numbers near zero is noise).
A NaN or an infinity in either gradient is a failure in its own right, reported as such:
it must never hide (or be hidden by) the comparison of the other elements.

The finite differences come from :mod:`backprop_lab.numdiff` (its default step, the cube
root of float64's machine epsilon times ``max(1, |x|)``, balances truncation against
round-off for centered differences).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import numdiff
from .backend import device_kwargs, namespace_of, to_numpy
from .tensor import Tensor, backpropagate, mode_changed

__all__ = ["gradcheck", "GradcheckReport", "GradcheckError"]

EPS64 = numdiff.EPS64


class GradcheckError(AssertionError):
    """Raised by ``gradcheck(..., raise_exception=True)`` when the gradients disagree."""


@dataclass
class GradcheckReport:
    """What :func:`gradcheck` found. ``bool(report)`` is ``report.passed``.

    ``worst_*`` describe the element with the largest relative error among those where
    both gradients are finite (None when there is none); ``nonfinite`` lists
    ``(input, index, backprop value, finite-difference value)`` for every element where
    either is NaN or infinite.
    """

    passed: bool
    worst_error: float | None
    worst_input: int | None
    worst_index: tuple[int, ...] | None
    analytic: float | None
    numeric: float | None
    eps: float | None
    rtol: float
    errors_per_input: list[float | None] = field(default_factory=list)
    projected: bool = False
    evaluations: int = 0
    nonfinite: list[tuple[int, tuple[int, ...], float, float]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        what = "u . f(x) for a fixed random u" if self.projected else "f(x)"
        step = "default (~6e-6 * max(1,|x|))" if self.eps is None else f"{self.eps:g}"
        parts = [f"gradcheck {verdict}:"]
        if self.nonfinite:
            i, idx, a, n = self.nonfinite[0]
            more = len(self.nonfinite) - 1
            parts.append(
                f"the gradients are not finite at input {i}, element {idx}: backprop gave "
                f"{a:.10g}, centered differences gave {n:.10g}"
                + (f" (and {more} more such element{'s' if more > 1 else ''})" if more else "")
                + "."
            )
        if self.worst_error is None:
            if not self.nonfinite:
                parts.append("no elements to compare.")
        else:
            lead = "Among the finite elements, the" if self.nonfinite else "The"
            parts.append(
                f"{lead} worst relative error is {self.worst_error:.3e} (tolerance "
                f"{self.rtol:g}) at input {self.worst_input}, element {self.worst_index}: "
                f"backprop gave {self.analytic:.10g}, centered differences gave "
                f"{self.numeric:.10g}."
            )
        parts.append(f"Checked {what}; step {step}; {self.evaluations} function evaluations.")
        return " ".join(parts)


def _host64(x: Any) -> np.ndarray:
    return np.array(to_numpy(x), dtype=np.float64)


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
    floating input is checked; integer inputs are passed through unchanged and not
    differentiated. No tensor's ``.grad`` is changed. Returns a :class:`GradcheckReport`;
    with ``raise_exception=True`` a failure raises :class:`GradcheckError` carrying the same
    readable message.
    """
    xs = []
    diff_idx = []
    for i, x in enumerate(inputs):
        data = x._data if isinstance(x, Tensor) else x
        if not hasattr(data, "dtype"):
            data = np.asarray(data)
        if np.issubdtype(to_numpy(data).dtype, np.floating):
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
            xp = namespace_of(out._data)
            u = rng.standard_normal(tuple(out.shape))
            u_cache.append(xp.asarray(u, dtype=xp.float64, **device_kwargs(out._data)))
        return (out * u_cache[0]).sum()

    # Backprop's gradient (collected for these leaves only: no .grad is touched).
    leaves = [Tensor(x, True) if i in diff_idx else Tensor(x) for i, x in enumerate(xs)]
    with mode_changed(grad_enabled=True):
        out = scalar(*leaves)
    projected = bool(u_cache)
    found: dict = {}
    if out.requires_grad:
        xp = namespace_of(out._data)
        found = backpropagate(out, xp.ones_like(out._data))
    analytic = [_host64(found[leaves[i]]) if leaves[i] in found else
                np.zeros(tuple(xs[i].shape)) for i in diff_idx]  # fmt: skip

    # Centered differences, one element at a time (backprop_lab.numdiff).
    evaluations = 1
    worst: tuple[float, int, tuple[int, ...], float, float] | None = None
    per_input: list[float | None] = []
    nonfinite: list[tuple[int, tuple[int, ...], float, float]] = []
    with mode_changed(grad_enabled=False):
        for k, i in enumerate(diff_idx):
            moved = _host64(xs[i])
            xp = namespace_of(xs[i])
            args = list(leaves)

            def value(i: int = i, moved: np.ndarray = moved, xp: Any = xp, args=args) -> float:
                args[i] = Tensor(xp.asarray(moved, dtype=xp.float64, **device_kwargs(xs[i])))
                return float(to_numpy(scalar(*args)._data))

            numeric = numdiff.partials(value, moved, eps=eps)
            evaluations += 2 * moved.size
            a = analytic[k]
            finite = np.isfinite(a) & np.isfinite(numeric)
            for idx in np.ndindex(*finite.shape):
                if not finite[idx]:
                    nonfinite.append((i, idx, float(a[idx]), float(numeric[idx])))
            denom = np.abs(a) + np.abs(numeric)
            with np.errstate(invalid="ignore"):
                err = np.where(denom < atol, 0.0, np.abs(a - numeric) / np.maximum(denom, atol))
            err = np.where(finite, err, -1.0)  # non-finite elements are reported separately
            if not finite.any():
                per_input.append(None)
                continue
            j = np.unravel_index(int(err.argmax()), err.shape)
            j = tuple(int(v) for v in j)
            per_input.append(float(err[j]))
            if worst is None or err[j] > worst[0]:
                worst = (float(err[j]), i, j, float(a[j]), float(numeric[j]))
    passed = not nonfinite and (worst is None or worst[0] <= rtol)
    report = GradcheckReport(
        passed=bool(passed),
        worst_error=None if worst is None else worst[0],
        worst_input=None if worst is None else worst[1],
        worst_index=None if worst is None else worst[2],
        analytic=None if worst is None else worst[3],
        numeric=None if worst is None else worst[4],
        eps=eps,
        rtol=rtol,
        errors_per_input=per_input,
        projected=projected,
        evaluations=evaluations,
        nonfinite=nonfinite,
    )
    if raise_exception and not report.passed:
        raise GradcheckError(str(report))
    return report
