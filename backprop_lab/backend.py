"""Array backends: the one place that knows NumPy, CuPy and array-api-strict exist.

Ops never import NumPy. They receive an array namespace ``xp`` taken from their inputs
(:func:`namespace_of`), so the same rule runs on NumPy arrays, CuPy arrays on a GPU, or
``array_api_strict`` arrays. The *default* backend only decides where :func:`backprop_lab.tensor`
puts new data; it is chosen here and nowhere else (:func:`use_backend`, or the environment
variable ``BACKPROP_LAB_BACKEND``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as _np

__all__ = [
    "BackendError",
    "BackendInfo",
    "use_backend",
    "backend_info",
    "namespace_of",
    "default_namespace",
    "is_floating",
    "to_numpy",
    "device_kwargs",
    "dtype_kind",
]

KNOWN = ("numpy", "cupy", "array_api_strict")


class BackendError(RuntimeError):
    """A backend was asked for that cannot be used here, or arrays from two backends met."""


def _numpy_namespace() -> ModuleType:
    """NumPy as the ops see it: every NumPy name, with a few calls made cheaper.

    ``np.sum`` and ``np.max`` are Python wrappers around the C reductions ``np.add.reduce``
    and ``np.maximum.reduce``; ``np.reshape`` wraps the array method. The results are the
    same; on the small arrays of a teaching engine the wrappers cost as much as the maths.
    """
    ns = ModuleType("backprop_lab.backend.numpy", _numpy_namespace.__doc__)
    ns.__dict__.update({k: v for k, v in vars(_np).items() if not k.startswith("__")})
    add, maximum, minimum = _np.add.reduce, _np.maximum.reduce, _np.minimum.reduce

    def sum(x, /, *, axis=None, dtype=None, keepdims=False):  # noqa: A001
        return add(x, axis=axis, dtype=dtype, keepdims=keepdims)

    def max(x, /, *, axis=None, keepdims=False):  # noqa: A001
        return maximum(x, axis=axis, keepdims=keepdims)

    def min(x, /, *, axis=None, keepdims=False):  # noqa: A001
        return minimum(x, axis=axis, keepdims=keepdims)

    def reshape(x, /, shape, *, copy=None):
        return x.reshape(shape) if copy is None else _np.reshape(x, shape, copy=copy)

    ns.sum, ns.max, ns.min, ns.reshape = sum, max, min, reshape
    return ns


NUMPY = _numpy_namespace()
NUMPY_ARRAY = _np.ndarray  # the engine's hot paths test for it before any lookup

# Namespace lookup is on the hot path of every op: cache it by the array's Python type.
_NS_BY_TYPE: dict[type, Any] = {_np.ndarray: NUMPY}
for _t in (_np.float64, _np.float32, _np.float16, _np.int64, _np.int32, _np.bool_):
    _NS_BY_TYPE[_t] = NUMPY


def namespace_of(array: Any) -> Any:
    """The array-API namespace of ``array`` (NumPy itself for NumPy arrays)."""
    ns = _NS_BY_TYPE.get(type(array))
    if ns is not None:
        return ns
    if isinstance(array, (_np.ndarray, _np.generic)):
        ns = NUMPY
    else:
        import array_api_compat

        try:
            ns = array_api_compat.array_namespace(array)
        except TypeError as exc:
            raise BackendError(
                f"backprop_lab cannot use an object of type {type(array).__name__} as an "
                "array: pass a NumPy, CuPy or array-API array, or a Python number/list."
            ) from exc
        if getattr(ns, "__name__", "").endswith("compat.numpy"):
            ns = NUMPY
    _NS_BY_TYPE[type(array)] = ns
    return ns


def is_floating(xp: Any, dtype: Any) -> bool:
    """True for real floating dtypes (the only ones that can carry gradients)."""
    if xp is NUMPY or xp is _np:
        return _np.dtype(dtype).kind == "f"
    return bool(xp.isdtype(dtype, "real floating"))


def dtype_kind(xp: Any, dtype: Any) -> str:
    """NumPy's one-letter kind of a dtype on any backend: "b" bool, "i"/"u" integer, "f"
    real floating, "c" complex."""
    if xp is NUMPY or xp is _np:
        return _np.dtype(dtype).kind
    for kind, name in (("b", "bool"), ("i", "signed integer"), ("u", "unsigned integer"),
                       ("f", "real floating"), ("c", "complex floating")):  # fmt: skip
        if xp.isdtype(dtype, name):
            return kind
    return "O"


@dataclass
class BackendInfo:
    """What :func:`backend_info` reports: the active backend and why it is active."""

    name: str
    reason: str
    version: str
    device: str
    gpu_available: bool
    gpu_reason: str

    def __str__(self) -> str:
        return (
            f"backend {self.name} {self.version} on {self.device} ({self.reason}); "
            f"GPU: {'yes' if self.gpu_available else 'no'} ({self.gpu_reason})"
        )


class _BackendState(threading.local):
    """The default backend of the calling thread (each new thread starts from the one
    chosen by BACKPROP_LAB_BACKEND, else NumPy)."""

    def __init__(self) -> None:
        self.name, self.module, self.device, self.reason = _PROCESS_DEFAULT


_PROCESS_DEFAULT: tuple[str, Any, Any, str] = ("numpy", NUMPY, None, "default (NumPy on the CPU)")
_STATE = _BackendState()


def _load(name: str) -> tuple[Any, Any]:
    """Import backend ``name``; return (namespace, device for new arrays)."""
    if name == "numpy":
        return NUMPY, None
    if name == "cupy":
        try:
            import cupy  # noqa: F401
        except ImportError as exc:
            raise BackendError(
                "the 'cupy' backend needs CuPy, which is not installed: "
                "pip install 'backprop-lab[gpu]' (CUDA 12) on a machine with an NVIDIA GPU, "
                "or stay on the default 'numpy' backend."
            ) from exc
        ok, why = _cupy_gpu_status()
        if not ok:
            raise BackendError(f"the 'cupy' backend cannot run here: {why}")
        import array_api_compat.cupy as xp_cupy

        return xp_cupy, None
    if name == "array_api_strict":
        try:
            import array_api_strict
        except ImportError as exc:
            raise BackendError(
                "the 'array_api_strict' backend needs: pip install array-api-strict"
            ) from exc
        return array_api_strict, array_api_strict.Device("device1")
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(KNOWN)}")


def _cupy_gpu_status() -> tuple[bool, str]:
    try:
        import cupy
    except ImportError:
        return False, "CuPy is not installed (pip install 'backprop-lab[gpu]')"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing, no device, ...
        return False, f"CuPy is installed but CUDA reports no usable GPU ({exc})"
    if n < 1:
        return False, "CuPy is installed but no CUDA device was found"
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    if isinstance(name, bytes):
        name = name.decode()
    return True, f"{n} CUDA device(s), device 0 is {name}"


class use_backend:
    """Make ``name`` ("numpy", "cupy" or "array_api_strict") the default backend of the
    calling thread (other threads keep theirs).

    Works as a plain call (the choice stays until changed) and as a context manager that
    restores the previous backend on exit::

        bl.use_backend("cupy")            # from now on
        with bl.use_backend("cupy"): ...  # just inside the block
    """

    def __init__(self, name: str) -> None:
        module, device = _load(name)
        self._previous = (_STATE.name, _STATE.module, _STATE.device, _STATE.reason)
        _STATE.name, _STATE.module, _STATE.device = name, module, device
        _STATE.reason = f"selected with use_backend({name!r})"

    def __enter__(self) -> use_backend:
        return self

    def __exit__(self, *exc: object) -> None:
        _STATE.name, _STATE.module, _STATE.device, _STATE.reason = self._previous


def _init_from_env() -> None:
    global _PROCESS_DEFAULT
    name = os.environ.get("BACKPROP_LAB_BACKEND")
    if not name or name == "numpy":
        return
    try:
        module, device = _load(name)
    except BackendError as exc:
        import warnings

        warnings.warn(f"BACKPROP_LAB_BACKEND={name!r} ignored, using NumPy: {exc}", stacklevel=2)
        reason = f"default (BACKPROP_LAB_BACKEND={name!r} could not be used)"
        _PROCESS_DEFAULT = ("numpy", NUMPY, None, reason)
    else:
        reason = "set by the environment variable BACKPROP_LAB_BACKEND"
        _PROCESS_DEFAULT = (name, module, device, reason)
    _STATE.name, _STATE.module, _STATE.device, _STATE.reason = _PROCESS_DEFAULT


def default_namespace() -> tuple[Any, Any]:
    """(namespace, device) where :func:`backprop_lab.tensor` creates new arrays."""
    return _STATE.module, _STATE.device


def backend_info() -> BackendInfo:
    """Which backend is active, why, and whether a GPU could be used."""
    gpu_ok, gpu_why = _cupy_gpu_status()
    module = _STATE.module
    if _STATE.name == "cupy":
        import cupy

        version, device = cupy.__version__, f"GPU {cupy.cuda.Device().id}"
    elif _STATE.name == "array_api_strict":
        version, device = getattr(module, "__version__", "?"), str(_STATE.device)
    else:
        version, device = _np.__version__, "CPU"
    return BackendInfo(_STATE.name, _STATE.reason, version, device, gpu_ok, gpu_why)


def to_numpy(array: Any) -> _np.ndarray:
    """Copy any backend array to a NumPy array on the host (for plots and printing)."""
    if isinstance(array, (_np.ndarray, _np.generic)):
        return _np.asarray(array)
    if type(array).__module__.startswith("cupy"):
        return array.get()
    ns = namespace_of(array)
    if getattr(ns, "__name__", "") == "array_api_strict":
        import array_api_strict

        return _np.asarray(array.to_device(array_api_strict.Device("CPU_DEVICE")))
    return _np.asarray(array)


def device_kwargs(array: Any) -> dict[str, Any]:
    """``{"device": ...}`` to create a new array beside ``array`` (empty on the CPU)."""
    dev = getattr(array, "device", None)
    return {} if dev is None or dev == "cpu" else {"device": dev}


def masked(xp: Any, g: Any, mask: Any) -> Any:
    """``g`` where the boolean ``mask`` is True and 0 elsewhere, as ``g`` times a 0/1 mask
    (exactly as where(mask, g, 0), and several times faster in NumPy, which branches per
    element in where). NumPy multiplies by the boolean mask itself, sparing a float copy
    of it; array-API namespaces refuse bool * float, so there the mask is cast first."""
    if xp is NUMPY or xp is _np:
        return g * mask
    return g * xp.astype(mask, g.dtype)


def scatter_add(xp: Any, target: Any, index: Any, values: Any) -> None:
    """``target[index] += values`` with repeated indices summed (NumPy's ``add.at``)."""
    own = getattr(xp, "scatter_add", None)
    if own is not None:  # a namespace with its own (bl.compile's recording namespace)
        own(target, index, values)
        return
    if xp is NUMPY or xp is _np:
        _np.add.at(target, index, values)
        return
    mod = type(target).__module__
    if mod.startswith("cupy"):
        import cupyx

        cupyx.scatter_add(target, index, values)
        return
    # Basic (non-fancy) indexing selects each element at most once: plain assignment sums.
    target[index] = target[index] + values


_init_from_env()
