"""Chapter 2 helpers: the chain rule on L = sin(w^2)^3, factor by factor.

* :func:`forward_values` and :func:`chain_factors` give the forward values z, a, L and the
  three local derivatives evaluated at them;
* :func:`traced_chain` runs the same computation in the engine under :func:`backprop_lab.trace`
  (tensors named ``w``, ``z``, ``a``, ``L``) and :func:`replay_rows` /
  :func:`format_replay` turn the recorded backward pass into ``upstream x local =
  downstream`` rows;
* :func:`chain_rule_explorer` is the widget: a slider on w, the curve with its tangent, and
  the three factors with their product and a finite-difference derivative.

Matplotlib and ipywidgets are imported inside the functions that need them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import backprop_lab as bl

__all__ = [
    "loss",
    "forward_values",
    "chain_factors",
    "numerical_derivative",
    "traced_chain",
    "replay_rows",
    "format_replay",
    "chain_rule_explorer",
]


def loss(w: float) -> float:
    """L(w) = sin(w^2)^3 in plain NumPy."""
    return float(np.sin(w**2) ** 3)


def forward_values(w: float) -> dict[str, float]:
    """The forward pass: z = w^2, a = sin(z), L = a^3."""
    z = w**2
    a = float(np.sin(z))
    return {"w": float(w), "z": float(z), "a": a, "L": a**3}


def chain_factors(w: float) -> dict[str, float]:
    """The three local derivatives, each evaluated at its own forward value, and their
    product: dL/da = 3a^2, da/dz = cos(z), dz/dw = 2w, dL/dw."""
    v = forward_values(w)
    f = {"dL/da": 3 * v["a"] ** 2, "da/dz": float(np.cos(v["z"])), "dz/dw": 2 * v["w"]}
    f["dL/dw"] = f["dL/da"] * f["da/dz"] * f["dz/dw"]
    return f


def numerical_derivative(f: Any, w: float, h: float = 1e-6) -> float:
    """Centered difference (f(w + h) - f(w - h)) / (2h)."""
    return (f(w + h) - f(w - h)) / (2 * h)


def traced_chain(w: float) -> tuple[bl.Trace, bl.Tensor]:
    """Run L = sin(w^2)^3 forward and backward in the engine under a trace.

    Returns ``(trace, w_tensor)``; the tensors are named w, z, a, L so that the trace and
    its drawing use the book's names. ``w_tensor.grad`` holds dL/dw.
    """
    wt = bl.tensor(float(w), requires_grad=True)
    wt.name = "w"
    with bl.trace() as t:
        z = wt**2
        z.name = "z"
        a = bl.sin(z)
        a.name = "a"
        L = a**3
        L.name = "L"
        L.backward()
    return t, wt


def _scalar(x: Any) -> float:
    return float(np.asarray(bl.to_numpy(x)).reshape(-1)[0])


def replay_rows(trace: bl.Trace) -> list[dict[str, Any]]:
    """One row per (node, input that receives a gradient) of a recorded backward pass of a
    scalar computation: node, op, input, the input's forward value, upstream, local
    derivative (rebuilt from the op's VJP rule) and downstream (what the engine sent)."""
    rows = []
    for step in trace.replay():
        for i, g in enumerate(step.downstream):
            if g is None:
                continue
            rows.append(
                {
                    "step": step.step,
                    "node": step.label,
                    "op": step.op.name,
                    "input": step.input_labels[i],
                    "input_value": _scalar(step.inputs[i]),
                    "upstream": _scalar(step.upstream),
                    "local": _scalar(step.local_jacobian(i)),
                    "downstream": _scalar(g),
                }
            )
    return rows


def format_replay(rows: list[dict[str, Any]], digits: int = 4) -> str:
    """A text table of :func:`replay_rows`: upstream x local = downstream per step."""
    head = (f"{'step':>4}  {'node':<5} {'op':<4} {'input':<6} {'at value':>9}  "
            f"{'upstream':>9} x {'local':>9} = {'downstream':>10}")  # fmt: skip
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['step']:>4}  {r['node']:<5} {r['op']:<4} {r['input']:<6} "
            f"{r['input_value']:>9.{digits}f}  {r['upstream']:>9.{digits}f} x "
            f"{r['local']:>9.{digits}f} = {r['downstream']:>10.{digits}f}"
        )
    return "\n".join(lines)


def _explorer_figure(w: float) -> Any:
    import matplotlib.pyplot as plt

    v = forward_values(w)
    f = chain_factors(w)
    fd = numerical_derivative(loss, w)
    ws = np.linspace(-2.2, 2.2, 400)
    Ls = np.sin(ws**2) ** 3

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(9.5, 3.3))
    a0.plot(ws, Ls, color="tab:blue", label=r"$L = \sin(w^2)^3$")
    t = np.linspace(-0.35, 0.35, 2)
    a0.plot(w + t, v["L"] + f["dL/dw"] * t, color="tab:orange", lw=2,
            label=f"tangent, slope {f['dL/dw']:+.3f}")  # fmt: skip
    a0.plot([w], [v["L"]], "ko", ms=4)
    a0.set_ylim(-1.3, 1.3)
    a0.set_xlabel("w")
    a0.set_ylabel("L")
    a0.set_title(f"w = {w:+.2f}: z = {v['z']:.3f}, a = {v['a']:+.3f}, L = {v['L']:+.3f}",
                 fontsize=9)  # fmt: skip
    a0.legend(fontsize=7.5, loc="lower left")

    names = ["dL/da\n= 3a²", "da/dz\n= cos z", "dz/dw\n= 2w", "product", "finite\ndifference"]
    vals = [f["dL/da"], f["da/dz"], f["dz/dw"], f["dL/dw"], fd]
    colors = ["tab:gray"] * 3 + ["tab:orange", "tab:green"]
    bars = a1.bar(range(5), vals, color=colors)
    for b, val in zip(bars, vals):
        a1.annotate(f"{val:+.3f}", (b.get_x() + b.get_width() / 2, val), ha="center",
                    va="bottom" if val >= 0 else "top", fontsize=8)  # fmt: skip
    a1.axhline(0, color="k", lw=0.6)
    a1.set_xticks(range(5), names, fontsize=8)
    lim = max(4.5, 1.25 * max(abs(x) for x in vals))
    a1.set_ylim(-lim, lim)
    a1.set_title("three local factors and their product", fontsize=9)
    fig.tight_layout()
    return fig


def chain_rule_explorer(w0: float = 0.9) -> Any:
    """Widget: a slider on w; left, L(w) with its tangent; right, the three factors of the
    chain rule at the forward values, their product, and the centered difference.

    The default view is drawn when the widget is created (for the static book)."""
    import ipywidgets as wd
    import matplotlib.pyplot as plt
    from IPython.display import display

    slider = wd.FloatSlider(value=w0, min=-2.0, max=2.0, step=0.05, description="w")
    out = wd.Output()

    def draw(*_: Any) -> None:
        with out:
            out.clear_output(wait=True)
            fig = _explorer_figure(slider.value)
            display(fig)
            plt.close(fig)

    slider.observe(draw, names="value")
    draw()
    return wd.VBox([slider, out])
