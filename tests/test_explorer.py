"""backprop_lab.explorer.Explorer (Contract B): validation, the static page block, the live
ipywidgets panel, and the replay stepper's one-gradient-per-step frames."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET

import pytest

import backprop_lab as bl
from backprop_lab import explorer as ex
from backprop_lab.explorer import Explorer

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def line_figure(slope, colour="C0"):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 2.5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, slope], color=colour)
    ax.set_title(f"slope {slope}", fontsize=11)
    return fig


# -- validation ---------------------------------------------------------------------------
def test_bad_controls_are_named():
    with pytest.raises(TypeError, match="list of values"):
        Explorer(line_figure, {"slope": 3})
    with pytest.raises(ValueError, match="no values"):
        Explorer(line_figure, {"slope": []})
    with pytest.raises(TypeError, match="mixes numbers"):
        Explorer(line_figure, {"slope": [1, "two"]})
    with pytest.raises(ValueError, match="identifier"):
        Explorer(line_figure, {"the slope": [1, 2]})
    with pytest.raises(ValueError, match="repeats"):
        Explorer(line_figure, {"slope": [1, 1.0]})
    with pytest.raises(TypeError, match="callable"):
        Explorer("not a function", {"slope": [1]})
    with pytest.raises(TypeError, match="non-empty dict"):
        Explorer(line_figure, {})


def test_start_values_are_checked_against_the_grid():
    e = Explorer(line_figure, {"slope": [1, 2, 4], "colour": ["C0", "C1"]}, value={"slope": 4})
    assert e.value == {"slope": 4, "colour": "C0"}
    with pytest.raises(ValueError, match="not on the grid.*1, 2, 4"):
        Explorer(line_figure, {"slope": [1, 2, 4]}, value={"slope": 3})
    with pytest.raises(ValueError, match="not controls"):
        Explorer(line_figure, {"slope": [1, 2]}, value={"slop": 1})


def test_too_many_combinations_is_refused_with_the_count():
    with pytest.raises(ValueError, match=r"100 combinations \(10 a x 10 b\)"):
        Explorer(lambda a, b: "", {"a": list(range(10)), "b": list(range(10))})
    Explorer(lambda a, b: "", {"a": list(range(8)), "b": list(range(8))})  # 64 is allowed


# -- static block -------------------------------------------------------------------------
def test_static_block_has_one_view_per_distinct_result_and_a_rule_per_combination():
    calls = []

    def render(a, b):
        calls.append((a, b))
        return f"<p>a={a} b={b if a != 1 else 'same'}</p>"

    e = Explorer(render, {"a": [1, 2, 3], "b": ["x", "y"]}, value={"a": 2, "b": "y"}, title="T")
    html = e.to_html()
    assert sorted(calls) == sorted((a, b) for a in [1, 2, 3] for b in "xy")  # every combination
    uid = re.search(r'id="(blx[0-9a-f]+)"', html).group(1)
    # a=1 draws the same for both b: 5 distinct views, 6 combinations, 6 rules
    assert html.count('class="bl-x-view ') == 5
    rules = re.findall(rf"#{uid}((?::has\(#{uid}-\d-\d:checked\))+) \.{uid}-v(\d)", html)
    assert len(rules) == 6
    # the rule for a=2 (index 1), b=y (index 1) shows the view that says so
    view = dict((sel, k) for sel, k in rules)[f":has(#{uid}-0-1:checked):has(#{uid}-1-1:checked)"]
    assert f'<div class="bl-x-view {uid}-v{view}"><p>a=2 b=y</p></div>' in html
    # the starting values are the checked radios; nothing runs a script
    assert re.search(rf'id="{uid}-0-1" value="2" checked', html)
    assert re.search(rf'id="{uid}-1-1" value="y" checked', html)
    assert "<script" not in html
    assert '<div class="bl-x-title">T</div>' in html
    ET.fromstring(re.sub(r"<style>.*?</style>", "", html, flags=re.S))  # well-formed markup


def test_static_block_of_figures_records_size_and_smallest_text():
    e = Explorer(line_figure, {"slope": [1, 2]})
    html = e.to_html()
    imgs = re.findall(r'<img class="bl-x-figure" src="data:image/png;base64,([^"]+)" '
                      r'width="(\d+)" height="(\d+)" alt="([^"]*)" data-min-text-px="([\d.]+)"',
                      html)  # fmt: skip
    assert len(imgs) == 2
    data, width, height, alt, px = imgs[0]
    png = base64.b64decode(data)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int(width), int(height)) == (4 * ex.DPI, int(2.5 * ex.DPI))
    # the tick labels (rcParams' size, smaller than the 11 pt title) are the smallest text
    from matplotlib.font_manager import FontProperties

    tick_pt = FontProperties(size=matplotlib.rcParams["xtick.labelsize"]).get_size_in_points()
    assert float(px) == pytest.approx(min(tick_pt, 11) * ex.DPI / 72, rel=0.01)
    assert alt == "slope = 1"


def test_smallest_text_is_measured_from_the_figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.set_title("big", fontsize=14)
    ax.tick_params(labelsize=6)
    _, _, _, px = ex.figure_png(fig)
    assert px == pytest.approx(6 * ex.DPI / 72, rel=0.01)


def test_render_errors_name_the_combination():
    def render(a):
        if a == 2:
            raise ZeroDivisionError("boom")
        return "<p>ok</p>"

    with pytest.raises(RuntimeError, match=r"'Demo': render\(a = 2\) raised ZeroDivisionError"):
        Explorer(render, {"a": [1, 2]}, title="Demo").to_html()


def test_render_result_kinds():
    class Svg:
        def _repr_svg_(self):
            return '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'

    assert "<svg" in ex.view_html(Svg())
    assert ex.view_html("<b>x</b>") == "<b>x</b>"
    assert "<svg" in ex.view_html(bl.draw_graph(bl.tensor(1.0, requires_grad=True)))
    with pytest.raises(TypeError, match="render returned int"):
        ex.view_html(3)


def test_display_follows_the_environment(monkeypatch):
    pytest.importorskip("ipywidgets")
    e = Explorer(lambda a: f"<p>{a}</p>", {"a": [1, 2]})
    monkeypatch.setenv(ex.STATIC_ENV, "1")
    bundle = e._repr_mimebundle_()
    assert (
        "bl-x" in bundle["text/html"] and "application/vnd.jupyter.widget-view+json" not in bundle
    )
    monkeypatch.delenv(ex.STATIC_ENV)
    bundle = e._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


# -- live widget --------------------------------------------------------------------------
def test_live_widget_renders_on_change_and_shows_errors():
    w = pytest.importorskip("ipywidgets")

    def render(depth, act):
        if depth == 16:
            raise ValueError("too deep")
        return f"<p>{act} x {depth}</p>"

    e = Explorer(render, {"depth": [2, 4, 16], "act": ["relu", "tanh"]}, value={"depth": 4})
    box = e.widget()
    assert e.widget() is box
    controls, view = box.children[0].children, box.children[1]
    slider, buttons = controls
    assert isinstance(slider, w.SelectionSlider) and isinstance(buttons, w.ToggleButtons)
    assert view.value == "<p>relu x 4</p>"
    buttons.value = "tanh"
    assert view.value == "<p>tanh x 4</p>"
    slider.value = 2
    assert view.value == "<p>tanh x 2</p>"
    slider.value = 16
    assert "render(depth = 16, act = tanh) raised ValueError: too deep" in view.value


def test_live_widget_start_error_fails_the_cell():
    pytest.importorskip("ipywidgets")

    def render(a):
        raise KeyError(a)

    with pytest.raises(KeyError):
        Explorer(render, {"a": [1]}).widget()


def test_figure_is_closed_after_rendering():
    import matplotlib.pyplot as plt

    def render(a):
        fig, ax = plt.subplots()
        ax.plot([0, a])
        return fig

    before = len(plt.get_fignums())
    Explorer(render, {"a": [1, 2, 3]}).to_html()
    assert len(plt.get_fignums()) == before


# -- the replay stepper -------------------------------------------------------------------
def _chain_trace():
    w = bl.tensor(0.9, requires_grad=True)
    w.name = "w"
    with bl.trace() as t:
        z = w**2
        z.name = "z"
        a = bl.sin(z)
        a.name = "a"
        L = a**3
        L.name = "L"
        L.backward()
    return t


def test_replay_reveals_one_gradient_per_step():
    t = _chain_trace()
    shown = [re.findall(r">grad ([^<]+)<", step.draw().svg) for step in t.replay()]
    # step k shows the gradients of the nodes reached so far: L, then a, then z and leaf w
    assert [len(s) for s in shown] == [1, 2, 4]
    assert shown[0] == ["1"]
    for earlier, later in zip(shown, shown[1:]):
        assert set(earlier) <= set(later)
    full = re.findall(r">grad ([^<]+)<", t.draw().svg)
    assert sorted(shown[-1]) == sorted(full)


def test_replay_frames_differ_from_step_to_step():
    from backprop_lab.instrument.widgets import replay_frames

    frames = replay_frames(_chain_trace())
    assert len(frames) == 3 and len(set(frames)) == 3


def test_draw_until_needs_a_trace():
    with pytest.raises(TypeError, match="needs a Trace"):
        bl.draw_graph(bl.tensor(1.0, requires_grad=True), until=0)
