"""Sphinx extension for the Backprop Lab book (loaded through ``sphinx.local_extensions``).

It does three things:

* ``{op-reference}`` directive: renders the table of every op's forward, VJP and JVP
  formula straight from the engine's op registry (``backprop_lab.ops.REGISTRY``) at build
  time, so the book and the code cannot disagree. Nothing is generated into the source tree;
  the page ``book/op-reference.md`` holds only the directive, and the page is re-read
  whenever ``backprop_lab/ops.py`` changes.
* Student edition: ``BOOK_EDITION=student`` sets sphinx-exercise's ``hide_solutions`` and
  also removes gated solutions (``{solution-start}`` ... ``{solution-end}``) together with
  the cells between the markers, which sphinx-exercise 1.2 alone leaves on the page.
* Every page is rewritten when a static asset changes (Sphinx alone would not copy it).
* ``BACKPROP_OPS_MODULE`` (tests only) names another module holding ``REGISTRY``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.errors import ConfigError
from sphinx.transforms import SphinxTransform
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

EDITIONS = ("instructor", "student")
DEFAULT_OPS_MODULE = "backprop_lab.ops"
COLUMNS = (
    ("Op", 14),
    ("Forward", 28),
    ("Backward (VJP)", 34),
    ("Forward mode (JVP)", 28),
)


# --------------------------------------------------------------------------------------
# Op reference table
# --------------------------------------------------------------------------------------
def load_registry(module_name: str | None = None) -> tuple[Mapping[str, Any], str | None]:
    """Import the op registry; return it and the path of the module that defines it."""
    module_name = module_name or os.environ.get("BACKPROP_OPS_MODULE") or DEFAULT_OPS_MODULE
    module = importlib.import_module(module_name)
    return module.REGISTRY, getattr(module, "__file__", None)


def op_rows(registry: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per op, in registry order: name, doc and the three LaTeX formulas."""
    rows = []
    for key, op in registry.items():
        rows.append(
            {
                "name": getattr(op, "name", key) or key,
                "doc": (getattr(op, "doc", "") or "").strip(),
                "formula": (op.formula or "").strip(),
                "vjp_formula": (op.vjp_formula or "").strip(),
                "jvp_formula": (getattr(op, "jvp_formula", "") or "").strip(),
            }
        )
    return rows


def _math_cell(latex: str) -> nodes.entry:
    entry = nodes.entry()
    para = nodes.paragraph()
    if latex:
        para += nodes.math(latex, latex)
    else:
        para += nodes.Text("—")
    entry += para
    return entry


def op_table(registry: Mapping[str, Any]) -> nodes.table:
    """A docutils table: op name and description, forward, VJP and JVP formulas."""
    table = nodes.table(classes=["op-reference"])
    tgroup = nodes.tgroup(cols=len(COLUMNS))
    table += tgroup
    for _, width in COLUMNS:
        tgroup += nodes.colspec(colwidth=width)
    thead = nodes.thead()
    header = nodes.row()
    for title, _ in COLUMNS:
        header += nodes.entry("", nodes.paragraph(text=title))
    thead += header
    tgroup += thead
    tbody = nodes.tbody()
    for row in op_rows(registry):
        tr = nodes.row(ids=[nodes.make_id(f"op-{row['name']}")])
        name_cell = nodes.entry()
        name_cell += nodes.paragraph("", "", nodes.literal(text=row["name"]))
        if row["doc"]:
            name_cell += nodes.paragraph(text=row["doc"])
        tr += name_cell
        tr += _math_cell(row["formula"])
        tr += _math_cell(row["vjp_formula"])
        tr += _math_cell(row["jvp_formula"])
        tbody += tr
    tgroup += tbody
    return table


class OpReferenceDirective(SphinxDirective):
    """``{op-reference}``: the table of every registered op."""

    has_content = False
    required_arguments = 0

    def run(self) -> list[nodes.Node]:
        try:
            registry, path = load_registry()
        except Exception as exc:  # noqa: BLE001 - any import failure is reported the same way
            logger.warning(
                "op-reference: cannot import the op registry (%s): %s: %s",
                os.environ.get("BACKPROP_OPS_MODULE") or DEFAULT_OPS_MODULE,
                type(exc).__name__,
                exc,
                location=(self.env.docname, self.lineno),
                type="backprop",
                subtype="op_reference",
            )
            return []
        if path:
            # Re-read this page whenever the registry's module changes.
            self.env.note_dependency(path)
        if not registry:
            logger.warning(
                "op-reference: REGISTRY is empty",
                location=(self.env.docname, self.lineno),
                type="backprop",
                subtype="op_reference",
            )
        return [op_table(registry)]


