"""Anomaly mode: stop at the first op whose forward or backward produces NaN or Inf.

    with bl.detect_anomaly():
        loss = model(x)
        loss.backward()      # AnomalyError: log#7 produced inf in backward ...

While active, every recorded node remembers the line of *your* code that created it (the
first stack frame outside ``backprop_lab``), stored in ``node.meta["source"]``. Every op's
output and every gradient a VJP sends is checked. This costs a scan of each array and a
stack walk per op, so use it to hunt a bug, not to train.
"""

from __future__ import annotations

import linecache
import os
import sys
from typing import Any

from ..backend import is_floating, namespace_of
from ..tensor import Listener, Tensor

__all__ = ["AnomalyError", "detect_anomaly", "AnomalyDetector"]

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class AnomalyError(FloatingPointError):
    """An op produced NaN or Inf. ``op``, ``phase`` ("forward"/"backward"), ``filename``,
    ``lineno`` and ``code`` say where."""

    def __init__(self, message: str, op: str, phase: str, source: tuple | None) -> None:
        super().__init__(message)
        self.op = op
        self.phase = phase
        self.filename, self.lineno, self.code = source or (None, None, None)


def user_frame() -> tuple[str, int, str] | None:
    """(filename, line number, source text) of the innermost frame outside backprop_lab."""
    f = sys._getframe(1)
    while f is not None:
        fn = f.f_code.co_filename
        if not os.path.abspath(fn).startswith(_PKG_DIR) and "contextlib" not in fn:
            line = linecache.getline(fn, f.f_lineno).strip()
            return fn, f.f_lineno, line
        f = f.f_back
    return None


def _bad(x: Any) -> str | None:
    """'nan', 'inf' or None for an array (non-floating arrays are always fine)."""
    if x is None or not hasattr(x, "dtype"):
        return None
    xp = namespace_of(x)
    if not is_floating(xp, x.dtype):
        return None
    if bool(xp.all(xp.isfinite(x))):
        return None
    return "nan" if bool(xp.any(xp.isnan(x))) else "inf"


def _where(source: tuple | None) -> str:
    if source is None:
        return "at an unknown line"
    fn, line, code = source
    return f"created at {fn}, line {line}:\n    {code}"


class AnomalyDetector(Listener):
    """The listener behind :func:`detect_anomaly`."""

    def __init__(self) -> None:
        self._count = 0

    def on_forward(self, op, node, inputs, output, params, seconds) -> None:
        self._count += 1
        source = user_frame()
        if node is not None:
            if node.meta is None:
                node.meta = {}
            node.meta["source"] = source
            node.meta["label"] = f"{op.name}#{self._count}"
        kind = _bad(output.data)
        if kind is not None:
            bad_in = [i for i, a in enumerate(inputs)
                      if _bad(a.data if type(a) is Tensor else a)]  # fmt: skip
            why = (f" (input {bad_in[0]} already contained non-finite values)"
                   if bad_in else "")  # fmt: skip
            raise AnomalyError(
                f"{op.name} produced {kind} in the forward pass{why}; the op was {_where(source)}",
                op.name,
                "forward",
                source,
            )

    def on_backward(self, node, upstream, input_grads, seconds) -> None:
        source = node.meta.get("source") if node.meta else None
        kind = _bad(upstream)
        if kind is not None:
            raise AnomalyError(
                f"the upstream gradient reaching {node.op.name} contains {kind}; the op was "
                f"{_where(source)}",
                node.op.name,
                "backward",
                source,
            )
        for i, g in enumerate(input_grads):
            kind = _bad(g)
            if kind is not None:
                raise AnomalyError(
                    f"{node.op.name} produced {kind} in the backward pass (the gradient for "
                    f"its input {i}, from finite upstream values); the op was "
                    f"{_where(source)}",
                    node.op.name,
                    "backward",
                    source,
                )


def detect_anomaly() -> AnomalyDetector:
    """``with bl.detect_anomaly():`` raise :class:`AnomalyError` at the first NaN/Inf."""
    return AnomalyDetector()
