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


# --------------------------------------------------------------------------------------
# The rest of book/_ext/backprop_book.py, in a small Sphinx project
# --------------------------------------------------------------------------------------
def test_exercise_numbers_follow_label_or_enumerator():
    assert backprop_book.exercise_number("ex-4-2", None) == (4, 2)
    assert backprop_book.exercise_number("ex-12-10", "12.10") == (12, 10)
    assert backprop_book.exercise_number("my-label", None) is None
    assert backprop_book.number_problem("ex-4-2", "4.2") is None
    assert "disagrees" in backprop_book.number_problem("ex-4-2", "4.3")
    assert "not like 4.2" in backprop_book.number_problem("ex-4-2", "four")


def _sphinx_build(tmp_path, pages: dict[str, str], **env) -> tuple[Path, str]:
    sphinx = pytest.importorskip("sphinx.cmd.build")
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
        "extensions = ['myst_parser', 'backprop_book']\n"
        "myst_enable_extensions = ['colon_fence']\n"
        "numfig = True\n"
        "html_theme = 'basic'\n"
    )
    toc = "\n".join(name for name in pages if name != "index")
    (src / "index.md").write_text(f"# Book\n\n```{{toctree}}\n{toc}\n```\n")
    for name, text in pages.items():
        (src / f"{name}.md").write_text(text)
    out = tmp_path / "out"
    warnings = tmp_path / "warnings.txt"
    code = sphinx.build_main(["-q", "-b", "html", "-w", str(warnings), str(src), str(out)])
    assert code == 0
    return out, warnings.read_text()


EXERCISES = """# Chapter {n}

:::{{exercise}}
:label: ex-{n}-1

First.
:::

:::{{exercise}}
:label: ex-{n}-2
:enumerator: {n}.2

Second.
:::

:::{{solution}} ex-{n}-2
Answer.
:::
"""


def test_exercises_show_chapter_numbers_in_a_build(tmp_path):
    out, warnings = _sphinx_build(
        tmp_path, {"c3": EXERCISES.format(n=3), "c4": EXERCISES.format(n=4)}
    )
    assert not warnings.strip(), warnings
    page = (out / "c4.html").read_text()
    assert "Exercise 4.1" in page and "Exercise 4.2" in page
    assert "Solution to" in page and "Exercise 4.2</a>" in page
    assert "Exercise 3" not in page  # not the book-wide count (3, 4)


def test_enumerator_that_disagrees_with_the_label_is_reported(tmp_path):
    text = EXERCISES.format(n=5).replace(":enumerator: 5.2", ":enumerator: 5.3")
    _, warnings = _sphinx_build(tmp_path, {"c5": text})
    assert "disagrees with the label" in warnings
