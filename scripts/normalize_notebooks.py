"""Store notebooks the way JupyterLab would save them, so that they open unmodified.

    .venv/bin/python scripts/normalize_notebooks.py            # rewrite notebooks/*.ipynb
    .venv/bin/python scripts/normalize_notebooks.py FILE ...   # these notebooks
    .venv/bin/python scripts/normalize_notebooks.py --check    # list the ones that differ

Run it before committing a notebook (after executing it). ``tests/test_jupyterlab.py``
fails when a notebook in ``notebooks/`` is not normalised.

What JupyterLab changes when it opens or saves one of our notebooks (found by opening each
chapter in JupyterLab 4.5 and saving it unchanged):

* ``metadata.kernelspec.display_name``: JupyterLab writes the installed kernel's name,
  "Python 3 (ipykernel)"; ``jupyter nbconvert --execute`` and nbclient write "Python 3".
  This difference is what marks a notebook as modified the moment it opens.
* Numbers: the notebook travels through JavaScript, which has no integer/float
  distinction, so an integral float such as a slider's ``"max": 2.0`` in the saved widget
  state comes back as ``2``. Any float with an integral value becomes an int.
* Formatting: one-space indent, sorted keys, non-ASCII kept, final newline, cell ids on
  every cell (nbformat 4.5); ``nbformat.write`` gives exactly that.

One addition of our own, so that the site and JupyterLab show the same exercise number:

* An exercise directive (``{exercise}`` or ``{exercise-start}``) labelled
  ``ex-<chapter>-<n>`` gets ``:enumerator: <chapter>.<n>`` after its label when it has no
  ``:enumerator:`` yet. jupyterlab-myst then says "Exercise 4.2" instead of counting the
  exercises of the notebook; the site derives the same number (book/_ext/backprop_book.py
  reports an enumerator that disagrees with its label).

Nothing else is touched: other cell sources, outputs and execution counts stay as they are.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KERNEL_NAME = "python3"


def kernel_display_name(name: str = KERNEL_NAME) -> str:
    """The display name of the installed kernel (what JupyterLab writes)."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        return KernelSpecManager().get_kernel_spec(name).display_name
    except Exception:  # noqa: BLE001 - no kernelspec machinery: ipykernel's default name
        return "Python 3 (ipykernel)"


def js_numbers(value: Any) -> Any:
    """Integral floats become ints, recursively (what a round trip through JSON in a
    browser does)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: js_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [js_numbers(item) for item in value]
    return value


FENCE = re.compile(r"^\s*(:{3,}|`{3,})\{(exercise|exercise-start)\}")
OPTION = re.compile(r"^\s*:([\w-]+):")
LABEL = re.compile(r"^(?P<indent>\s*):label:\s*ex-(?P<chapter>\d+)-(?P<n>\d+)\s*$")


def add_enumerators(source: str) -> str:
    """Add ``:enumerator: N.k`` to exercise directives labelled ``ex-N-k`` that lack one."""
    lines = source.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        if not FENCE.match(lines[i]):
            i += 1
            continue
        j = i + 1
        options = []
        while j < len(lines) and OPTION.match(lines[j]):
            options.append(lines[j])
            j += 1
        names = {OPTION.match(line)[1] for line in options}
        for line in options:
            out.append(line)
            m = LABEL.match(line)
            if m and not names & {"enumerator", "number"}:
                number = f"{int(m['chapter'])}.{int(m['n'])}"
                out.append(f"{m['indent']}:enumerator: {number}")
        i = j
    return "\n".join(out)


def normalize(nb: Any, display_name: str) -> Any:
    """The notebook as JupyterLab would save it (a new object)."""
    import nbformat

    nb = nbformat.from_dict(js_numbers(nb))
    if nb.nbformat == 4 and nb.nbformat_minor < 5:
        nb.nbformat_minor = 5
    for index, cell in enumerate(nb.cells):
        if not cell.get("id"):
            cell["id"] = f"cell-{index:03d}"
    for cell in nb.cells:
        if cell.cell_type == "markdown" and "{exercise" in cell.source:
            cell.source = add_enumerators(cell.source)
    spec = nb.metadata.setdefault("kernelspec", {})
    spec.update({"display_name": display_name, "language": "python", "name": KERNEL_NAME})
    return nb


def normalized_text(path: Path, display_name: str) -> str:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return nbformat.writes(normalize(nb, display_name)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default notebooks/)")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if any would change"
    )
    args = parser.parse_args(argv)
    paths = args.paths or sorted((ROOT / "notebooks").glob("*.ipynb"))
    display_name = kernel_display_name()
    changed = []
    for path in paths:
        if not path.is_file():
            print(f"normalize_notebooks: {path} is not a file", file=sys.stderr)
            return 2
        text = normalized_text(path, display_name)
        if path.read_text(encoding="utf-8") == text:
            continue
        changed.append(path)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    verb = "would change" if args.check else "normalised"
    for path in changed:
        print(f"normalize_notebooks: {verb} {path}")
    if args.check and changed:
        print(
            "normalize_notebooks: run `.venv/bin/python scripts/normalize_notebooks.py` and "
            "commit the result (JupyterLab would otherwise open these marked modified)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
