"""The graph drawing is valid, self-contained SVG holding every node."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab import nn

SVG = "{http://www.w3.org/2000/svg}"


def texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    return [el.text or "" for el in root.iter(SVG + "text")]


def node_groups(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [g for g in root.iter(SVG + "g") if g.get("class") == "bl-node"]


def test_scalar_graph_svg_has_every_node_value_and_gradient():
    a = bl.tensor(2.0, requires_grad=True)
    b = bl.tensor(-3.0, requires_grad=True)
    a.name, b.name = "a", "b"
    with bl.trace() as t:
        d = a * b + a
        loss = bl.tanh(d) * d
        loss.backward()
    drawing = bl.draw_graph(t)
    svg = drawing._repr_svg_()
    words = texts(svg)
    for label in ["a", "b", "mul#0", "add#1", "tanh#2", "mul#3"]:
        assert label in words
    assert "grad 1" in words  # d loss / d loss
    assert f"grad {float(a.grad):.4g}" in words
    assert len(node_groups(svg)) == 6
    # self-contained: no scripts, no external references, no web fonts
    assert "<script" not in svg and "http://" not in svg.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert "@font-face" not in svg and "href=" not in svg


def test_edges_shaded_by_gradient_magnitude():
    x = bl.tensor(1.0, requires_grad=True)
    with bl.trace() as t:
        y = x * 1000.0 + x * 0.001
        y.backward()
    root = ET.fromstring(t.draw().svg)
    widths = [float(p.get("stroke-width")) for p in root.iter(SVG + "path") if p.get("stroke")]
    assert max(widths) > min(widths)


@pytest.mark.parametrize("width", [1, 3])
def test_mlp_graph_sizes_and_highlight(width):
    rng = np.random.default_rng(0)
    sizes = [4] + [5] * width + [3]
    model = nn.MLP(sizes, activation="tanh")
    x = bl.tensor(rng.normal(size=(6, 4)))
    with bl.trace() as t:
        bl.cross_entropy(model(x), rng.integers(0, 3, 6)).backward()
    n_ops = len(t.forward)
    n_params = len(model.parameters())
    step = t.replay()[2]
    svg = step.draw().svg
    groups = node_groups(svg)
    assert len(groups) == n_ops + n_params + 2  # + the input x and the labels
    highlighted = [
        g for g in groups if any(r.get("stroke") == "#f58518" for r in g.iter(SVG + "rect"))
    ]
    assert len(highlighted) == 1
    assert step.label in [el.text for el in highlighted[0].iter(SVG + "text")]


def test_draw_from_tensor_without_trace():
    w = bl.tensor([1.0, 2.0], requires_grad=True)
    w.name = "w"
    y = (bl.exp(w) * w).sum()
    y.name = "loss"
    svg = bl.draw_graph(y).svg
    words = texts(svg)
    assert "w" in words and "loss" in words
    assert len(node_groups(svg)) == 4  # w, exp, mul, sum


def test_forty_node_graph_is_valid_and_bounded():
    x = bl.tensor(0.3, requires_grad=True)
    with bl.trace() as t:
        h = x
        for _ in range(20):
            h = bl.sin(h) + h
        h.backward()
    svg = t.draw().svg
    assert len(node_groups(svg)) == 41
    root = ET.fromstring(svg)
    w, h_ = (float(v) for v in root.get("viewBox").split()[2:])
    assert w > 0 and h_ > 0


def test_empty_and_bad_inputs():
    with bl.trace() as t:
        pass
    assert "empty" in bl.draw_graph(t).svg
    with pytest.raises(TypeError):
        bl.draw_graph(42)


def test_replay_frames_and_widget():
    pytest.importorskip("ipywidgets")
    from backprop_lab.instrument.widgets import replay_frames

    x = bl.tensor([1.0, -1.0], requires_grad=True)
    with bl.trace() as t:
        (bl.relu(x) * x).sum().backward()
    frames = replay_frames(t)
    assert len(frames) == 3
    for f in frames:
        ET.fromstring(f"<div>{f.split('<div>', 2)[1].split('</div>')[0]}</div>")
    widget = bl.replay_widget(t)
    slider = widget.children[0].children[1]
    view = widget.children[1]
    slider.value = 2
    assert view.value == frames[2]


def test_plots_run(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from backprop_lab.instrument import plots

    model = nn.MLP([4, 6, 6, 2], activation="relu")
    rng = np.random.default_rng(0)
    x = bl.tensor(rng.normal(size=(10, 4)))
    with bl.trace() as t:
        bl.cross_entropy(model(x), rng.integers(0, 2, 10)).backward()
    norms = plots.grad_norms(model.named_parameters())
    assert set(norms) == {name for name, _ in model.named_parameters()}
    plots.plot_grad_norms(model.named_parameters())
    acts = plots.activations_from_trace(t)
    assert list(acts) == ["relu#2", "relu#5"]
    plots.plot_activation_histograms(acts)
    frac = plots.dead_relu_fraction(np.array([[0.0, 1.0], [0.0, 2.0]]))
    assert frac == 0.5
    plots.plot_dead_relus([{"a": 0.1, "b": 0.2}, {"a": 0.2, "b": 0.3}])
    hs = []
    h = bl.tensor(np.zeros(3))
    w = bl.tensor(np.eye(3) * 0.5, requires_grad=True)
    for _ in range(5):
        h = bl.tanh(h @ w + 1.0)
        hs.append(h)
    grads = plots.capture_grads(hs)
    hs[-1].sum().backward()
    assert all(g is not None for g in grads)
    ax = plots.plot_grad_norm_per_step(grads)
    ax.figure.savefig(tmp_path / "rnn.png")
    assert plots.saturation_fraction(np.array([0.99, 0.0]), "tanh") == 0.5


def test_replay_html_static_stepper():
    x = bl.tensor([1.0, -1.0], requires_grad=True)
    with bl.trace() as t:
        (bl.relu(x) * x).sum().backward()
    from backprop_lab.instrument.widgets import replay_html

    page = replay_html(t)._repr_html_()
    assert page.count('type="radio"') == 3 and "<script" not in page
    root = ET.fromstring(page)  # well-formed (XHTML-compatible) markup
    assert len(root.findall("input")) == 3
