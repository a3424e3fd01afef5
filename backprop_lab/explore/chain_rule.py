"""Chapter 2 (the chain rule): L = sin(w^2)^3, step by step, in the engine.

* :func:`loss` and :func:`forward_values` give the forward pass z = w^2, a = sin z, L = a^3;
* :func:`traced_chain` runs the same computation in the engine under :func:`backprop_lab.trace`
  (tensors named ``w``, ``z``, ``a``, ``L``), and :func:`replay_rows` /
  :func:`format_replay` turn the recorded backward pass into ``upstream x local =
  downstream`` rows, each local derivative rebuilt from the op's own backward rule;
* :func:`chain_figure` / :func:`chain_rule_explorer`: a slider on w, the curve with its
  tangent, and the three local factors the engine used, their product and a centered
  difference (:mod:`backprop_lab.numdiff`).

The local factors always come from the engine's replay, never from a formula written here.
Matplotlib is imported inside the functions that draw.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import backprop_lab as bl
from backprop_lab import numdiff

__all__ = [
    "loss",
    "forward_values",
    "traced_chain",
    "replay_rows",
    "format_replay",
    "chain_figure",
    "chain_rule_explorer",
    "W_GRID",
]


def loss(w: float) -> float:
    """L(w) = sin(w^2)^3 in plain NumPy."""
    return float(np.sin(w**2) ** 3)


def forward_values(w: float) -> dict[str, float]:
    """The forward pass: z = w^2, a = sin(z), L = a^3."""
    z = w**2
    a = float(np.sin(z))
    return {"w": float(w), "z": float(z), "a": a, "L": a**3}


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


#: The values of w on the explorer's slider (L is even in w, so w >= 0 shows everything).
W_GRID = [round(0.05 * k, 2) for k in range(41)]


def chain_figure(w: float) -> Any:
    """Left: L(w) with the tangent at w. Right: the three local factors the engine's
    backward pass used at w (from :func:`replay_rows`), their product (``w.grad``) and a
    centered finite difference of L."""
    from matplotlib.figure import Figure

    v = forward_values(w)
    t, wt = traced_chain(w)
    rows = replay_rows(t)
    factors = [r["local"] for r in rows]  # dL/da, da/dz, dz/dw, in backward order
    slope = float(wt.grad)
    fd = numdiff.derivative(loss, w, h=1e-6)
    ws = np.linspace(-0.1, 2.2, 300)

    fig = Figure(figsize=(6.5, 3.3))
    a0, a1 = fig.subplots(1, 2)
    a0.plot(ws, np.sin(ws**2) ** 3, color="#4c78a8", label=r"$L = \sin(w^2)^3$")
    dt = np.linspace(-0.3, 0.3, 2)
    a0.plot(w + dt, v["L"] + slope * dt, color="#f58518", lw=2, label="tangent")
    a0.plot([w], [v["L"]], "ko", ms=3)
    a0.set_ylim(-1.3, 1.3)
    a0.set_xlabel("w", fontsize=9)
    a0.set_ylabel("L", fontsize=9)
    a0.set_title(f"w = {w:.2f}: z = {v['z']:.3f}, a = {v['a']:+.3f}", fontsize=9)
    a0.legend(fontsize=8, loc="lower left")
    a0.tick_params(labelsize=8)

    names = ["dL/da", "da/dz", "dz/dw", "product", "finite\ndiff."]
    vals = [*factors, slope, fd]
    colors = ["#9d9d9d"] * 3 + ["#f58518", "#54a24b"]
    bars = a1.bar(range(5), vals, color=colors)
    for b, val in zip(bars, vals):
        a1.annotate(f"{val:+.2f}", (b.get_x() + b.get_width() / 2, val), ha="center",
                    va="bottom" if val >= 0 else "top", fontsize=8)  # fmt: skip
    a1.axhline(0, color="k", lw=0.6)
    a1.set_xticks(range(5), names, fontsize=8)
    lim = max(4.5, 1.3 * max(abs(x) for x in vals))
    a1.set_ylim(-lim, lim)
    a1.set_title("local factors from the backward pass", fontsize=9)
    a1.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def chain_rule_explorer(w0: float = 0.9) -> Any:
    """Explorer: a slider on w over :data:`W_GRID`; see :func:`chain_figure`."""
    from backprop_lab.explorer import Explorer

    start = min(W_GRID, key=lambda v: abs(v - w0))
    return Explorer(
        lambda w: chain_figure(w),
        controls={"w": W_GRID},
        value={"w": start},
        title="The chain rule at w: three local factors and their product",
    )
