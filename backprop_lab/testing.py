"""Check one op's rules the way the engine's own tests check every registered op.

    from backprop_lab.ops import register
    from backprop_lab.testing import check_op

    @register(formula=..., vjp_formula=..., jvp_formula=..., doc=..., flops="elementwise")
    class softplus:
        def forward(xp, x): ...
        def vjp(xp, g, saved, needs): ...
        def jvp(xp, tangents, inputs, out): ...

    check_op(softplus)          # a table: every property, on several random shapes

Three properties, each on inputs of random shapes (float64):

* **VJP vs finite differences**: the backward rule agrees with centered differences
  (:func:`backprop_lab.gradcheck`, relative error at most ``rtol``).
* **JVP vs VJP**: the two rules describe the same Jacobian J, so for random u and v,
  ``u . (J v) == (u J) . v``.
* **forward vs reverse Jacobians**: the full Jacobian built column by column from the JVP
  equals the one built row by row from the VJP.

By default an op's inputs are arrays of one shared random shape with values in
``domain`` (fit for elementwise ops); pass ``make_inputs(rng)`` returning the argument tuple
(or ``(args, params)``) for anything else. Inputs that are not floating arrays (labels, a
condition) are passed through and not differentiated.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import numpy as np

from .gradcheck import gradcheck
from .ops import REGISTRY, Op
from .tensor import Tensor, apply
from .transforms import jacobian, jvp, vjp

__all__ = ["check_op", "OpCheck", "OpCheckRow", "vjp_matches_differences",
           "jvp_matches_vjp", "jacobians_agree"]  # fmt: skip

PROPERTIES = ("VJP vs finite differences", "JVP vs VJP", "forward vs reverse Jacobians")


# --------------------------------------------------------------------------------------
# The three properties, for one op on one set of inputs. Each returns (passed, detail).
# --------------------------------------------------------------------------------------
def _split(args: Sequence[Any], op: Op) -> tuple[list[np.ndarray], Callable[..., list]]:
    """The differentiable inputs, and a function putting them back among the others."""
    diff_pos = [i for i, a in enumerate(args) if i in op.diff_inputs and _is_float(a)]

    def rebuild(*xs: Any) -> list[Any]:
        full = list(args)
        for i, x in zip(diff_pos, xs):
            full[i] = x
        return full

    return [np.asarray(args[i], dtype=np.float64) for i in diff_pos], rebuild


def _is_float(a: Any) -> bool:
    return isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)


def _function(op: Op, args: Sequence[Any], params: dict) -> tuple[list[np.ndarray], Callable]:
    diff, rebuild = _split(args, op)

    def f(*xs: Any) -> Tensor:
        return apply(op, *rebuild(*xs), **params)

    return diff, f


def vjp_matches_differences(op: Op, args: Sequence[Any], params: dict, rtol: float = 1e-6,
                            seed: int = 0) -> tuple[bool, str]:  # fmt: skip
    """The VJP rule against centered finite differences (via bl.gradcheck)."""
    diff, f = _function(op, args, params)
    report = gradcheck(f, *diff, rtol=rtol, seed=seed)
    if report.passed:
        worst = 0.0 if report.worst_error is None else report.worst_error
        return True, f"worst relative error {worst:.1e}"
    return False, str(report)


def jvp_matches_vjp(op: Op, args: Sequence[Any], params: dict, seed: int = 0,
                    rtol: float = 1e-9) -> tuple[bool, str]:  # fmt: skip
    """``u . (J v)`` from the JVP rule equals ``(u J) . v`` from the VJP rule."""
    rng = np.random.default_rng(seed)
    diff, f = _function(op, args, params)
    vs = [rng.standard_normal(a.shape) for a in diff]
    out, jv = jvp(f, diff, vs)
    u = rng.standard_normal(np.shape(out))
    _, pullback = vjp(f, *diff)
    uj = pullback(u)
    lhs = float(np.sum(u * np.asarray(jv)))
    rhs = float(sum(np.sum(np.asarray(g) * v) for g, v in zip(uj, vs)))
    gap = abs(lhs - rhs)
    ok = gap <= rtol * max(abs(lhs), abs(rhs)) + 1e-10
    return ok, f"u.(Jv) = {lhs:.12g}, (uJ).v = {rhs:.12g}" + ("" if ok else f" (gap {gap:.2e})")


def jacobians_agree(op: Op, args: Sequence[Any], params: dict,
                    rtol: float = 1e-10) -> tuple[bool, str]:  # fmt: skip
    """The Jacobian from the JVP rule (columns) equals the one from the VJP rule (rows)."""
    diff, f = _function(op, args, params)
    worst = 0.0
    for k in range(len(diff)):

        def g(x: Any, k: int = k) -> Tensor:
            xs = [Tensor(a) for a in diff]
            xs[k] = x
            return f(*xs)

        jr = np.asarray(jacobian(g, mode="reverse")(diff[k]))
        jf = np.asarray(jacobian(g, mode="forward")(diff[k]))
        if jr.shape != jf.shape:
            return False, f"input {k}: reverse shape {jr.shape}, forward shape {jf.shape}"
        scale = np.maximum(np.abs(jr), np.abs(jf))
        err = np.abs(jr - jf) / np.maximum(scale, 1e-12)
        err = np.where(np.abs(jr - jf) <= 1e-12, 0.0, err)
        if err.size:
            worst = max(worst, float(err.max()))
            if worst > rtol:
                j = np.unravel_index(int(err.argmax()), err.shape)
                return False, (f"input {k}, entry {tuple(int(i) for i in j)}: reverse "
                               f"{jr[j]:.10g}, forward {jf[j]:.10g}")  # fmt: skip
    return True, f"worst relative difference {worst:.1e}"


CHECKS = {
    PROPERTIES[0]: vjp_matches_differences,
    PROPERTIES[1]: jvp_matches_vjp,
    PROPERTIES[2]: jacobians_agree,
}


# --------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------
@dataclass
class OpCheckRow:
    example: int
    shapes: str
    check: str
    passed: bool
    detail: str


@dataclass
class OpCheck:
    """What :func:`check_op` found: one row per example and property."""

    op: str
    rows: list[OpCheckRow] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    def __bool__(self) -> bool:
        return self.passed

    def failures(self) -> list[OpCheckRow]:
        return [r for r in self.rows if not r.passed]

    def summary(self) -> str:
        n = len({r.example for r in self.rows})
        if self.passed:
            return f"{self.op}: all {len(PROPERTIES)} properties hold on {n} random examples"
        bad = sorted({r.check for r in self.failures()})
        return f"{self.op}: FAILED {', '.join(bad)} ({len(self.failures())} of {len(self.rows)})"

    def __str__(self) -> str:
        lines = [self.summary(), f"{'#':>3}  {'inputs':24} {'property':30} {'':6} detail"]
        for r in self.rows:
            mark = "ok" if r.passed else "FAIL"
            detail = r.detail if len(r.detail) <= 200 else r.detail[:197] + "..."
            lines.append(f"{r.example:>3}  {r.shapes[:24]:24} {r.check:30} {mark:6} {detail}")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        color = "#1a7f37" if self.passed else "#cf222e"
        columns = "".join(f"<th>{c}</th>" for c in ("#", "inputs", "property", "", "detail"))
        head = (
            f"<p style='color:{color}'><b>{escape(self.summary())}</b></p><table><tr>{columns}</tr>"
        )
        body = "".join(
            f"<tr><td>{r.example}</td><td>{escape(r.shapes)}</td><td>{escape(r.check)}</td>"
            f"<td>{'&#10003;' if r.passed else '&#10007;'}</td><td>{escape(r.detail)}</td></tr>"
            for r in self.rows
        )
        return head + body + "</table>"


# --------------------------------------------------------------------------------------
# Drawing inputs and running the checks
# --------------------------------------------------------------------------------------
def _arity(op: Op) -> tuple[int, bool, dict]:
    """(number of array inputs, variadic?, default params) from the op's forward."""
    params = list(inspect.signature(op.forward).parameters.values())[1:]
    n, variadic, defaults = 0, False, {}
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            variadic = True
        elif p.default is p.empty and p.kind is not p.KEYWORD_ONLY:
            n += 1
        else:
            defaults[p.name] = p.default
    return n, variadic, defaults


