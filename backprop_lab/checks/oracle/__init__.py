"""The trusted side of the exercise checks: specs by exercise id, and the grader's API.

A grading kernel never imports this package (the sandbox hides it). The grader calls::

    prepare(ids, seed, folder)      # before the kernel runs: writes folder/inputs/<id>.pkl
    verdict(id, seed, folder)       # afterwards: reads folder/outputs/<id>.{npz,json} -> dict
    forbidden(id)                   # package functions an answer must not call

Practice mode (``check`` in a notebook) calls :func:`payload` and :func:`judge` in-process,
with the public seed; the verdict is the same function of the same data in both modes.

Specs live in one module per chapter topic (``oracle/chain_rule.py``, ...), each calling
:func:`register`; modules are found automatically, so a chapter author only adds a file.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import re

from backprop_lab.checks import record as rec
from backprop_lab.checks.oracle import judge as _judge
from backprop_lab.checks.oracle.spec import Spec

__all__ = ["register", "spec", "ids", "payload", "prepare", "verdict", "judge", "forbidden"]

_SPECS: dict[str, Spec] = {}
_loaded = False
_ID = re.compile(r"^\d+\.\d+$")


def register(spec: Spec) -> Spec:
    """Register ``spec`` under ``spec.id`` (``"<chapter>.<n>"``); returns it."""
    if not _ID.match(spec.id):
        raise ValueError(f"exercise ids look like '4.2', got {spec.id!r}")
    if spec.id in _SPECS and _SPECS[spec.id] is not spec:
        raise ValueError(f"exercise {spec.id} is registered twice")
    _SPECS[spec.id] = spec
    return spec


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("spec", "judge") and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def ids() -> list[str]:
    """Every registered exercise id, in chapter order."""
    _load_all()
    return sorted(_SPECS, key=lambda s: tuple(int(p) for p in s.split(".")))


def spec(exercise: str) -> Spec:
    """The spec of ``exercise``; LookupError naming the known ids if there is none."""
    _load_all()
    try:
        return _SPECS[exercise]
    except KeyError:
        known = ", ".join(ids()) or "none"
        raise LookupError(
            f"No check is registered for exercise {exercise!r} (known: {known}). Exercise ids "
            "are '<chapter>.<n>' strings, as in check(\"4.2\", two_layer_backward)."
        ) from None


@functools.lru_cache(maxsize=64)
def _built(exercise: str, seed: int):
    s = spec(exercise)
    return s, s.build_cases(seed), s.build_large(seed)


def payload(exercise: str, seed: int) -> dict:
    """What the kernel needs to run the answer: arguments and names, no seed, no expected."""
    s, cases, large = _built(exercise, int(seed))
    out = {
        "format": rec.FORMAT,
        "exercise": s.id,
        "title": s.title,
        "driver": s.driver,
        "answers": s.answers,
        "signature": s.call_text(),
        "arg_names": s.arg_names(),
        "outputs": list(s.outputs),
        "cases": [{"args": c.args} for c in cases],
        "cost": s.cost_payload(large) if large is not None else None,
        "watch": list(s.forbidden),
    }
    return out


def judge(exercise: str, seed: int, arrays: dict, record: dict) -> dict:
    """The verdict on what the kernel recorded (practice mode calls this directly)."""
    s, cases, large = _built(exercise, int(seed))
    return _judge.jsonable_verdict(_judge.judge(s, cases, large, arrays, record))


def prepare(ids: list[str] | tuple[str, ...], seed: int, folder: str | os.PathLike) -> dict:
    """Write ``folder/inputs/<id>.pkl`` for each exercise (and make ``folder/outputs``).

    Returns ``{id: path}``. Call it in the trusted process before the kernel starts; give the
    kernel ``BACKPROP_LAB_CHECK_DIR=folder`` and never the seed.
    """
    written = {}
    os.makedirs(os.path.join(os.fspath(folder), "outputs"), exist_ok=True)
    for exercise in ids:
        written[exercise] = rec.write_inputs(folder, exercise, payload(exercise, seed))
    return written


def verdict(exercise: str, seed: int, folder: str | os.PathLike) -> dict:
    """The verdict on what the kernel wrote to ``folder/outputs`` (read as data only).

    JSON-able dict: ``exercise``, ``answer``, ``passed``, ``status``, ``score`` (0..1),
    ``outputs`` (``[{"name", "right"}]`` in backward order), ``diagnosis`` (sentences),
    ``feedback`` (the text a student reads; never an expected value), ``cases``, ``cost``.
    """
    s = spec(exercise)
    try:
        arrays, record = rec.read_outputs(folder, exercise)
    except rec.RecordError as exc:
        return _judge.jsonable_verdict(_judge.missing(s, str(exc)))
    if record.get("exercise") != exercise:
        return _judge.jsonable_verdict(_judge.missing(s, "the record names another exercise"))
    return judge(exercise, seed, arrays, record)


def forbidden(exercise: str) -> list[str]:
    """Dotted names of package functions that compute ``exercise``'s answer: an answer cell
    must not call them (the check fails such an answer; the grader may also flag the cell)."""
    return list(spec(exercise).forbidden)
