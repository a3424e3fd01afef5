"""Kernel side: run an answer on a payload's cases and record what happened, as data.

:func:`run` is the same in practice and grading mode. It calls the answer through the
payload's driver on fresh copies of each case's arguments, and returns ``(arrays, record)``:
the outputs as float64 arrays and a JSON-able record (status per case, the answer's error
with the line of *its* code that failed and the operand shapes there, inputs it changed in
place, package functions it called that compute the answer, what it printed, timings). It
never sees an expected value, never judges, and never imports the oracle.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import gc
import importlib
import inspect
import io
import linecache
import os
import signal
import sys
import sysconfig
import threading
import time
import types
import warnings
from typing import Any

import numpy as np

from backprop_lab.checks import record as rec
from backprop_lab.checks.drivers import get_driver, get_forward

MAX_ENTRIES = 5_000_000  # per returned array
MAX_PRINTED = 2000
COST_FLOOR_S = 0.002  # a forward pass counts as at least this long (timer noise)
COST_REPEATS = 3
# Timings are CPU time of this process, not wall-clock time: a grader running several kernels
# per core slows every clock on the wall, but not the CPU work one answer does.
_clock = time.process_time


# --------------------------------------------------------------------------- whose code


def _library_roots() -> tuple[str, ...]:
    roots = {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}  # backprop_lab/
    roots.add(os.path.dirname(os.path.abspath(np.__file__)))
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(os.path.abspath(path))
    return tuple(sorted(roots))


_ROOTS = _library_roots()


def _is_theirs(filename: str) -> bool:
    """True for code the student wrote (a notebook cell, their own file)."""
    if filename.startswith("<frozen") or filename in ("<string>",):
        return False
    if filename.startswith("<"):
        return True
    path = os.path.abspath(filename)
    return not any(path == r or path.startswith(r + os.sep) for r in _ROOTS)


# --------------------------------------------------------------------------- errors


_SIMPLE = (
    ast.Name,
    ast.Attribute,
    ast.Load,
    ast.BinOp,
    ast.UnaryOp,
    ast.Constant,
    ast.Subscript,
    ast.Slice,
    ast.Tuple,
    ast.operator,
    ast.unaryop,
)


def _evaluable(node: ast.AST) -> bool:
    return all(isinstance(n, _SIMPLE) for n in ast.walk(node))


def _shape_of(node: ast.AST, frame: types.FrameType) -> tuple[int, ...] | None:
    if not _evaluable(node):
        return None
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            value = eval(  # noqa: S307 - the student's own names, in the student's frame
                compile(ast.Expression(node), "<operand>", "eval"), frame.f_globals, frame.f_locals
            )
    except Exception:
        return None
    shape = getattr(value, "shape", None)
    if shape is None and isinstance(value, (int, float, np.number)):
        return ()
    try:
        return tuple(int(s) for s in shape) if shape is not None else None
    except TypeError:
        return None


def _matmul_fits(a: tuple, b: tuple) -> bool:
    if not a or not b:
        return False
    inner_b = b[0] if len(b) == 1 else b[-2]
    return a[-1] == inner_b


def _broadcast_fits(a: tuple, b: tuple) -> bool:
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


def _operands(line: str, frame: types.FrameType) -> list[dict]:
    """The operand pairs on ``line`` whose shapes do not fit, innermost first."""
    try:
        tree = ast.parse(line.strip())
    except SyntaxError:
        try:  # a line such as "return a @ b, c" parses; "x = (a @" does not
            tree = ast.parse(line.strip().rstrip(",(") + ")")
        except SyntaxError:
            return []
    found = []
    pairs = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp):
            pairs.append((node, node.left, node.right, type(node.op).__name__))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("dot", "matmul")
            and len(node.args) == 2
        ):
            pairs.append((node, node.args[0], node.args[1], "MatMult"))
    for _node, left, right, op in reversed(pairs):
        a, b = _shape_of(left, frame), _shape_of(right, frame)
        if a is None or b is None:
            continue
        fits = _matmul_fits(a, b) if op == "MatMult" else _broadcast_fits(a, b)
        if not fits:
            found.append(
                {
                    "op": "@" if op == "MatMult" else op,
                    "left": ast.unparse(left)[:80],
                    "left_shape": list(a),
                    "right": ast.unparse(right)[:80],
                    "right_shape": list(b),
                }
            )
    return found[:2]


def describe_error(exc: BaseException) -> dict:
    """The error as data: type, message, and the deepest line of the student's own code."""
    try:
        message = str(exc)[:600]
    except Exception:  # an exception class of the student's whose __str__ fails
        message = "(its message could not be shown)"
    info: dict[str, Any] = {"type": str(type(exc).__name__)[:80], "message": message}
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    theirs = [(f, n) for f, n in frames if _is_theirs(f.f_code.co_filename)]
    if theirs:
        frame, lineno = theirs[-1]
        line = linecache.getline(frame.f_code.co_filename, lineno, frame.f_globals).strip()
        info.update(
            function=frame.f_code.co_name,
            lineno=lineno,
            line=line[:200],
            raised_in_their_code=frames[-1][0] is frame,
        )
        if line and isinstance(exc, (ValueError, TypeError)):
            ops = _operands(line, frame)
            if ops:
                info["operands"] = ops
    return info


