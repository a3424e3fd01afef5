"""Sphinx extension for the Backprop Lab book (loaded through ``sphinx.local_extensions``).

It does these things:

* ``{op-reference}`` directive: renders the table of every op's forward, VJP and JVP
  formula straight from the engine's op registry (``backprop_lab.ops.REGISTRY``) at build
  time, so the book and the code cannot disagree. Nothing is generated into the source tree;
  the page ``book/op-reference.md`` holds only the directive, and the page is re-read
  whenever ``backprop_lab/ops.py`` changes.
* Student edition: ``BOOK_EDITION=student`` sets sphinx-exercise's ``hide_solutions`` and
  also removes gated solutions (``{solution-start}`` ... ``{solution-end}``) together with
  the cells between the markers, which sphinx-exercise 1.2 alone leaves on the page.
  The student edition's download button gives the student release of each chapter
  (``backprop_lab.grading.release``), never the instructor notebook, and its launch buttons
  appear only when ``BOOK_STUDENT_BRANCH`` names the branch that holds that release.
* ``BOOK_JUPYTERHUB_URL`` adds a JupyterHub launch button (no default address).
* Exercise numbers: an exercise labelled ``ex-<chapter>-<n>`` is "Exercise <chapter>.<n>"
  (sphinx-exercise alone numbers them across the whole book). The directive also takes
  ``:enumerator: 4.2``, which jupyterlab-myst reads too; a mismatch with the label is an
  error.
* Code cells never show the ``# BEGIN SOLUTION`` / ``# END SOLUTION`` marker lines.
* Search result snippets show formulas as plain text instead of raw LaTeX
  (``_static/backprop/search-snippets.js``).
* Every page is rewritten when a static asset changes (Sphinx alone would not copy it).
* ``BACKPROP_OPS_MODULE`` (tests only) names another module holding ``REGISTRY``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
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
# Two columns: the op (name and description), then its three rules one under the other,
# which stays readable in a 750 px column and, stacked, on a phone (backprop.css).
COLUMNS = (("Op", 30), ("Rules: forward, backward (VJP), forward mode (JVP)", 70))
RULES = (("formula", "forward"), ("vjp_formula", "VJP"), ("jvp_formula", "JVP"))


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


def _rules_cell(row: dict[str, str]) -> nodes.entry:
    """One paragraph per rule: a label, then the formula (or a dash)."""
    entry = nodes.entry()
    for key, label in RULES:
        para = nodes.paragraph(classes=["op-rule", f"op-rule-{label.lower()}"])
        para += nodes.inline(text=label, classes=["op-rule-label"])
        para += nodes.Text(" ")
        latex = row[key]
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
        tr += _rules_cell(row)
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
    theme_options = dict(config.html_theme_options or {})
    launch = dict(theme_options.get("launch_buttons") or {})
    hub = (os.environ.get("BOOK_JUPYTERHUB_URL") or "").strip()
    if hub:
        if not re.match(r"^https?://[^/\s]+", hub):
            raise ConfigError(
                f"BOOK_JUPYTERHUB_URL={hub!r} is not an http(s) address; give your hub's "
                "address, e.g. https://hub.example.edu, or leave it unset for no hub button"
            )
        launch["jupyterhub_url"] = hub
    if edition == "student":
        config.hide_solutions = True
        # Sphinx copies each chapter to _sources/ for the download button; build-finished
        # (student_sources) replaces every copy with its student release.
        config.html_copy_source = True
        branch = (os.environ.get("BOOK_STUDENT_BRANCH") or "").strip()
        if branch:
            # Launch buttons open the chapter from the branch that holds the released
            # notebooks at the same paths (backprop-lab release notebooks/ ...).
            theme_options["repository_branch"] = branch
        else:
            # The repository's notebooks hold the solutions: no launch button.
            launch = {}
    if launch or "launch_buttons" in theme_options:
        theme_options["launch_buttons"] = launch
    config.html_theme_options = theme_options
    config.html_context = {**(config.html_context or {}), "book_edition": edition}


def student_sources(app: Sphinx, exception: Exception | None) -> None:
    """Student edition: replace every notebook under _sources/ by its student release and
    refuse to finish if any source file there still holds a solution marker."""
    if exception is not None or not app.config.hide_solutions or app.builder.format != "html":
        return
    import nbformat

    from backprop_lab.grading.release import release_notebook

    sources = Path(app.outdir, "_sources")
    if not sources.is_dir():
        return
    for copy in sorted(sources.rglob("*.ipynb")):
        original = Path(app.srcdir, copy.relative_to(sources))
        nb = nbformat.read(original if original.exists() else copy, as_version=4)
        try:
            released = release_notebook(nb)
        except Exception as exc:  # noqa: BLE001 - every failure stops the student build
            raise RuntimeError(
                f"student edition: cannot release {original} for the download button: {exc}"
            ) from exc
        nbformat.write(released, copy)
    leaks = [  # the released notebooks, checked again (pages such as the instructor guide
        # may quote the markers in prose)
        str(path.relative_to(app.outdir))
        for path in sources.rglob("*.ipynb")
        if _has_solution_markers(path.read_text(errors="replace"))
    ]
    if leaks:
        raise RuntimeError(
            "student edition: these downloadable sources still hold solutions "
            f"('# BEGIN SOLUTION'): {', '.join(leaks)}"
        )


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
# Exercise numbers: <chapter>.<n>
# --------------------------------------------------------------------------------------
EXERCISE_LABEL = re.compile(r"^ex-(\d+)-(\d+)$")
ENUMERATOR = re.compile(r"^\d+(\.\d+)*$")


def _patch_exercise_directives(app: Sphinx) -> None:
    """Let ``{exercise}`` / ``{exercise-start}`` take ``:enumerator:`` (alias ``:number:``),
    as jupyterlab-myst does, and record it; check it against the label."""
    from docutils.parsers.rst import directives
    from sphinx_exercise.directive import ExerciseDirective, ExerciseStartDirective

    def numbered(base):
        class Numbered(base):
            option_spec = {
                **base.option_spec,
                "enumerator": directives.unchanged_required,
                "number": directives.unchanged_required,
            }

            def run(self):
                given = self.options.pop("enumerator", None) or self.options.pop("number", None)
                label = self.options.get("label", "")
                result = super().run()
                wanted = exercise_number(label, given)
                problem = number_problem(label, given)
                if problem:
                    logger.warning(
                        problem,
                        location=(self.env.docname, self.lineno),
                        type="backprop",
                        subtype="exercise_number",
                    )
                if wanted and label:
                    numbers = getattr(self.env, "backprop_exercise_numbers", {})
                    numbers[label] = (self.env.docname, wanted)
                    self.env.backprop_exercise_numbers = numbers
                return result

        Numbered.__name__ = base.__name__
        return Numbered

    app.add_directive("exercise", numbered(ExerciseDirective), override=True)
    app.add_directive("exercise-start", numbered(ExerciseStartDirective), override=True)


def exercise_number(label: str, enumerator: str | None) -> tuple[int, ...] | None:
    """The number an exercise shows: its ``:enumerator:``, else <chapter>.<n> from an
    ``ex-<chapter>-<n>`` label, else None (sphinx-exercise's own count)."""
    if enumerator and ENUMERATOR.match(enumerator.strip()):
        return tuple(int(p) for p in enumerator.strip().split("."))
    m = EXERCISE_LABEL.match(label or "")
    return (int(m[1]), int(m[2])) if m else None


def number_problem(label: str, enumerator: str | None) -> str | None:
    """A message when ``:enumerator:`` is malformed or disagrees with the label."""
    if enumerator is None:
        return None
    if not ENUMERATOR.match(enumerator.strip()):
        return f"exercise {label or '(no label)'}: :enumerator: {enumerator!r} is not like 4.2"
    m = EXERCISE_LABEL.match(label or "")
    if m and enumerator.strip() != f"{int(m[1])}.{int(m[2])}":
        return (
            f"exercise {label}: :enumerator: {enumerator.strip()} disagrees with the label "
            f"(expected {int(m[1])}.{int(m[2])}); ids are <chapter>.<n>, labels ex-<chapter>-<n>"
        )
    return None


def renumber_exercises(app: Sphinx, env) -> list[str]:
    """After Sphinx numbers figures (and exercises) across the book, give every exercise
    with a known number that number instead (titles, solutions and {numref} all read it)."""
    numbers = getattr(env, "backprop_exercise_numbers", {})
    for docname, figtypes in env.toc_fignumbers.items():
        exercises = figtypes.get("exercise")
        if not exercises:
            continue
        for ident in list(exercises):
            entry = numbers.get(ident)
            if entry and entry[0] == docname:
                exercises[ident] = entry[1]
            else:
                m = EXERCISE_LABEL.match(ident)
                if m:
                    exercises[ident] = (int(m[1]), int(m[2]))
    return []


def purge_exercise_numbers(app: Sphinx, env, docname: str) -> None:
    numbers = getattr(env, "backprop_exercise_numbers", {})
    for label in [k for k, (doc, _) in numbers.items() if doc == docname]:
        del numbers[label]


def merge_exercise_numbers(app: Sphinx, env, docnames, other) -> None:
    numbers = getattr(env, "backprop_exercise_numbers", {})
    numbers.update(getattr(other, "backprop_exercise_numbers", {}))
    env.backprop_exercise_numbers = numbers


# --------------------------------------------------------------------------------------
# Solution markers
# --------------------------------------------------------------------------------------
SOLUTION_MARKER = re.compile(r"^[ \t]*# (BEGIN|END) SOLUTION\b.*(\n|$)", re.M)


def _has_solution_markers(text: str) -> bool:
    return SOLUTION_MARKER.search(text) is not None


class HideSolutionMarkers(SphinxTransform):
    """Drop the ``# BEGIN SOLUTION`` / ``# END SOLUTION`` lines from notebook code cells
    (the lines are for the release tool; prose that explains them is left alone)."""

    default_priority = 400

    def apply(self, **kwargs: Any) -> None:
        for block in list(self.document.findall(nodes.literal_block)):
            parent = block.parent
            if parent is None or "cell_input" not in parent.get("classes", []):
                continue
            text = block.astext()
            if not _has_solution_markers(text):
                continue
            clean = SOLUTION_MARKER.sub("", text)
            new = nodes.literal_block(clean, clean, **block.attributes)
            block.replace_self(new)


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
    _patch_exercise_directives(app)
    app.add_transform(RemoveHiddenSolutions)
    app.add_transform(HideSolutionMarkers)
    app.add_directive("op-reference", OpReferenceDirective)
    # After Sphinx's TocTreeCollector (priority 500) has assigned toc_fignumbers.
    app.connect("env-get-updated", renumber_exercises, priority=900)
    app.connect("env-purge-doc", purge_exercise_numbers)
    app.connect("env-merge-info", merge_exercise_numbers)
    app.connect("build-finished", student_sources)
    app.add_js_file("backprop/search-snippets.js")
    # Early: html-page-context is emitted with emit_firstresult, so a handler after one that
    # returns a template name would never run.
    app.connect("html-page-context", dedupe_scripts, priority=100)
    app.connect("env-get-outdated", outdated_when_assets_change)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
