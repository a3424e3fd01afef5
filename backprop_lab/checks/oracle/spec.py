"""Exercise specs: how to draw an exercise's cases, what is expected, how wrong answers are
diagnosed, and what an answer may cost. Trusted side only.

Three kinds cover chapters 1-5:

* :class:`BackwardSpec`: the answer is a backward rule ``answer(upstream, *inputs)`` (or
  ``arguments(case)`` for another signature) returning one gradient per input; expected by
  centered finite differences of ``forward`` (:func:`backprop_lab.numdiff.numerical_vjp`).
* :class:`ValueSpec`: the answer computes values; expected by ``reference(case)`` (the
  engine, a slow obviously-correct version, or a property), never a copy of the answer.
* :class:`JacobianSpec`: the answer returns a Jacobian ``(out.size, x.size)``; expected by
  :func:`backprop_lab.numdiff.numerical_jacobian`.

A :class:`Bug` is one hypothesis about a wrong answer: the output of the buggy variant on a
case (``variant``), or a test on what the answer returned (``predicate``), and the sentence
the student reads when it matches. A :class:`Cost` bounds the answer's time by a multiple of
one forward pass on a large input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backprop_lab import numdiff
from backprop_lab.checks import drivers
from backprop_lab.checks.seeding import rng_for

__all__ = [
    "Bug",
    "Cost",
    "Case",
    "Spec",
    "BackwardSpec",
    "ValueSpec",
    "JacobianSpec",
    "ENGINE_GRADIENTS",
    "FINITE_DIFFERENCES",
]

#: Package functions that compute any gradient for the caller: no backward-rule answer may
#: call them (the grader flags a call; the check fails it).
ENGINE_GRADIENTS = (
    "backprop_lab.transforms.grad",
    "backprop_lab.transforms.value_and_grad",
    "backprop_lab.transforms.vjp",
    "backprop_lab.transforms.jvp",
    "backprop_lab.transforms.jacobian",
    "backprop_lab.tensor.Tensor.backward",
    "backprop_lab.tensor.backward",
    "backprop_lab.tensor.backpropagate",
    "backprop_lab.compile.CompiledFunction",  # replays recorded VJP calls
    "backprop_lab.gradcheck.gradcheck",
    "backprop_lab.ops.REGISTRY",  # every op's vjp and jvp rule
    "backprop_lab.ops.unbroadcast",
    "backprop_lab.checks.legacy.unbroadcast",
    "backprop_lab.checks.oracle",  # in practice mode; grading kernels cannot import it
)
#: Package functions that compute finite differences.
FINITE_DIFFERENCES = (
    "backprop_lab.numdiff",
    "backprop_lab.checks.legacy.numerical_vjp",
    "backprop_lab.checks.legacy.numerical_jacobian",
    "backprop_lab.explore.what_backprop_computes.finite_difference_gradient",
)


@dataclass(frozen=True)
class Bug:
    """A named planted bug and the sentence that diagnoses it.

    ``variant(case)`` returns what the buggy answer returns on ``case``: one array, or a
    tuple aligned with the spec's outputs where ``None`` means "the same as the right
    answer". It matches an output when the student's output is within tolerance of it on
    every case (``rtol``/``atol`` override the spec's). ``predicate(case, got)`` (``got``: a
    dict output name -> array or None) is the alternative, for bugs no single variant
    describes; it must hold on every case and applies to ``outputs`` (default: all).
    """

    name: str
    message: str
    variant: Callable[[Case], Any] | None = None
    predicate: Callable[[Case, dict], bool] | None = None
    outputs: tuple[str, ...] | None = None
    rtol: float | None = None
    atol: float | None = None

    def __post_init__(self):
        if (self.variant is None) == (self.predicate is None):
            raise ValueError(f"bug {self.name!r}: give exactly one of variant= and predicate=")


@dataclass(frozen=True)
class Cost:
    """The answer must run within ``multiple`` x one forward pass on inputs of ``inputs``
    shapes (drawn like the cases); outputs there are checked by directional derivatives."""

    multiple: float
    inputs: Mapping[str, tuple[int, ...]]
    #: ``draw(rng) -> {name: array}`` for the large input (default: like the cases, uniform);
    #: give one when the forward pass has kinks, so directional derivatives avoid them.
    draw: Callable[[np.random.Generator], dict] | None = None


class Case:
    """One drawn case: its inputs by name (``case.w``), the upstream gradient, the
    arguments the answer receives, and (after :meth:`Spec.expected`) the expected outputs."""

    def __init__(self, index: int, inputs: dict[str, np.ndarray], upstream=None, extra=None):
        self.index = index
        self.inputs = dict(inputs)
        self.upstream = upstream
        self.extra = dict(extra or {})
        self.args: tuple = ()
        self.expected: tuple[np.ndarray, ...] = ()
        self.forward_value: np.ndarray | None = None

    def __getattr__(self, name: str) -> Any:
        inputs = self.__dict__.get("inputs", {})
        if name in inputs:
            return inputs[name]
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(name)

    def output(self, spec: Spec, name: str) -> np.ndarray:
        return self.expected[spec.outputs.index(name)]


def _uniform(rng, shapes: Mapping[str, tuple], low: float, high: float, positive: bool):
    out = {}
    for name, shape in shapes.items():
        x = rng.uniform(low, high, size=tuple(shape))
        if positive:
            x = np.abs(x) + 0.1
        out[name] = np.asarray(x, dtype=np.float64)
    return out


@dataclass
class Spec:
    """What every exercise spec has. Subclasses say how cases are drawn and checked."""

    id: str
    title: str
    inputs: Mapping[str, tuple[int, ...]]
    outputs: tuple[str, ...] = ()
    cases: int = 2
    low: float = -2.0
    high: float = 2.0
    positive: bool = False
    rtol: float = 1e-5
    atol: float = 1e-7
    bugs: Sequence[Bug] = ()
    cost: Cost | None = None
    forbidden: Sequence[str] = ()
    backward_order: Sequence[str] | None = None
    driver: str = "call"
    answers: int = 1
    draw: Callable[[np.random.Generator, int], dict] | None = None
    signature: str = ""
    kind: str = field(default="value", init=False)

    # --- what subclasses provide -------------------------------------------------------
    def arg_names(self) -> list[str]:
        return list(self.inputs)

    def make_case(self, rng: np.random.Generator, index: int, shapes=None) -> Case:
        if self.draw is not None and shapes is None:
            inputs = self.draw(rng, index)
        elif shapes is not None and self.cost is not None and self.cost.draw is not None:
            inputs = self.cost.draw(rng)
        else:
            inputs = _uniform(rng, shapes or self.inputs, self.low, self.high, self.positive)
        case = Case(index, inputs)
        case.args = tuple(case.inputs[n] for n in self.inputs)
        return case

    def compute_expected(self, case: Case) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def large_case_ok(self, case: Case, got: dict[str, np.ndarray]) -> bool:
        """True when the outputs on the cost check's large input are right (a property)."""
        return True

    def shape_words(self, output: str) -> str:
        return ""

    # --- shared machinery -------------------------------------------------------------
    def order(self) -> list[str]:
        return list(self.backward_order or self.outputs)

    def call_text(self) -> str:
        return self.signature or f"{self.title}({', '.join(self.arg_names())})"

    def build_cases(self, seed: int) -> list[Case]:
        rng = rng_for(self.id, seed)
        out = []
        for k in range(self.cases):
            case = self.make_case(rng, k)
            case.expected = tuple(
                np.asarray(e, dtype=np.float64) for e in self.compute_expected(case)
            )
            out.append(case)
        return out

    def build_large(self, seed: int) -> Case | None:
        if self.cost is None:
            return None
        rng = rng_for(self.id, seed, "cost")
        return self.make_case(rng, -1, shapes=self.cost.inputs)

    def validate(self) -> None:
        if not self.outputs:
            raise ValueError(f"spec {self.id}: no outputs")
        if self.backward_order and sorted(self.backward_order) != sorted(self.outputs):
            raise ValueError(f"spec {self.id}: backward_order must list every output once")
        for bug in self.bugs:
            if bug.outputs and not set(bug.outputs) <= set(self.outputs):
                raise ValueError(f"spec {self.id}: bug {bug.name!r} names an unknown output")
        if self.cost is not None and self.kind != "backward":
            raise ValueError(f"spec {self.id}: a cost check needs a BackwardSpec")