# --------------------------------------------------------------------------- forbidden calls


def _resolve(name: str) -> Any:
    if name.startswith("backprop_lab.checks.oracle") and name.split(".")[2:3] == ["oracle"]:
        if "backprop_lab.checks.oracle" not in sys.modules:  # never import it from here
            raise ImportError(name)
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


def _codes(obj: Any, depth: int = 0) -> list[types.CodeType]:
    if depth > 3:
        return []
    if isinstance(obj, types.FunctionType):
        return [obj.__code__]
    if isinstance(obj, (types.MethodType, staticmethod, classmethod)):
        return _codes(obj.__func__, depth + 1)
    if isinstance(obj, property):
        return _codes(obj.fget, depth + 1)
    if isinstance(obj, types.ModuleType):
        return [
            c
            for v in vars(obj).values()
            if isinstance(v, types.FunctionType) and v.__module__ == obj.__name__
            for c in _codes(v, depth + 1)
        ]
    if isinstance(obj, type):
        return [c for v in vars(obj).values() for c in _codes(v, depth + 1)]
    if isinstance(obj, dict):
        return [c for v in obj.values() for c in _codes(v, depth + 1)]
    if isinstance(obj, (list, tuple)):
        return [c for v in obj for c in _codes(v, depth + 1)]
    if callable(getattr(obj, "vjp", None)):  # a registry entry of backprop_lab.ops
        return _codes(obj.vjp, depth + 1) + _codes(getattr(obj, "jvp", None), depth + 1)
    return []


class _Watch:
    """Record calls into the named package functions while the answer runs."""

    def __init__(self, names: list[str]):
        self.codes: dict[types.CodeType, str] = {}
        for name in names:
            try:
                for code in _codes(_resolve(name)):
                    self.codes[code] = name
            except Exception:
                continue
        self.called: set[str] = set()
        self.intact = True
        self._hook = self._profile

    def _profile(self, frame, event, arg):
        if event == "call":
            name = self.codes.get(frame.f_code)
            if name is not None:
                self.called.add(name)

    def __enter__(self):
        if self.codes:
            self._previous = sys.getprofile()
            sys.setprofile(self._hook)
        return self

    def __exit__(self, *exc):
        if self.codes:
            self.intact = sys.getprofile() is self._hook
            sys.setprofile(self._previous)
        return False


# --------------------------------------------------------------------------- calling


@contextlib.contextmanager
def _captured():
    sink = io.StringIO()
    with (
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
        warnings.catch_warnings(),
        np.errstate(all="ignore"),
    ):
        warnings.simplefilter("ignore")
        yield sink


def _leaves(value: Any, name: str, out: list) -> None:
    if isinstance(value, np.ndarray):
        out.append((name, value))
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            _leaves(v, f"{name}[{i}]", out)