# --------------------------------------------------------------------------------------
# Student edition
# --------------------------------------------------------------------------------------
def apply_edition(app: Sphinx, config: Any) -> None:
    edition = (os.environ.get("BOOK_EDITION") or "instructor").strip().lower()
    if edition not in EDITIONS:
        raise ConfigError(
            f"BOOK_EDITION={edition!r} is not one of {', '.join(EDITIONS)} "
            "(unset means instructor: solutions included as collapsed dropdowns)"
        )
    if edition == "student":
        config.hide_solutions = True
        # The download button and _sources/ would hand out the source notebook, solutions
        # included; the student edition offers neither.
        config.html_copy_source = False
        theme_options = dict(config.html_theme_options or {})
        theme_options["use_download_button"] = False
        config.html_theme_options = theme_options
    config.html_context = {**(config.html_context or {}), "book_edition": edition}


def _patch_gated_solutions(app: Sphinx) -> None:
    """Keep gated solutions as nodes under hide_solutions so that they can be removed whole.

    sphinx-exercise 1.2 makes ``{solution-start}`` return nothing when hide_solutions is
    set, so its transform never merges the following cells into the solution and they stay
    on the page. We let the directive build its node and mark it; ``RemoveHiddenSolutions``
    then drops the merged solution, cells included.
    """
    try:
        from sphinx_exercise.directive import SolutionStartDirective
    except ImportError:  # sphinx-exercise not loaded: nothing to do
        return

    class MarkedSolutionStart(SolutionStartDirective):
        def run(self):
            config = self.env.app.config
            if not config.hide_solutions:
                return super().run()
            config.hide_solutions = False
            try:
                result = super().run()
            finally:
                config.hide_solutions = True
            for node in result:
                if isinstance(node, nodes.Element):
                    node["backprop_hidden_solution"] = True
            return result

    app.add_directive("solution-start", MarkedSolutionStart, override=True)


class RemoveHiddenSolutions(SphinxTransform):
    """Drop gated solutions marked by ``MarkedSolutionStart`` (after sphinx-exercise merges)."""

    default_priority = 20  # sphinx-exercise's MergeGatedSolutions runs at 10

    def apply(self, **kwargs: Any) -> None:
        if not self.config.hide_solutions:
            return
        for node in list(self.document.findall(nodes.Element)):
            if node.get("backprop_hidden_solution") and node.parent is not None:
                node.parent.remove(node)


# --------------------------------------------------------------------------------------
# HTML fixes
# --------------------------------------------------------------------------------------
def dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Drop repeated <script> entries (sphinx-thebe 0.3 adds its inline config twice,
    which throws "Identifier 'THEBE_JS_URL' has already been declared" on every page)."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen = set()
    unique = []
    for script in scripts:
        attributes = getattr(script, "attributes", {}) or {}
        filename = str(getattr(script, "filename", script) or "")  # inline: None or ""
        key = (filename, tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key in seen:
            continue
        seen.add(key)
        unique.append(script)
    # In place: the list is the builder's, which handlers running after this one (MathJax,
    # myst-nb's per-page widget scripts) still append to; Sphinx resets it for each page.
    scripts[:] = unique


def static_fingerprint(app: Sphinx) -> str:
    """A digest of every file under html_static_path (names, sizes, mtimes)."""
    digest = hashlib.sha256()
    for entry in app.config.html_static_path:
        root = Path(app.confdir, entry)
        for path in sorted(root.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(
                    f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode()
                )
    return digest.hexdigest()


def outdated_when_assets_change(app: Sphinx, env, added, changed, removed) -> list[str]:
    """Rewrite every page when a static asset (CSS, vendored JS) changed.

    Sphinx copies static files only when it writes some page, so an edit to
    book/_assets/backprop/backprop.css alone would otherwise never reach _build/html.
    """
    fingerprint = static_fingerprint(app)
    if getattr(env, "backprop_static_fingerprint", None) == fingerprint:
        return []
    env.backprop_static_fingerprint = fingerprint
    return sorted(env.found_docs - set(added) - set(changed) - set(removed))


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("sphinx_exercise")
    app.connect("config-inited", apply_edition)
    _patch_gated_solutions(app)
    app.add_transform(RemoveHiddenSolutions)
    app.add_directive("op-reference", OpReferenceDirective)
    # Early: html-page-context is emitted with emit_firstresult, so a handler after one that
    # returns a template name would never run.
    app.connect("html-page-context", dedupe_scripts, priority=100)
    app.connect("env-get-outdated", outdated_when_assets_change)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
