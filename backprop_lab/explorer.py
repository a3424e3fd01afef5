"""Explorers: a figure (or HTML) that follows a few controls, live in JupyterLab and
precomputed on the static site.

Usage (the last expression of a notebook cell displays it)::

    from backprop_lab.explorer import Explorer

    def render(depth, activation):          # a pure function of the control values
        fig, ax = plt.subplots(figsize=(6.5, 3.2))
        ...
        return fig                          # the explorer saves and closes it

    Explorer(render,
             controls={"depth": [2, 4, 8, 16], "activation": ["sigmoid", "tanh", "relu"]},
             value={"depth": 8},            # unnamed controls start at their first value
             title="Gradient norm per layer")

Controls are discrete grids. A list of numbers gives a slider over exactly those values; a
list of strings (or booleans) gives a row of buttons. ``render(**values)`` returns a
matplotlib Figure, an HTML string, or an object with ``_repr_html_``, ``_repr_svg_`` or
``_repr_png_``.

Two modes, chosen when the explorer is displayed:

* **Live** (a kernel: JupyterLab, nbval, ``jupyter nbconvert --execute``): an ipywidgets
  panel; moving a control calls ``render`` again. Only the starting view is computed when
  the cell runs. An exception inside ``render`` is shown in the panel, not lost in a log.
* **Static** (``BACKPROP_LAB_STATIC=1``, which ``scripts/build_book.py`` sets for the book
  build): every combination of control values is rendered once, when the chapter executes,
  and the cell's output is one self-contained HTML block: radio-button controls and one
  view per distinct result, swapped by CSS (``:has(:checked)``) with no script and no
  kernel. The controls work with the keyboard (Tab into a control, arrow keys to move)
  and follow the site's light/dark colours. An exception in ``render`` stops the build and
  names the combination.

Budget: every combination is stored in the page, so keep an explorer to about 40
combinations (more than :data:`MAX_VIEWS` is refused) and figures to about 6.5 x 3.5 in;
figures are saved as PNG at :data:`DPI` dots per inch with a 256-colour palette (about
15-40 kB each). Figure text of 7.5 pt or more is at least 10 CSS pixels on a desktop.
Identical views (a control that does not change the picture for some settings) are
stored once.

For chapter authors:

* Put ``render`` in your topic module (``backprop_lab/explore/<topic>.py``) and test it
  on its own; the notebook cell only builds the ``Explorer``.
* Do not tag explorer cells ``nbval-check-output``: a live widget's output holds a model
  id that changes on every run. nbval (``--nbval-lax``) runs the cell, which renders the
  starting view, so an exception there still fails the test.
* Prefer ``matplotlib.figure.Figure`` or ``plt.subplots`` (the explorer closes the figure,
  so the inline backend does not show it a second time).
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import math
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from html import escape
from numbers import Real
from typing import Any

__all__ = [
    "Explorer",
    "is_static",
    "STATIC_ENV",
    "MAX_VIEWS",
    "DPI",
    "record_figure_text_size",
    "TEXT_SIZE_KEY",
]

#: Environment variable that selects the static mode ("1"); set by scripts/build_book.py.
STATIC_ENV = "BACKPROP_LAB_STATIC"
#: The most combinations one explorer may have (every one is stored in the page).
MAX_VIEWS = 64
#: Dots per inch of the PNG views; CSS pixels = points * DPI / 72 when shown at full size.
DPI = 100


def is_static() -> bool:
    """True when explorers render every view for a static page (``BACKPROP_LAB_STATIC=1``)."""
    return os.environ.get(STATIC_ENV, "").strip() == "1"


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _label(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


class _Control:
    """One control: a name and its grid of values (numbers: slider; else buttons)."""

    def __init__(self, name: str, values: Any) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                f"Explorer control name {name!r} must be a Python identifier: it is passed "
                "to render() as a keyword argument"
            )
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(
                f"Explorer control {name!r}: give a list of values (the grid), not "
                f"{type(values).__name__} {values!r}; e.g. {{{name!r}: [1, 2, 4]}}"
            )
        values = list(values)
        if not values:
            raise ValueError(f"Explorer control {name!r} has no values; give at least one")
        numeric = [_is_number(v) for v in values]
        if any(numeric) and not all(numeric):
            raise TypeError(
                f"Explorer control {name!r} mixes numbers and other values {values!r}; a "
                "control is either a list of numbers (a slider) or of strings (buttons)"
            )
        if not all(numeric) and not all(isinstance(v, (str, bool)) for v in values):
            bad = next(v for v in values if not isinstance(v, (str, bool)))
            raise TypeError(
                f"Explorer control {name!r}: value {bad!r} is a {type(bad).__name__}; "
                "controls take numbers, strings or booleans (map a string to the object "
                "inside render)"
            )
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ValueError(f"Explorer control {name!r}: values must be finite: {values!r}")
        labels = [_label(v) for v in values]
        if len(set(labels)) != len(labels):
            raise ValueError(f"Explorer control {name!r} repeats a value: {values!r}")
        self.name = name
        self.values = values
        self.labels = labels
        self.numeric = all(numeric)

    def index(self, value: Any) -> int:
        for i, v in enumerate(self.values):
            if v == value and isinstance(v, bool) == isinstance(value, bool):
                return i
        raise ValueError(
            f"Explorer: value {value!r} is not on the grid of control {self.name!r} "
            f"({', '.join(self.labels)}); start at one of those"
        )


class Explorer:
    """A view that follows discrete controls; see the module docstring.

    ``Explorer(render, controls, value=None, title=None)``

    * ``render``: called as ``render(**values)``; returns a matplotlib Figure, an HTML
      string, or an object with ``_repr_html_`` / ``_repr_svg_`` / ``_repr_png_``.
    * ``controls``: ``{name: [values...]}`` in display order; numbers give a slider,
      strings or booleans a row of buttons.
    * ``value``: starting values for some or all controls (default: each grid's first value).
    * ``title``: a short caption shown above the controls (plain text).

    Displaying it gives a live ipywidgets panel in a kernel, or with ``BACKPROP_LAB_STATIC=1``
    a self-contained HTML block holding every view (:meth:`to_html`).
    """

    def __init__(
        self,
        render: Callable[..., Any],
        controls: Mapping[str, Sequence[Any]],
        value: Mapping[str, Any] | None = None,
        title: str | None = None,
    ) -> None:
        if not callable(render):
            raise TypeError(f"Explorer: render must be callable, not {type(render).__name__}")
        if not isinstance(controls, Mapping) or not controls:
            raise TypeError(
                "Explorer: controls must be a non-empty dict {name: [values...]}, e.g. "
                '{"depth": [2, 4, 8]}'
            )
        self.render = render
        self.controls = [_Control(name, values) for name, values in controls.items()]
        self.title = None if title is None else str(title)
        n_views = math.prod(len(c.values) for c in self.controls)
        if n_views > MAX_VIEWS:
            sizes = " x ".join(f"{len(c.values)} {c.name}" for c in self.controls)
            raise ValueError(
                f"Explorer{' ' + repr(self.title) if self.title else ''} has {n_views} "
                f"combinations ({sizes}); the static page stores every one, so keep it to "
                f"about 40 (at most {MAX_VIEWS}): use fewer values per control"
            )
        self.n_views = n_views
        value = dict(value or {})
        names = [c.name for c in self.controls]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(
                f"Explorer: value names {unknown} are not controls; the controls are {names}"
            )
        self.start = {
            c.name: c.index(value[c.name]) if c.name in value else 0 for c in self.controls
        }
        self._widget: Any = None

    # -- values ----------------------------------------------------------------------------
    @property
    def value(self) -> dict[str, Any]:
        """The starting values, ``{name: value}``."""
        return {c.name: c.values[self.start[c.name]] for c in self.controls}

    def combinations(self) -> list[tuple[int, ...]]:
        """Every combination as a tuple of grid indices, first control slowest."""
        return list(itertools.product(*(range(len(c.values)) for c in self.controls)))

    def values_at(self, combo: Sequence[int]) -> dict[str, Any]:
        return {c.name: c.values[i] for c, i in zip(self.controls, combo)}

    def _describe(self, values: Mapping[str, Any]) -> str:
        return ", ".join(f"{k} = {_label(v)}" for k, v in values.items())

    # -- rendering -------------------------------------------------------------------------
    def render_html(self, values: Mapping[str, Any]) -> str:
        """Call ``render(**values)`` and turn the result into an HTML fragment."""
        result = self.render(**values)
        return view_html(result, alt=self._alt(values))

    def _alt(self, values: Mapping[str, Any]) -> str:
        head = f"{self.title}: " if self.title else ""
        return head + self._describe(values)

    def to_html(self) -> str:
        """The static page block: every combination rendered, swapped by CSS radios."""
        uid = "blx" + uuid.uuid4().hex[:10]
        views: list[str] = []  # distinct view markup
        by_digest: dict[str, int] = {}
        view_of: dict[tuple[int, ...], int] = {}
        for combo in self.combinations():
            values = self.values_at(combo)
            try:
                html = self.render_html(values)
            except Exception as exc:
                where = f" {self.title!r}" if self.title else ""
                raise RuntimeError(
                    f"Explorer{where}: render({self._describe(values)}) raised "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            digest = hashlib.sha256(html.encode()).hexdigest()
            if digest not in by_digest:
                by_digest[digest] = len(views)
                views.append(html)
            view_of[combo] = by_digest[digest]
        return static_block(uid, self, views, view_of)

    # -- live widget -----------------------------------------------------------------------
    def widget(self) -> Any:
        """The ipywidgets panel (created once per Explorer)."""
        if self._widget is None:
            self._widget = _live_widget(self)
        return self._widget

    # -- display ---------------------------------------------------------------------------
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        if is_static():
            return {"text/html": self.to_html(), "text/plain": repr(self)}
        return self.widget()._repr_mimebundle_(include=include, exclude=exclude)

    def __repr__(self) -> str:
        grid = " x ".join(f"{c.name}[{len(c.values)}]" for c in self.controls)
        title = f" {self.title!r}" if self.title else ""
        return f"<Explorer{title}: {grid}, {self.n_views} views>"


# --------------------------------------------------------------------------------------
# One view: render's result as HTML
# --------------------------------------------------------------------------------------
def figure_png(fig: Any, dpi: int = DPI) -> tuple[bytes, int, int, float]:
    """Save a matplotlib figure as a palette PNG and close it.

    Returns ``(png bytes, width px, height px, smallest text size in px at that size)``.
    """
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
        smallest = smallest_text_px(fig, dpi)
    finally:
        _close(fig)
    png = _palette_png(buf.getvalue())
    width, height = _png_size(png)
    return png, width, height, round(smallest, 2)


def smallest_text_px(fig: Any, dpi: float) -> float:
    """Size in pixels, at ``dpi``, of the smallest visible text of a figure (0 if none)."""
    from matplotlib.text import Text

    sizes = [
        t.get_fontsize()
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and _drawn(t)
    ]
    return min(sizes) * dpi / 72 if sizes else 0.0


#: PNG text chunk that :func:`record_figure_text_size` adds to inline figures.
TEXT_SIZE_KEY = "backprop:min-text-px"


def record_figure_text_size() -> None:
    """Make IPython's inline PNG figures carry their smallest text size in pixels.

    The book build runs this in every kernel (an IPython startup file written by
    scripts/build_book.py), so that the browser tests can measure how large each figure's
    text is on the page: that size times the figure's displayed/natural width. It wraps
    ``IPython.core.pylabtools.print_figure`` to pass ``metadata={TEXT_SIZE_KEY: ...}`` to
    matplotlib's PNG writer; the picture itself is unchanged.
    """
    from IPython.core import pylabtools

    original = pylabtools.print_figure
    if getattr(original, "_backprop_text_size", False):
        return

    def print_figure(fig: Any, fmt: str = "png", *args: Any, **kwargs: Any) -> Any:
        if fmt in ("png", "retina") and "metadata" not in kwargs:
            dpi = kwargs.get("dpi") or fig.dpi * (2 if fmt == "retina" else 1)
            try:
                px = smallest_text_px(fig, dpi)
            except Exception:  # noqa: BLE001 - never break a figure for a measurement
                px = None
            if px is not None:
                kwargs["metadata"] = {TEXT_SIZE_KEY: f"{px:.2f}"}
        return original(fig, fmt, *args, **kwargs)

    print_figure._backprop_text_size = True  # type: ignore[attr-defined]
    pylabtools.print_figure = print_figure


def _drawn(text: Any) -> bool:
    """False for text whose axes are hidden (their labels are not drawn)."""
    axes = getattr(text, "axes", None)
    return axes is None or axes.get_visible()


def _close(fig: Any) -> None:
    try:
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception:  # noqa: BLE001 - a Figure not known to pyplot needs no closing
        pass


def _palette_png(png: bytes) -> bytes:
    """Re-encode as an 8-bit palette PNG (2-3 times smaller for plots); keep the original
    if that is not smaller or Pillow is missing."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        return png
    with Image.open(io.BytesIO(png)) as im:
        rgb = im.convert("RGB")
    small = rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    data = out.getvalue()
    return data if len(data) < len(png) else png


def _png_size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def view_html(result: Any, alt: str = "") -> str:
    """HTML for what ``render`` returned (Figure, HTML string, or a displayable object)."""
    if hasattr(result, "savefig") and hasattr(result, "canvas"):
        png, width, height, smallest = figure_png(result)
        return _img(png, width, height, alt, smallest)
    if isinstance(result, str):
        return result
    if hasattr(result, "_repr_html_"):
        html = result._repr_html_()
        if html is not None:
            return html
    if hasattr(result, "_repr_svg_"):
        svg = result._repr_svg_()
        if svg is not None:
            return f'<div class="bl-x-svg">{svg}</div>'
    if hasattr(result, "_repr_png_"):
        png = result._repr_png_()
        if png is not None:
            width, height = _png_size(png)
            return _img(png, width, height, alt, None)
    raise TypeError(
        f"Explorer: render returned {type(result).__name__}; return a matplotlib Figure, "
        "an HTML string, or an object with _repr_html_/_repr_svg_/_repr_png_"
    )


def _img(png: bytes, width: int, height: int, alt: str, smallest: float | None) -> str:
    data = base64.b64encode(png).decode("ascii")
    text = "" if smallest is None else f' data-min-text-px="{smallest:g}"'
    return (
        f'<img class="bl-x-figure" src="data:image/png;base64,{data}" width="{width}" '
        f'height="{height}" alt="{escape(alt)}"{text}/>'
    )


# --------------------------------------------------------------------------------------
# Static block
# --------------------------------------------------------------------------------------
# Shared look, scoped to .bl-x; the site's theme variables give light and dark colours,
# with fallbacks for pages without them.
BASE_CSS = """
.bl-x{border:1px solid var(--pst-color-border,#d0d7de);border-radius:6px;
padding:.6rem .75rem;margin:.5rem 0 1rem;max-width:100%;box-sizing:border-box;
background:var(--pst-color-surface,#f6f8fa);color:var(--pst-color-text-base,#24292f)}
.bl-x-title{font-weight:600;margin:0 0 .4rem}
.bl-x-controls{display:flex;flex-wrap:wrap;gap:.35rem 1.25rem;margin-bottom:.5rem}
.bl-x fieldset{border:0;margin:0;padding:0;min-width:0;max-width:100%}
.bl-x legend{float:none;font-size:.9rem;margin:0;padding:0;font-weight:600;width:auto}
.bl-x-options{display:flex;flex-wrap:wrap;gap:.25rem;overflow-x:auto;padding:4px;min-width:0}
.bl-x label{position:relative;display:inline-flex;align-items:center;justify-content:center;
min-width:2.25rem;min-height:2rem;padding:.1rem .55rem;margin:0;
border:1px solid var(--pst-color-border,#d0d7de);border-radius:1rem;
background:var(--pst-color-background,#fff);color:inherit;
cursor:pointer;font-size:.9rem;line-height:1.2;user-select:none}
.bl-x label:hover{border-color:var(--pst-color-primary,#0969da)}
.bl-x input{position:absolute;opacity:0;width:1px;height:1px;margin:0;pointer-events:none}
.bl-x label:has(input:checked){background:var(--pst-color-primary,#0969da);
border-color:var(--pst-color-primary,#0969da);color:var(--pst-color-primary-text,#fff);
font-weight:600}
.bl-x label:has(input:focus-visible){outline:3px solid var(--pst-color-accent,#bf3989);
outline-offset:1px}
.bl-x-slider .bl-x-options{position:relative;gap:.3rem}
.bl-x-slider .bl-x-options::before{content:"";position:absolute;left:1rem;right:1rem;
top:calc(4px + 1rem);border-top:2px solid var(--pst-color-border,#d0d7de);z-index:0}
.bl-x-slider label{z-index:1}
.bl-x-view{display:none}
.bl-x-views{background:#fff;border-radius:4px;overflow-x:auto}
.bl-x-views img.bl-x-figure{display:block;max-width:100%;height:auto;margin:0 auto}
.bl-x-views svg{max-width:100%;height:auto}
""".strip()


def static_block(
    uid: str, explorer: Explorer, views: list[str], view_of: Mapping[tuple[int, ...], int]
) -> str:
    """Controls as radio groups plus one ``div`` per distinct view; a CSS rule per
    combination shows the view whose controls are all checked."""
    rules = []
    for combo, k in view_of.items():
        checks = "".join(f":has(#{uid}-{j}-{i}:checked)" for j, i in enumerate(combo))
        rules.append(f"#{uid}{checks} .{uid}-v{k}{{display:block}}")
    fieldsets = []
    for j, c in enumerate(explorer.controls):
        kind = "bl-x-slider" if c.numeric else "bl-x-buttons"
        options = []
        for i, label in enumerate(c.labels):
            checked = ' checked="checked"' if i == explorer.start[c.name] else ""
            options.append(
                f'<label><input type="radio" name="{uid}-{j}" id="{uid}-{j}-{i}" '
                f'value="{escape(label)}"{checked}/>{escape(label)}</label>'
            )
        fieldsets.append(
            f'<fieldset class="bl-x-control {kind}" data-control="{escape(c.name)}">'
            f"<legend>{escape(c.name)}</legend>"
            f'<div class="bl-x-options">{"".join(options)}</div></fieldset>'
        )
    body = "".join(
        f'<div class="bl-x-view {uid}-v{k}">{html}</div>' for k, html in enumerate(views)
    )
    title = f'<div class="bl-x-title">{escape(explorer.title)}</div>' if explorer.title else ""
    label = escape(explorer.title or "explorer")
    return (
        f'<div class="bl-x" id="{uid}" data-bl-explorer="static" data-views="{len(views)}" '
        f'role="group" aria-label="{label}">'
        f"<style>{BASE_CSS}\n{''.join(rules)}</style>{title}"
        f'<div class="bl-x-controls">{"".join(fieldsets)}</div>'
        f'<div class="bl-x-views" aria-live="polite">{body}</div></div>'
    )


# --------------------------------------------------------------------------------------
# Live widget
# --------------------------------------------------------------------------------------
def _live_widget(explorer: Explorer) -> Any:
    import ipywidgets as w

    inputs = {}
    for c in explorer.controls:
        start = c.values[explorer.start[c.name]]
        options = list(zip(c.labels, c.values))
        common = {"description": c.name, "style": {"description_width": "initial"}}
        if c.numeric:
            ctl = w.SelectionSlider(
                options=options,
                value=start,
                continuous_update=False,
                layout=w.Layout(width="100%", max_width="30rem", min_width="14rem"),
                **common,
            )
        elif len(options) <= 5 and sum(len(lb) for lb in c.labels) <= 40:
            ctl = w.ToggleButtons(
                options=options, value=start, style={"button_width": "auto"},
                description=c.name,
            )  # fmt: skip
        else:
            ctl = w.Dropdown(options=options, value=start, **common)
        ctl.add_class("bl-x-live-control")
        inputs[c.name] = ctl

    def current() -> dict[str, Any]:
        return {name: ctl.value for name, ctl in inputs.items()}

    def safe_html(values: Mapping[str, Any]) -> str:
        try:
            return explorer.render_html(values)
        except Exception as exc:  # noqa: BLE001 - shown to the reader instead of lost
            return (
                '<pre class="bl-x-error" style="color:#b2182b;white-space:pre-wrap">'
                f"render({escape(explorer._describe(values))}) raised "
                f"{escape(type(exc).__name__)}: {escape(str(exc))}</pre>"
            )

    first = explorer.value
    view = w.HTML(value=explorer.render_html(first))  # an error here fails the cell
    view.add_class("bl-x-live-view")

    def update(_change: Any) -> None:
        view.value = safe_html(current())

    for ctl in inputs.values():
        ctl.observe(update, names="value")
    children = []
    if explorer.title:
        children.append(w.HTML(f"<b>{escape(explorer.title)}</b>"))
    children.append(w.HBox(list(inputs.values()), layout=w.Layout(flex_flow="row wrap")))
    children.append(view)
    box = w.VBox(children)
    box.add_class("bl-x-live")
    return box
