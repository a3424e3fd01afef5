"""The replay stepper: walk a recorded backward pass node by node (ipywidgets).

``replay_widget(trace)`` shows a slider (and a play button) over the backward steps; for
each step the graph with the current node highlighted and a table of
``upstream x local Jacobian = downstream`` with the recorded numbers. ipywidgets is imported
only when the function is called. The slider needs a running kernel; for the book's
static HTML, :func:`replay_html` gives the same stepper with no kernel and no JavaScript
(radio buttons and a CSS rule choose the visible step).
"""

from __future__ import annotations

from typing import Any

__all__ = ["replay_widget", "replay_frames", "replay_html", "ReplayHTML"]


def replay_frames(trace: Any) -> list[str]:
    """The HTML of every step (graph + numbers), as the widget shows them."""
    frames = []
    for step in trace.replay():
        svg = step.draw(title=f"backward step {step.step}: {step.label}").svg
        frames.append(f"<div>{svg}</div><div>{step._repr_html_()}</div>")
    return frames


def replay_widget(trace: Any) -> Any:
    """An ipywidgets stepper over ``trace.replay()``."""
    import ipywidgets as w

    frames = replay_frames(trace)
    if not frames:
        return w.HTML("<i>the trace holds no backward pass</i>")
    view = w.HTML(frames[0])
    slider = w.IntSlider(value=0, min=0, max=len(frames) - 1, description="step")
    play = w.Play(value=0, min=0, max=len(frames) - 1, interval=1200)
    w.jslink((play, "value"), (slider, "value"))

    def show(change: dict) -> None:
        view.value = frames[change["new"]]

    slider.observe(show, names="value")
    return w.VBox([w.HBox([play, slider]), view])


class ReplayHTML:
    """A self-contained HTML stepper (``_repr_html_``); ``html`` is the markup."""

    def __init__(self, html: str) -> None:
        self.html = html

    def _repr_html_(self) -> str:
        return self.html

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.html)


def replay_html(trace: Any) -> ReplayHTML:
    """The replay as static HTML: one radio button per backward step, no script."""
    import uuid

    frames = replay_frames(trace)
    uid = "blr" + uuid.uuid4().hex[:8]
    css = [f".{uid}-f{{display:none}}", f".{uid} label{{margin-right:6px;cursor:pointer}}"]
    radios = []
    for k in range(len(frames)):
        checked = ' checked="checked"' if k == 0 else ""
        radios.append(
            f'<input type="radio" name="{uid}" id="{uid}-{k}"{checked}/>'
            f'<label for="{uid}-{k}">step {k}</label>'
        )
        css.append(f"#{uid}-{k}:checked ~ .{uid}-frames .{uid}-f{k}{{display:block}}")
    body = "".join(f'<div class="{uid}-f {uid}-f{k}">{f}</div>' for k, f in enumerate(frames))
    html = (
        f'<div class="{uid}"><style>{"".join(css)}</style>{"".join(radios)}'
        f'<div class="{uid}-frames">{body}</div></div>'
    )
    return ReplayHTML(html)
