"""Kernel-side drivers: how a check calls the answer, and the forward passes it times.

Nothing in this package contains an answer or an expected value, and nothing here imports
:mod:`backprop_lab.checks.oracle`: a grading kernel runs these with the oracle out of reach.

**Drivers.** A driver is ``driver(answers, args) -> result``: ``answers`` is the tuple of
objects passed to ``check(id, *answers)`` and ``args`` the case arguments the oracle drew.
The default, ``"call"``, returns ``answers[0](*args)``. A chapter whose answer is called
another way (a class, a pair of functions) adds ``drivers/<topic>.py`` with::

    from backprop_lab.checks.drivers import driver

    @driver("layer_class")                 # the spec says driver="layer_class"
    def call_layer(answers, args):
        (Layer,) = answers
        x, upstream = args
        layer = Layer()
        layer.forward(x)
        return layer.backward(upstream)

**Forward passes.** A cost check times the answer against one forward pass of the
exercise's function on a large input. That function is registered here (``@forward_pass``)
so that the kernel can run it without the oracle; the oracle imports the same object to
compute its finite differences, so each forward pass is written once.

Modules in this package are found automatically (one per chapter topic).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

__all__ = ["driver", "forward_pass", "get_driver", "get_forward", "forward_name"]

_DRIVERS: dict[str, Callable[[tuple, tuple], Any]] = {}
_FORWARDS: dict[str, Callable[..., Any]] = {}
_loaded = False


def driver(name: str):
    """Register ``fn(answers, args) -> result`` as the driver ``name``."""

    def register(fn):
        if name in _DRIVERS and _DRIVERS[name] is not fn:
            raise ValueError(f"two drivers are named {name!r}")
        _DRIVERS[name] = fn
        return fn

    return register


def forward_pass(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register a forward pass as ``<topic>.<function name>`` (topic: the module's name)."""
    topic = fn.__module__.rsplit(".", 1)[-1]
    name = f"{topic}.{fn.__name__}"
    if name in _FORWARDS and _FORWARDS[name] is not fn:
        raise ValueError(f"two forward passes are named {name!r}")
    _FORWARDS[name] = fn
    fn.forward_name = name
    return fn


def forward_name(fn: Callable[..., Any]) -> str:
    """The registered name of a forward pass (for the payload of a cost check)."""
    name = getattr(fn, "forward_name", None)
    if name is None or _FORWARDS.get(name) is not fn:
        raise ValueError(
            f"{getattr(fn, '__name__', fn)!r} is not a registered forward pass: define it in "
            "backprop_lab/checks/drivers/<topic>.py with @forward_pass"
        )
    return name


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def get_driver(name: str) -> Callable[[tuple, tuple], Any]:
    if name not in _DRIVERS:
        _load_all()
    try:
        return _DRIVERS[name]
    except KeyError:
        raise LookupError(f"no check driver named {name!r}") from None


def get_forward(name: str) -> Callable[..., Any]:
    if name not in _FORWARDS:
        _load_all()
    try:
        return _FORWARDS[name]
    except KeyError:
        raise LookupError(f"no forward pass named {name!r}") from None


@driver("call")
def call(answers: tuple, args: tuple) -> Any:
    """The default: ``answer(*args)``."""
    return answers[0](*args)