@dataclass
class BackwardSpec(Spec):
    """A backward rule: ``answer(upstream, *inputs)`` returns one gradient per input.

    ``forward`` must be a registered forward pass (``drivers/<topic>.py``,
    ``@forward_pass``). ``arguments(case)`` replaces the default argument tuple
    ``(upstream, *inputs)``; ``expected(case)`` replaces finite differences (use it only for
    what finite differences cannot see, e.g. a tie rule), ``case.fd()`` still gives them.
    """

    forward: Callable[..., Any] | None = None
    arguments: Callable[[Case], tuple] | None = None
    expected: Callable[[Case], tuple] | None = None
    upstream_range: tuple[float, float] = (-1.0, 1.0)
    arg_labels: Sequence[str] | None = None

    def __post_init__(self):
        self.kind = "backward"
        if self.forward is None:
            raise ValueError(f"spec {self.id}: a BackwardSpec needs forward=")
        if not self.outputs:
            self.outputs = tuple(f"d{n}" for n in self.inputs)
        self.validate()

    def arg_names(self) -> list[str]:
        if self.arg_labels:
            return list(self.arg_labels)
        return ["upstream", *self.inputs]

    def make_case(self, rng, index, shapes=None):
        case = super().make_case(rng, index, shapes)
        xs = [case.inputs[n] for n in self.inputs]
        with np.errstate(all="ignore"):
            out = np.asarray(self.forward(*[x.copy() for x in xs]), dtype=np.float64)
        case.forward_value = out
        lo, hi = self.upstream_range
        case.upstream = np.asarray(rng.uniform(lo, hi, size=out.shape), dtype=np.float64)
        case.extra["fd"] = lambda: tuple(numdiff.numerical_vjp(self.forward, xs, case.upstream))
        case.args = tuple(self.arguments(case)) if self.arguments else (case.upstream, *xs)
        return case

    def compute_expected(self, case):
        if self.expected is not None:
            return tuple(self.expected(case))
        return case.fd()

    def shape_words(self, output: str) -> str:
        k = self.outputs.index(output)
        names = list(self.inputs)
        return f"the shape of {names[k]}" if k < len(names) else ""

    def large_case_ok(self, case, got):
        """Directional derivatives: for random directions v, sum_i <got_i, v_i> must match
        d/dt sum(upstream * forward(inputs + t v)) at t = 0 (two forward passes each)."""
        xs = [case.inputs[n] for n in self.inputs]
        if any(name not in got for name in self.outputs):
            return False
        rng = np.random.default_rng(len(xs) + sum(x.size for x in xs))
        for _ in range(2):
            vs = [rng.choice([-1.0, 1.0], size=x.shape) for x in xs]

            def along(t, vs=vs):
                moved = [x + t * v for x, v in zip(xs, vs)]
                return float(np.sum(np.asarray(self.forward(*moved)) * case.upstream))

            want = numdiff.derivative(along, 0.0)
            have = float(sum(np.sum(got[o] * v) for o, v in zip(self.outputs, vs)))
            scale = sum(float(np.sum(np.abs(got[o] * v))) for o, v in zip(self.outputs, vs))
            if not np.isfinite(have) or abs(have - want) > 1e-6 * max(scale, 1.0):
                return False
        return True

    def cost_payload(self, large: Case) -> dict:
        return {
            "args": large.args,
            "forward": drivers.forward_name(self.forward),
            "forward_args": tuple(large.inputs[n] for n in self.inputs),
            "multiple": float(self.cost.multiple),
        }