def _as_array(value: Any) -> tuple[np.ndarray | None, str | None]:
    """A float64 copy of a returned value, or (None, what is wrong with it)."""
    if value is None:
        return None, "None"
    mod = type(value).__module__ or ""
    if mod.startswith("backprop_lab") and hasattr(value, "data"):
        value = value.data
    if type(value).__module__.startswith("cupy") and hasattr(value, "get"):
        value = value.get()
    try:
        if np.iscomplexobj(value):
            return None, "complex numbers"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            arr = np.array(value, dtype=np.float64, copy=True, subok=False)
    except Exception:
        return None, f"a {type(value).__name__}, not an array of numbers"
    if arr.size > MAX_ENTRIES:
        return None, f"an array of {arr.size} entries, far more than asked for"
    return arr.view(np.ndarray), None


def _split(result: Any, outputs: list[str]) -> tuple[list[Any] | None, str | None]:
    n = len(outputs)
    if n == 1:
        if isinstance(result, tuple):
            if len(result) == 1:
                return [result[0]], None
            return None, f"a tuple of {len(result)} values"
        return [result], None
    if not isinstance(result, (tuple, list)):
        what = "None" if result is None else f"a single {type(result).__name__}"
        return None, what
    if len(result) != n:
        return None, f"{len(result)} values"
    return list(result), None


def _name(obj: Any) -> str:
    try:
        name = getattr(obj, "__name__", None)
    except Exception:
        name = None
    return name[:80] if isinstance(name, str) else type(obj).__name__


def _call_once(call, answers, args, arg_names, watch_names):
    """One call of the answer on copies of ``args``: (result or None, case record)."""
    fresh = copy.deepcopy(args)
    before = []
    for name, value in zip(arg_names, fresh):
        _leaves(value, name, before)
    pristine = [(n, a.copy()) for n, a in before]
    case: dict[str, Any] = {"status": "ok"}
    watch = _Watch(watch_names)
    result = None
    start = time.perf_counter()
    with _captured() as sink:
        try:
            with watch:
                result = call(answers, tuple(fresh))
        except NotImplementedError as exc:
            case["status"] = "not_implemented"
            case["error"] = {"type": "NotImplementedError", "message": str(exc)[:300]}
        except (Exception, SystemExit) as exc:
            case["status"] = "error"
            case["error"] = describe_error(exc)
    case["seconds"] = time.perf_counter() - start
    printed = sink.getvalue()
    if printed:
        case["printed"] = printed[:MAX_PRINTED]
    changed = [
        n
        for (n, now), (_, old) in zip(before, pristine)
        if now.shape != old.shape or not np.array_equal(now, old, equal_nan=True)
    ]
    if changed:
        case["mutated"] = changed
    if watch.called:
        case["called"] = sorted(watch.called)
    if not watch.intact:
        case["profile_removed"] = True
    return result, case


def _outputs(result, outputs, prefix, arrays, case):
    values, problem = _split(result, outputs)
    if problem is not None:
        case["status"] = "bad_return"
        case["returned"] = problem
        return
    problems, shapes = {}, {}
    for name, value in zip(outputs, values):
        arr, why = _as_array(value)
        if why is not None:
            problems[name] = why
        else:
            arrays[f"{prefix}/{name}"] = arr
            shapes[name] = list(arr.shape)
    case["shapes"] = shapes
    if problems:
        case["problems"] = problems


class _TimeUp(BaseException):
    pass


@contextlib.contextmanager
def _alarm(cpu_seconds: float, wall_seconds: float):
    """Interrupt the block after ``cpu_seconds`` of this process's CPU time, or after
    ``wall_seconds`` on the wall as a backstop (main thread on POSIX); yields whether armed."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield False
        return

    def ring(signum, frame):
        raise _TimeUp

    timers = ((signal.SIGPROF, signal.ITIMER_PROF, cpu_seconds),
              (signal.SIGALRM, signal.ITIMER_REAL, wall_seconds))  # fmt: skip
    previous = [(sig, signal.signal(sig, ring)) for sig, _, _ in timers]
    for _, which, seconds in timers:
        signal.setitimer(which, seconds)
    try:
        yield True
    finally:
        for _, which, _ in timers:
            signal.setitimer(which, 0)
        for sig, handler in previous:
            signal.signal(sig, handler)


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            start = _clock()
            fn()
            best = min(best, _clock() - start)
    finally:
        if enabled:
            gc.enable()
    return best


def _one_blas_thread():
    """BLAS on one thread while timing: idle BLAS threads spin, and their spinning would be
    counted as the answer's CPU time on a busy machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is in requirements.txt
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _cost(payload, call, answers, arrays) -> dict:
    with _one_blas_thread():
        return _measure_cost(payload, call, answers, arrays)


