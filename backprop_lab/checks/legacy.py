"""The first generation of checks: ``check_backward``, ``check_value``, ``check_jacobian``.

Deprecated: notebooks call ``check("<id>", answer)`` (see :mod:`backprop_lab.checks`). These
stay while the grader's fixture still uses them. They run the oracle inside the kernel and
raise :class:`CheckFailure` on any failure; their seed is ``BACKPROP_LAB_SEED`` or the public
seed. They share the project's finite differences (:mod:`backprop_lab.numdiff`) and
``unbroadcast`` (:mod:`backprop_lab.ops`).
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import warnings
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from backprop_lab import numdiff
from backprop_lab.checks.errors import CheckFailure
from backprop_lab.checks.seeding import practice_seed as _seed
from backprop_lab.ops import unbroadcast as _unbroadcast

__all__ = [
    "CheckFailure",
    "check_backward",
    "check_jacobian",
    "check_value",
    "diagnose",
    "numerical_jacobian",
    "numerical_vjp",
    "rng_for",
]

DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-7
EPS = 1e-6
DIGITS = 4  # decimals printed, relative to each array's scale
SHOWN = 6  # entries printed per array


# --------------------------------------------------------------------------- inputs


def rng_for(exercise: str, name: str = "", seed: int | None = None) -> np.random.Generator:
    """The generator a check uses: one stream per (seed, exercise, name)."""
    base = _seed() if seed is None else int(seed)
    salt = zlib.crc32(f"{exercise}/{name}".encode())
    return np.random.default_rng([base % 2**63, salt])


def _draw(rng, shapes, low, high, positive):
    out = []
    for shape in shapes:
        x = rng.uniform(low, high, size=tuple(shape))
        if positive:
            x = np.abs(x) + 0.1
        out.append(x.astype(np.float64))
    return out


def _as_array(x):
    """NumPy array from an array, a scalar or a backprop_lab tensor."""
    if x is None:
        return None
    if hasattr(x, "grad") and hasattr(x, "data") and not isinstance(x, np.ndarray):
        x = x.data
    if hasattr(x, "get") and not isinstance(x, (np.ndarray, dict)):  # CuPy
        x = x.get()
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------- oracles


def numerical_vjp(forward: Callable, inputs: Sequence[np.ndarray], upstream, eps: float = EPS):
    """Vector-Jacobian products of ``forward`` at ``inputs`` by centered differences."""
    return numdiff.numerical_vjp(lambda *xs: _as_array(forward(*xs)), inputs, upstream, eps=eps)


def numerical_jacobian(forward: Callable, x, eps: float = EPS) -> np.ndarray:
    """Jacobian of ``forward`` at ``x``, shape ``(out.size, x.size)``, by centered differences."""
    return numdiff.numerical_jacobian(lambda v: _as_array(forward(v)), x, eps=eps)


# --------------------------------------------------------------------------- formatting


def _scale(a: np.ndarray) -> float:
    m = float(np.max(np.abs(a))) if a.size else 0.0
    if not math.isfinite(m) or m == 0.0:
        return 1.0
    return 10.0 ** math.floor(math.log10(m))


def _q(v: float, scale: float) -> str:
    if not math.isfinite(v):
        return str(v)
    r = round(v / scale, DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{r:+.{DIGITS}f}"


def summarize(a) -> str:
    """A short deterministic description of an array: shape, scale, leading entries, sums."""
    a = _as_array(a)
    s = _scale(a)
    flat = a.reshape(-1)
    head = " ".join(_q(v, s) for v in flat[:SHOWN])
    more = " ..." if flat.size > SHOWN else ""
    exp = int(round(math.log10(s)))
    return (
        f"shape {tuple(a.shape)}, x1e{exp:+d}: [{head}{more}] "
        f"sum {_q(float(np.sum(a)), s)} abs-sum {_q(float(np.sum(np.abs(a))), s)}"
    )


def _short(a) -> str:
    a = np.asarray(a)
    flat = a.reshape(-1)
    body = " ".join(f"{v:+.4g}" for v in flat[:SHOWN])
    return f"[{body}{' ...' if flat.size > SHOWN else ''}]"


def _emit(lines: list[str]) -> None:
    """Print the summary (through the grading guard's captured stdout when one is installed)."""
    text = "\n".join(lines) + "\n"
    guard = sys.modules.get("backprop_lab.grading.guard")
    if guard is not None and guard.installed():
        guard.write(text + guard.stamp())
    else:
        sys.stdout.write(text)


# --------------------------------------------------------------------------- diagnosis


def _close(a, b, rtol, atol) -> bool:
    if a.shape != b.shape:
        return False
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1.0)
    return bool(np.allclose(a, b, rtol=rtol, atol=atol * scale))


def unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray | None:
    """Sum ``g`` down to ``shape`` (the project's ``ops.unbroadcast``); None if impossible."""
    g = np.asarray(g)
    shape = tuple(shape)
    if g.ndim < len(shape):
        return None
    tail = g.shape[g.ndim - len(shape) :]
    if any(s != t and s != 1 for s, t in zip(shape, tail)):
        return None
    return _unbroadcast(np, g, shape)


def diagnose(
    got,
    expected,
    *,
    output=None,
    upstream=None,
    batch: int | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> list[str]:
    """Sentences that explain how ``got`` differs from ``expected``, most likely cause first.

    ``output`` is the forward value and ``upstream`` the upstream gradient (when known); they
    let the diagnosis recognise "returned the forward value" and "forgot the chain rule".
    """
    if got is None:
        return ["Your function returned None. Did you forget the `return` statement?"]
    got = _as_array(got)
    expected = np.asarray(expected, dtype=np.float64)
    out = None if output is None else _as_array(output)
    up = None if upstream is None else np.asarray(upstream, dtype=np.float64)

    def close(a, b):
        return a is not None and b is not None and _close(a, b, rtol, atol)

    notes: list[str] = []
    if got.shape != expected.shape:
        notes.append(f"The shape is {tuple(got.shape)} but should be {tuple(expected.shape)}.")
        if out is not None and out.shape == got.shape and close(got, out):
            notes.append(
                "You returned the forward value, not the gradient. The backward function "
                "must return d(loss)/d(input)."
            )
            return notes
        if got.ndim == 2 and got.T.shape == expected.shape:
            if close(got.T, expected):
                notes.append(
                    "It is the right matrix, transposed: a matrix was not transposed "
                    "(for Y = X @ W, dX = dY @ W.T and dW = X.T @ dY)."
                )
            else:
                notes.append("The axes look swapped: check where a transpose (.T) is needed.")
        reduced = unbroadcast(got, expected.shape)
        if reduced is not None:
            if close(reduced, expected):
                notes.append(
                    "Summing it over the broadcast axes gives the right answer: when an input "
                    "was broadcast in the forward pass, its gradient must be summed back over "
                    "the broadcast dimensions (e.g. db = dY.sum(axis=0))."
                )
            else:
                notes.append(
                    "It looks like a broadcast dimension was not summed back to the input's "
                    "shape (sum over the axes that broadcasting added or stretched)."
                )
        return notes

    if not np.all(np.isfinite(got)):
        bad = int(np.sum(~np.isfinite(got)))
        notes.append(
            f"{bad} entries are NaN or infinite. Look for a division by zero, log of a "
            "non-positive number, or exp overflow."
        )
        return notes
    if close(got, expected):
        return notes
    if close(-got, expected):
        notes.append("Every entry has the opposite sign: there is a sign error.")
        return notes
    if got.ndim == 2 and got.shape[0] == got.shape[1] and close(got.T, expected):
        notes.append(
            "It is the right matrix, transposed: a matrix was not transposed "
            "(for Y = X @ W, dX = dY @ W.T and dW = X.T @ dY)."
        )
        return notes
    if out is not None and out.shape == got.shape and close(got, out):
        notes.append(
            "You returned the forward value, not the gradient. The backward function "
            "must return d(loss)/d(input)."
        )
        return notes
    if up is not None and up.shape == got.shape:
        if close(got, up):
            notes.append(
                "You returned the upstream gradient unchanged: multiply it by the local "
                "derivative (chain rule)."
            )
            return notes
        with np.errstate(all="ignore"):
            if np.all(up != 0) and close(got * up, expected):
                notes.append(
                    "You returned the local derivative but did not multiply by the upstream "
                    "gradient (chain rule: grad = upstream * local derivative)."
                )
                return notes
    denom = float(np.sum(expected * expected))
    if denom > 0:
        c = float(np.sum(got * expected)) / denom
        if abs(c) > 1e-12 and close(got, c * expected):
            notes.append(_factor_note(c, batch))
            return notes
    wrong = ~np.isclose(got, expected, rtol=rtol, atol=atol * max(1.0, np.abs(expected).max()))
    notes.append(
        f"{int(wrong.sum())} of {wrong.size} entries are wrong. Work the first one by hand."
    )
    return notes


def _factor_note(c: float, batch: int | None) -> str:
    """The factor as a fact; a cause is not guessed (the same ratio has many causes)."""

    def near(a, b):
        return abs(a - b) <= 1e-3 * max(abs(b), 1.0)

    if batch and batch > 1 and near(c, batch):
        return f"Every entry is {batch} times too large; {batch} is also the batch size."
    if batch and batch > 1 and near(c, 1.0 / batch):
        return f"Every entry is {batch} times too small; {batch} is also the batch size."
    return f"Every entry is {c:.4g} times the right value. Look for a constant factor."


# --------------------------------------------------------------------------- running students


@contextlib.contextmanager
def _quiet():
    """Swallow what the student's code prints or warns, so the check output stays stable."""
    sink = io.StringIO()
    with (
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
        warnings.catch_warnings(),
        np.errstate(all="ignore"),
    ):
        warnings.simplefilter("ignore")
        yield sink


def _call(fn, args, what, exercise):
    __tracebackhide__ = True
    try:
        with _quiet():
            return fn(*args)
    except NotImplementedError as exc:
        raise CheckFailure(f"Exercise {exercise}: {what} is not implemented yet ({exc}).") from None
    except CheckFailure:
        raise
    except Exception as exc:
        raise CheckFailure(
            f"Exercise {exercise}: {what} raised {type(exc).__name__}: {exc}\n"
            "  Run it on a small input in a cell of its own to see the full traceback."
        ) from exc


def _name(fn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _fail(exercise, fn, case, cases, what, got, expected, notes, inputs_desc):
    lines = [
        f"Exercise {exercise} ({_name(fn)}): case {case} of {cases} failed for {what}.",
        f"  inputs: {inputs_desc}",
    ]
    g = _as_array(got) if got is not None else None
    if g is not None and g.shape == np.shape(expected):
        wrong = np.argwhere(~np.isclose(g, expected, rtol=1e-4, atol=1e-6))
        if len(wrong):
            idx = tuple(int(i) for i in wrong[0])
            lines.append(
                f"  first wrong entry {idx}: expected {float(expected[idx]):+.6g}, "
                f"got {float(g[idx]):+.6g}"
            )
    lines.append(f"  expected: {_short(expected)}")
    lines.append(f"  got:      {_short(g) if g is not None else 'None'}")
    lines += [f"  Diagnosis: {n}" for n in notes] or ["  Diagnosis: values differ."]
    raise CheckFailure("\n".join(lines))


def _split(result, n, exercise, fn):
    if n == 1 and not isinstance(result, (tuple, list)):
        return [result]
    if not isinstance(result, (tuple, list)):
        raise CheckFailure(
            f"Exercise {exercise} ({_name(fn)}): return a tuple with one gradient per input "
            f"({n} in all), got a single {type(result).__name__}."
        )
    if len(result) != n:
        raise CheckFailure(
            f"Exercise {exercise} ({_name(fn)}): returned {len(result)} gradients, expected "
            f"{n} (one per input, in the order of the forward function's arguments)."
        )
    return list(result)


def _default_call(backward, upstream, inputs):
    return backward(upstream, *inputs)


def check_backward(
    backward: Callable,
    forward: Callable,
    input_shapes: Sequence[tuple],
    *,
    exercise: str,
    names: Sequence[str] | None = None,
    seed: int | None = None,
    cases: int = 2,
    low: float = -2.0,
    high: float = 2.0,
    positive: bool = False,
    call: Callable | None = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
):
    """Check a student's backward rule against centered finite differences of ``forward``.

    ``forward(*inputs)`` computes the op (NumPy arrays in, array out); ``backward(upstream,
    *inputs)`` must return the gradient of ``sum(forward(*inputs) * upstream)`` with respect
    to each input: one array for one input, else a tuple in argument order. ``call(backward,
    upstream, inputs)`` adapts other signatures (e.g. CS231n's ``backward(dout, cache)``).

    Inputs are drawn uniformly from ``[low, high)`` (``positive=True``: from ``[0.1, ...)``)
    with :func:`rng_for`. Prints a deterministic summary of the student's gradients or raises
    :class:`CheckFailure` with a diagnosis. Returns None (a value would be displayed).
    """
    __tracebackhide__ = True
    call = call or _default_call
    names = list(names) if names else [f"input {i}" for i in range(len(input_shapes))]
    if len(names) == 1 and names[0] == "input 0":
        names = ["x"]
    rng = rng_for(exercise, _name(backward), seed)
    lines = [f"Exercise {exercise}: {_name(backward)}"]
    grads = None
    for case in range(1, cases + 1):
        inputs = _draw(rng, input_shapes, low, high, positive)
        with _quiet():
            out = _as_array(forward(*[x.copy() for x in inputs]))
        upstream = rng.uniform(-1.0, 1.0, size=out.shape)
        batch = inputs[0].shape[0] if inputs[0].ndim >= 1 else None
        expected = numerical_vjp(forward, inputs, upstream)
        raw = _call(
            call,
            (backward, upstream.copy(), [x.copy() for x in inputs]),
            f"{_name(backward)}",
            exercise,
        )
        grads = _split(raw, len(inputs), exercise, backward)
        desc = ", ".join(f"{n} {tuple(x.shape)}" for n, x in zip(names, inputs))
        for name, g, e in zip(names, grads, expected):
            garr = None if g is None else _as_array(g)
            if garr is None or not _close(garr, e, rtol, atol):
                notes = diagnose(g, e, output=out, upstream=upstream, batch=batch)
                _fail(
                    exercise,
                    backward,
                    case,
                    cases,
                    f"the gradient w.r.t. {name}",
                    g,
                    e,
                    notes,
                    desc,
                )
            lines.append(f"  case {case} d{name}: {summarize(garr)}")
    lines.append(f"  OK: all {cases} cases match finite differences.")
    _emit(lines)


def check_value(
    student_fn: Callable,
    reference_fn: Callable,
    input_shapes: Sequence[tuple],
    *,
    exercise: str,
    seed: int | None = None,
    cases: int = 2,
    low: float = -2.0,
    high: float = 2.0,
    positive: bool = False,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    batch: int | None = None,
):
    """Check ``student_fn(*inputs)`` against ``reference_fn(*inputs)`` on seeded inputs.

    The reference must not be the exercise's answer in disguise (the check cell is public):
    use the library, a slow obviously-correct version, or a property. Either function may
    return one array or a tuple of arrays. Prints the student's values or raises.
    """
    __tracebackhide__ = True
    rng = rng_for(exercise, _name(student_fn), seed)
    lines = [f"Exercise {exercise}: {_name(student_fn)}"]
    got = None
    for case in range(1, cases + 1):
        inputs = _draw(rng, input_shapes, low, high, positive)
        with _quiet():
            ref = reference_fn(*[x.copy() for x in inputs])
        single = not isinstance(ref, (tuple, list))
        refs = [ref] if single else list(ref)
        raw = _call(student_fn, [x.copy() for x in inputs], _name(student_fn), exercise)
        got = _split(raw, len(refs), exercise, student_fn) if not single else [raw]
        desc = ", ".join(f"input {i} {tuple(x.shape)}" for i, x in enumerate(inputs))
        b = batch if batch is not None else (inputs[0].shape[0] if inputs[0].ndim else None)
        for k, (g, r) in enumerate(zip(got, refs)):
            r = _as_array(r)
            garr = None if g is None else _as_array(g)
            what = "the result" if single else f"result {k}"
            if garr is None or not _close(garr, r, rtol, atol):
                _fail(exercise, student_fn, case, cases, what, g, r, diagnose(g, r, batch=b), desc)
            lines.append(f"  case {case} {what}: {summarize(garr)}")
    lines.append(f"  OK: all {cases} cases match.")
    _emit(lines)


def check_jacobian(
    jacobian: Callable,
    forward: Callable,
    input_shape: tuple,
    *,
    exercise: str,
    seed: int | None = None,
    cases: int = 2,
    low: float = -2.0,
    high: float = 2.0,
    positive: bool = False,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
):
    """Check ``jacobian(x)`` (shape ``(out.size, x.size)``) against finite differences."""
    __tracebackhide__ = True
    rng = rng_for(exercise, _name(jacobian), seed)
    lines = [f"Exercise {exercise}: {_name(jacobian)}"]
    got = None
    for case in range(1, cases + 1):
        (x,) = _draw(rng, [input_shape], low, high, positive)
        with _quiet():
            out = _as_array(forward(x.copy()))
        expected = numerical_jacobian(forward, x)
        got = _call(jacobian, [x.copy()], _name(jacobian), exercise)
        garr = None if got is None else _as_array(got)
        if garr is not None and garr.shape != expected.shape and garr.size == expected.size:
            if garr.shape == tuple(out.shape) + tuple(x.shape):
                garr = garr.reshape(expected.shape)
        if garr is None or not _close(garr, expected, rtol, atol):
            flat_out = out.reshape(-1)
            notes = diagnose(garr, expected, output=None)
            if (
                garr is not None
                and garr.shape == flat_out.shape
                and _close(garr, flat_out, 1e-4, 1e-6)
            ):
                notes = ["You returned the forward value, not the Jacobian."]
            _fail(
                exercise,
                jacobian,
                case,
                cases,
                "the Jacobian (rows: outputs, columns: inputs)",
                garr,
                expected,
                notes,
                f"x {tuple(x.shape)}",
            )
        lines.append(f"  case {case} J: {summarize(garr)}")
    lines.append(f"  OK: all {cases} cases match finite differences.")
    _emit(lines)