@dataclass
class ValueSpec(Spec):
    """The answer computes values: ``answer(*args)`` (args: ``arguments(case)`` or the
    inputs in order) against ``reference(case)``, one array or a tuple."""

    reference: Callable[[Case], Any] | None = None
    arguments: Callable[[Case], tuple] | None = None

    def __post_init__(self):
        self.kind = "value"
        if self.reference is None:
            raise ValueError(f"spec {self.id}: a ValueSpec needs reference=")
        if not self.outputs:
            self.outputs = ("result",)
        self.validate()

    def make_case(self, rng, index, shapes=None):
        case = super().make_case(rng, index, shapes)
        if self.arguments:
            case.args = tuple(self.arguments(case))
        return case

    def compute_expected(self, case):
        ref = self.reference(case)
        return tuple(ref) if isinstance(ref, (tuple, list)) else (ref,)

    def shape_words(self, output):
        return ""


@dataclass
class JacobianSpec(Spec):
    """The answer returns the Jacobian of ``forward`` at the one input, rows = outputs."""

    forward: Callable[..., Any] | None = None

    def __post_init__(self):
        self.kind = "jacobian"
        if self.forward is None or len(self.inputs) != 1:
            raise ValueError(f"spec {self.id}: a JacobianSpec needs forward= and one input")
        if not self.outputs:
            self.outputs = ("J",)
        self.validate()

    def make_case(self, rng, index, shapes=None):
        case = super().make_case(rng, index, shapes)
        (x,) = case.args
        case.forward_value = np.asarray(self.forward(x.copy()), dtype=np.float64)
        return case

    def compute_expected(self, case):
        (x,) = case.args
        return (numdiff.numerical_jacobian(self.forward, x),)

    def shape_words(self, output):
        return "(outputs, inputs)"