def _measure_cost(payload, call, answers, arrays) -> dict:
    cost = payload["cost"]
    forward = get_forward(cost["forward"])
    fargs = cost["forward_args"]
    with _captured():
        t_forward = _best_time(lambda: forward(*fargs), 5)
    reference = max(t_forward, COST_FLOOR_S)
    limit = cost["multiple"] * reference
    alarm_s = 3.0 * limit + 0.2  # CPU time; the wall-clock backstop is far more generous
    out: dict[str, Any] = {"forward_s": t_forward, "reference_s": reference, "alarm_s": alarm_s}
    best = float("inf")
    runs = 0
    for _ in range(COST_REPEATS):
        fresh = copy.deepcopy(cost["args"])
        result = None
        armed = False
        enabled = gc.isenabled()
        gc.disable()
        start = _clock()
        try:
            with _captured(), _alarm(alarm_s, 10 * alarm_s + 5.0) as armed:
                result = call(answers, tuple(fresh))
        except _TimeUp:
            out["interrupted"] = True
        except (Exception, SystemExit) as exc:
            out["status"] = "error"
            out["error"] = describe_error(exc)
        finally:
            elapsed = _clock() - start
            if enabled:
                gc.enable()
        out["alarm"] = bool(armed)
        runs += 1
        best = min(best, elapsed)
        if out.get("interrupted") or out.get("status") == "error":
            break
        if runs == 1:
            case: dict[str, Any] = {}
            try:
                _outputs(result, payload["outputs"], "cost", arrays, case)
            except Exception:
                case["returned"] = "an object that cannot be read as arrays"
            out.update({k: v for k, v in case.items() if k in ("returned", "problems")})
            if "returned" in case:
                break
        if best <= limit:
            break  # within the bound: no need to measure again
    out["answer_s"] = best
    out["runs"] = runs
    out.setdefault("status", "ok")
    return out


def run(payload: dict, answers: tuple) -> tuple[dict[str, np.ndarray], dict]:
    """Run ``answers`` on every case of ``payload``; returns ``(arrays, record)``."""
    outputs = list(payload["outputs"])
    arg_names = list(payload["arg_names"])
    watch_names = list(payload.get("watch", ()))
    record: dict[str, Any] = {
        "format": rec.FORMAT,
        "exercise": payload["exercise"],
        "answer": _name(answers[0]) if answers else None,
        "status": "ran",
        "cases": [],
        "cost": None,
    }
    arrays: dict[str, np.ndarray] = {}
    n_answers = int(payload.get("answers", 1))
    if len(answers) != n_answers:
        record["status"] = "wrong_count"
        record["given"] = len(answers)
        return arrays, record
    if not all(callable(a) for a in answers):
        record["status"] = "not_callable"
        record["given_type"] = next(type(a).__name__ for a in answers if not callable(a))
        return arrays, record
    try:
        sig = inspect.signature(answers[0])
        record["parameters"] = [
            p.name
            for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            and p.default is inspect.Parameter.empty
        ]
    except (TypeError, ValueError):
        pass
    call = get_driver(payload.get("driver", "call"))
    start = time.perf_counter()
    ok = True
    for k, case_args in enumerate(payload["cases"]):
        result, case = _call_once(call, answers, case_args["args"], arg_names, watch_names)
        if case["status"] == "ok":
            try:
                _outputs(result, outputs, f"case{k}", arrays, case)
            except Exception:  # a returned object that breaks when looked at
                case["status"] = "bad_return"
                case["returned"] = "an object that cannot be read as arrays"
        record["cases"].append(case)
        ok = ok and case["status"] == "ok" and not case.get("problems")
        if case["status"] in ("not_implemented", "error"):
            break  # the first error says it all; later cases would repeat it
    if ok and payload.get("cost"):
        record["cost"] = _cost(payload, call, answers, arrays)
    record["total_s"] = time.perf_counter() - start
    return arrays, rec.jsonable(record)