def _draw(op: Op, rng: np.random.Generator, domain: tuple[float, float],
          max_dims: int, max_side: int) -> tuple[tuple, dict]:  # fmt: skip
    n, variadic, _ = _arity(op)
    nd = int(rng.integers(0, max_dims + 1))
    shape = tuple(int(s) for s in rng.integers(1, max_side + 1, nd))
    count = n + (2 if variadic else 0)
    return tuple(rng.uniform(domain[0], domain[1], shape) for _ in range(count)), {}


def _shapes(args: Sequence[Any]) -> str:
    parts = []
    for a in args:
        parts.append(str(tuple(a.shape)) if hasattr(a, "shape") else type(a).__name__)
    return ", ".join(parts)


def check_op(
    op: Op | str,
    make_inputs: Callable[[np.random.Generator], Any] | None = None,
    *,
    examples: int = 5,
    seed: int = 0,
    params: dict | None = None,
    domain: tuple[float, float] = (-2.0, 2.0),
    max_dims: int = 3,
    max_side: int = 4,
    rtol: float = 1e-6,
) -> OpCheck:
    """Run the registry's three property checks on ``op`` (an Op or a registered name)
    for ``examples`` random inputs; returns an :class:`OpCheck` (a table in a notebook,
    ``bool(result)`` tells whether everything held). Errors inside the op's rules are
    reported as failing rows, not raised.

    ``make_inputs(rng)`` returns the op's positional arguments (or ``(args, params)``);
    without it, every input is a float64 array of one random shape with values in
    ``domain``. ``params`` are keyword parameters passed to every call (e.g. ``axis``).
    """
    if isinstance(op, str):
        try:
            op = REGISTRY[op]
        except KeyError:
            raise KeyError(f"no op named {op!r} is registered; register it first, or pass "
                           "the Op that @register returned") from None  # fmt: skip
    result = OpCheck(op.name)
    rng = np.random.default_rng(seed)
    for k in range(examples):
        try:
            drawn = make_inputs(rng) if make_inputs is not None else \
                _draw(op, rng, domain, max_dims, max_side)  # fmt: skip
            if isinstance(drawn, list):
                drawn = tuple(drawn)
            if isinstance(drawn, tuple) and len(drawn) == 2 and isinstance(drawn[1], dict):
                args, extra = drawn
            else:
                args, extra = drawn, {}
            args = tuple(np.asarray(a, dtype=np.float64) if isinstance(a, (list, float)) else a
                         for a in (args if isinstance(args, tuple) else (args,)))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - shown in the table
            result.rows.append(OpCheckRow(k, "-", "drawing inputs", False, f"{exc!r}"))
            continue
        call_params = {**(params or {}), **extra}
        for name, check in CHECKS.items():
            try:
                if name == PROPERTIES[0]:
                    ok, detail = check(op, args, call_params, rtol=rtol, seed=seed + k)
                elif name == PROPERTIES[1]:
                    ok, detail = check(op, args, call_params, seed=seed + k)
                else:
                    ok, detail = check(op, args, call_params)
            except Exception as exc:  # noqa: BLE001 - a broken rule is a failing row
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            result.rows.append(OpCheckRow(k, _shapes(args), name, bool(ok), detail))
    return result
