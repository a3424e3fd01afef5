"""The instructor's answers, read from the notebooks (never copied into a module)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def answer_source(notebook: str, exercise: str) -> str:
    """The source of the answer cell ``ex-<chapter>-<n>-answer`` of ``notebooks/<notebook>``."""
    cells = json.loads((ROOT / "notebooks" / notebook).read_text(encoding="utf-8"))["cells"]
    cid = f"ex-{exercise.replace('.', '-')}-answer"
    for cell in cells:
        if cell.get("id") == cid:
            return "".join(cell["source"])
    raise LookupError(f"{notebook} has no cell {cid}")
