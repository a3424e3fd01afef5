"""Best-effort integrity audit inside a grading kernel.

:func:`install` runs at kernel start (before any student code) and remembers the objects
that the checks rely on: the builtins, NumPy's namespace, ``backprop_lab.checks`` and this
module. :func:`changes` lists what has since been replaced or deleted. The checks append
:func:`stamp` to their printout and the grader appends a cell that calls :func:`report`, so a
replaced ``print``, ``numpy.allclose`` or checker changes the compared output.

This is an audit, not a sandbox: code in the same process can defeat it. Outside a grading
kernel nothing is installed and :func:`stamp` returns "".
"""

from __future__ import annotations

import builtins
import sys

WATCHED = (
    "builtins",
    "numpy",
    "numpy.random",
    "numpy.linalg",
    "backprop_lab.checks",
    "backprop_lab.grading",
    "backprop_lab.grading.guard",
    "contextlib",
    "io",
)
# Names that IPython and ipykernel rebind on their own while cells run.
_VOLATILE = {
    "_",
    "__",
    "___",
    "input",
    "raw_input",
    "getpass",
    "__IPYTHON__",
    "display",
    "get_ipython",
    "exit",
    "quit",
    "__builtins__",
    "__loader__",
    "__spec__",
}

_snapshot: dict | None = None
_modules: dict | None = None
_stdout_write = None
_id = id
_type = type


def install() -> None:
    """Remember the watched modules' namespaces (idempotent)."""
    global _snapshot, _modules, _stdout_write
    if _snapshot is not None:
        return
    import importlib

    _stdout_write = sys.stdout.write

    _modules, _snapshot = {}, {}
    for name in WATCHED:
        module = importlib.import_module(name)
        _modules[name] = module
        _snapshot[name] = dict(vars(module))


def _same(a, b) -> bool:
    if a is b:
        return True
    if _type(a) is not _type(b) or _type(a).__name__ != "method":
        return False
    return a.__func__ is b.__func__ and a.__self__ is b.__self__


def changes() -> list[str]:
    """What was replaced or deleted since :func:`install` (empty when nothing was)."""
    if _snapshot is None:
        return []
    found = []
    for name, saved in _snapshot.items():
        module = _modules[name]
        if sys.modules.get(name) is not module:
            found.append(f"sys.modules[{name!r}] replaced")
        current = vars(module)
        for key, value in saved.items():
            if key in _VOLATILE and name == "builtins":
                continue
            if key not in current:
                found.append(f"{name}.{key} deleted")
            elif not _same(current[key], value):
                found.append(f"{name}.{key} replaced")
    if builtins.print is not _snapshot["builtins"]["print"]:
        found.append("builtins.print replaced")
    return sorted(set(found))


def stamp() -> str:
    found = changes()
    if not found:
        return ""
    shown = ", ".join(found[:5]) + (" ..." if len(found) > 5 else "")
    return f"TAMPERING DETECTED: {shown}\n"


def installed() -> bool:
    return _snapshot is not None


def write(text: str) -> None:
    """Write to the kernel's stdout as it was at :func:`install`."""
    (_stdout_write or sys.stdout.write)(text)


def report() -> None:
    """The grader's last cell: prints 'integrity: clean' or what was tampered with."""
    found = changes()
    write("integrity: clean\n" if not found else stamp())
