"""The book's op reference table lists every op of the engine's registry.

The table is rendered at build time by the ``{op-reference}`` directive in
``book/_ext/backprop_book.py`` from ``backprop_lab.ops.REGISTRY``. These tests check the
table the directive builds (no Sphinx build needed) and, when the site has been built,
the page itself.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "book" / "_ext"))

backprop_book = pytest.importorskip("backprop_book")
from backprop_lab.ops import REGISTRY  # noqa: E402

BUILT_PAGE = ROOT / "_build" / "html" / "book" / "op-reference.html"


def test_registry_is_not_empty():
    assert len(REGISTRY) > 0


def test_every_op_has_the_formulas_the_table_shows():
    for key, op in REGISTRY.items():
        assert op.name, f"{key}: empty name"
        assert op.formula.strip(), f"{key}: empty forward formula"
        assert op.vjp_formula.strip(), f"{key}: empty VJP formula"


def test_table_has_one_row_per_op_with_its_formulas():
    table = backprop_book.op_table(REGISTRY)
    rows = list(table.findall(lambda n: n.tagname == "row"))[1:]  # skip the header row
    assert len(rows) == len(REGISTRY)
    for row, (key, op) in zip(rows, REGISTRY.items(), strict=True):
        text = row.astext()
        assert op.name in text, key
        assert op.formula.strip() in text, key
        assert op.vjp_formula.strip() in text, key
        assert (op.jvp_formula or "").strip() in text, key
        assert row["ids"], f"{key}: row has no anchor for links"


def test_table_follows_the_registry_it_is_given():
    fake = {
        "twice": SimpleNamespace(
            name="twice",
            formula=r"z = 2x",
            vjp_formula=r"\bar x = 2 \bar z",
            jvp_formula=r"\dot z = 2 \dot x",
            doc="Doubling.",
        )
    }
    text = backprop_book.op_table(fake).astext()
    assert "twice" in text and r"\bar x = 2 \bar z" in text and "Doubling." in text
    assert "add" not in text.split()


@pytest.mark.browser  # runs with the browser tests, after `make browser` has built the site
def test_built_page_lists_every_op():
    assert BUILT_PAGE.exists(), "site not built: run make book-build (make browser does)"
    ops_module = Path(sys.modules[type(next(iter(REGISTRY.values()))).__module__].__file__)
    assert BUILT_PAGE.stat().st_mtime >= ops_module.stat().st_mtime, (
        f"{BUILT_PAGE.name} is older than {ops_module.name}: rebuild the book"
    )
    page = html.unescape(BUILT_PAGE.read_text(encoding="utf-8"))
    for op in REGISTRY.values():
        assert f">{op.name}<" in page, f"{op.name} missing from {BUILT_PAGE}"
        assert op.vjp_formula.strip() in page, f"VJP of {op.name} missing from the page"
