"""The chapters as a student meets them in JupyterLab (``make browser``; marker ``browser``).

``test_chapters_run_in_jupyterlab`` copies notebooks/ to a temporary folder, starts JupyterLab
on a free local port (tests/jupyterlab_harness.py) and drives it with Debian's Chromium.
For every chapter it checks that

* the notebook opens unmodified (scripts/normalize_notebooks.py stores it the way JupyterLab
  would save it);
* Run All finishes, the kernel goes idle, and no cell shows an error;
* every explorer (a cell whose output is a live widget) answers a moved control (a slider by
  the keyboard, else a toggle button or a drop-down) with a new output;
* the chapter's first exercise gives feedback for a wrong answer (the student release's
  stub) and different, error-free feedback for the right one.

Several chapters run at once (``LAB_TEST_JOBS``, default 2 on 2 cores); the test prints the
time per chapter and in total, and shuts down every kernel and the server it started.

``test_notebooks_are_normalised`` (no browser) fails when a notebook in notebooks/ differs
from what scripts/normalize_notebooks.py would store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
CHAPTERS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
RUN_TIMEOUT = float(os.environ.get("LAB_TEST_RUN_TIMEOUT", "180"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def test_notebooks_are_normalised():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not notebooks:
        pytest.skip("notebooks/ holds no notebook yet")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "normalize_notebooks.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, (
        "notebooks not stored the way JupyterLab saves them (they would open marked "
        "modified); run `.venv/bin/python scripts/normalize_notebooks.py`:\n"
        + result.stdout
        + result.stderr
    )


def _normalizer():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "normalize_notebooks", ROOT / "scripts" / "normalize_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_normaliser_does_what_jupyterlab_does():
    import nbformat

    norm = _normalizer()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "x"}
    nb.metadata["widgets"] = {"state": {"m": {"max": 2.0, "step": 0.1, "n": [1.0, 2.5]}}}
    nb.cells.append(nbformat.v4.new_markdown_cell(":::{exercise}\n:label: ex-4-2\n\nDo it.\n:::"))
    nb.cells.append(nbformat.v4.new_code_cell("x = 1.0"))
    out = norm.normalize(nb, "Python 3 (ipykernel)")
    assert out.metadata.kernelspec == {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    state = out.metadata.widgets["state"]["m"]
    assert state == {"max": 2, "step": 0.1, "n": [1, 2.5]}
    assert isinstance(state["max"], int) and isinstance(state["step"], float)
    assert ":label: ex-4-2\n:enumerator: 4.2\n" in out.cells[0].source
    assert out.cells[1].source == "x = 1.0"  # code is never touched
    again = norm.normalize(out, "Python 3 (ipykernel)")
    assert nbformat.writes(again) == nbformat.writes(out)  # idempotent


def test_normaliser_check_mode_reports_without_writing(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "p"}
    path = tmp_path / "01-x.ipynb"
    nbformat.write(nb, path)
    before = path.read_text()
    norm = _normalizer()
    assert norm.main(["--check", str(path)]) == 1
    assert path.read_text() == before
    assert norm.main([str(path)]) == 0
    assert norm.main(["--check", str(path)]) == 0


# --------------------------------------------------------------------------------------
# JavaScript helpers (run in the JupyterLab page; window.__bl[path] is the NotebookPanel)
# --------------------------------------------------------------------------------------
JS_DIRTY = "(path) => window.__bl[path].context.model.dirty"

JS_MARK_CELL = """([path, index]) => {
  const panel = window.__bl[path];
  window.jupyterapp.shell.activateById(panel.id);
  const node = panel.content.widgets[index].node;
  node.setAttribute('data-bl-cell', path + ':' + index);
  node.scrollIntoView({block: 'center'});
  return true;
}"""

JS_SIGNATURE = """(node) => Array.from(node.querySelectorAll(
    '.widget-output, .bl-x-live-view, .jp-OutputArea-output img'))
  .map(e => e.innerHTML.length + ':' + (e.querySelector('img') ?
       e.querySelector('img').getAttribute('src').slice(-64) : e.textContent.slice(0, 200)))
  .join('|')"""

JS_RUN_CELL = """async ([path, index, source]) => {
  const app = window.jupyterapp;
  const panel = window.__bl[path];
  app.shell.activateById(panel.id);
  const cell = panel.content.model.cells.get(index);
  if (source !== null) cell.sharedModel.setSource(source);
  panel.content.activeCellIndex = index;
  panel.content.deselectAll();
  await app.commands.execute('notebook:run-cell');
  return cell.outputs.toJSON();
}"""

JS_CLOSE = """async (path) => {
  const panel = window.__bl[path];
  try { await panel.sessionContext.shutdown(); } catch (e) {}
  panel.context.model.dirty = false;
  panel.dispose();
  delete window.__bl[path];
  return true;
}"""


def output_text(outputs: list[dict]) -> str:
    parts = []
    for out in outputs:
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}")
        else:
            data = out.get("data", {})
            parts.append(str(data.get("text/plain", "")))
    return "".join(parts)


def errors_in(cells: list[dict]) -> list[str]:
    found = []
    for cell in cells:
        for out in cell["outputs"]:
            if out.get("output_type") == "error":
                found.append(
                    f"cell {cell['index']} ({cell['id']}): {out.get('ename')}: "
                    f"{str(out.get('evalue'))[:200]}"
                )
    return found


# --------------------------------------------------------------------------------------
# One chapter's checks after Run All
# --------------------------------------------------------------------------------------
def move_a_control(lab, path: str, cell: dict) -> str | None:
    """Move one control of the explorer in ``cell``; None if its output changed, else why."""
    page = lab.page
    page.evaluate(JS_MARK_CELL, [path, cell["index"]])
    node = page.locator(f'[data-bl-cell="{path}:{cell["index"]}"]')
    before = node.evaluate(JS_SIGNATURE)
    handle = node.locator(".noUi-handle").first
    buttons = node.locator(".widget-toggle-button:not(.mod-active)").first
    select = node.locator(".widget-dropdown select").first
    if handle.count():
        handle.focus()
        # A slider that starts at its last value (chapter 9's depth: 10 or 50, 50 first)
        # does not move to the right: step the other way there.
        now, top = (handle.get_attribute(a) for a in ("aria-valuenow", "aria-valuemax"))
        at_top = now is not None and top is not None and float(now) >= float(top)
        key = "ArrowLeft" if at_top else "ArrowRight"
        page.keyboard.press(key)
        page.keyboard.press(key)
        how = f"slider (keyboard, {key})"
    elif buttons.count():
        buttons.click()
        how = "toggle button"
    elif select.count():
        options = select.locator("option").all_inner_texts()
        current = select.evaluate("s => s.value")
        other = next((o for o in options if o != current), None)
        if other is None:
            return "its only control has one value"
        select.select_option(label=other)
        how = "drop-down"
    else:
        return "no slider, toggle button or drop-down found"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if node.evaluate(JS_SIGNATURE) != before:
            return None
        page.wait_for_timeout(250)
    return f"moving its {how} did not change the output within 20 s"


def exercise_feedback(lab, path: str, cells: list[dict]) -> tuple[str | None, str | None]:
    """Run the first exercise with the student stub, then the solution: (exercise id or
    None when the chapter has none, None if the feedback changed as it should, else why)."""
    from backprop_lab.grading.release import strip_solution

    answers = [c for c in cells if "answer" in c["tags"] and str(c["id"]).endswith("-answer")]
    if not answers:
        return None, None
    answer = answers[0]
    base = answer["id"][: -len("-answer")]
    check = next((c for c in cells if c["id"] == f"{base}-check"), None)
    if check is None:
        return base, f"{answer['id']} has no check cell {base}-check"
    ex_id = base.removeprefix("ex-").replace("-", ".")
    stub = strip_solution(answer["source"], ex_id, answer["id"])
    lab.page.evaluate(JS_RUN_CELL, [path, answer["index"], stub])
    wrong = output_text(lab.page.evaluate(JS_RUN_CELL, [path, check["index"], None]))
    lab.page.evaluate(JS_RUN_CELL, [path, answer["index"], answer["source"]])
    right_outputs = lab.page.evaluate(JS_RUN_CELL, [path, check["index"], None])
    right = output_text(right_outputs)
    if any(o.get("output_type") == "error" for o in right_outputs):
        return ex_id, f"exercise {ex_id}: the solution's check shows an error: {right[:300]}"
    if wrong == right:
        return (
            ex_id,
            f"exercise {ex_id}: same feedback for the stub and the solution: {right[:200]}",
        )
    if ex_id not in wrong:
        return ex_id, f"exercise {ex_id}: feedback for the stub does not name it: {wrong[:200]}"
    return ex_id, None


@pytest.mark.browser
def test_chapters_run_in_jupyterlab(tmp_path):
    if not CHAPTERS:
        pytest.skip("notebooks/ holds no chapter yet")
    playwright_api = pytest.importorskip("playwright.sync_api")
    from jupyterlab_harness import CHROMIUM, CHROMIUM_ARGS, LabPage, LabServer

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run scripts/setup_browser.py"
    for name in CHAPTERS:
        shutil.copy2(ROOT / "notebooks" / name, tmp_path / name)
    jobs = int(os.environ.get("LAB_TEST_JOBS", "2"))
    start = time.monotonic()
    problems: list[str] = []
    timings: dict[str, float] = {}
    server = LabServer(tmp_path)
    try:
        with playwright_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                lab = LabPage(browser, server, problems)
                queue = list(CHAPTERS)
                running: dict[str, float] = {}
                while queue or running:
                    while queue and len(running) < jobs:
                        path = queue.pop(0)
                        lab.open(path)
                        lab.page.wait_for_timeout(1000)  # let the session settle
                        if lab.page.evaluate(JS_DIRTY, path):
                            problems.append(
                                f"{path}: opens marked modified (run normalize_notebooks.py)"
                            )
                        lab.run_all(path)
                        running[path] = time.monotonic()
                    lab.page.wait_for_timeout(500)
                    for path, began in list(running.items()):
                        state = lab.state(path)
                        finished = state["done"] and state["status"] == "idle"
                        if not finished and time.monotonic() - began < RUN_TIMEOUT:
                            continue
                        del running[path]
                        timings[path] = time.monotonic() - began
                        if not finished:
                            problems.append(
                                f"{path}: Run All did not finish in {RUN_TIMEOUT:.0f} s"
                            )
                            lab.page.evaluate(JS_CLOSE, path)
                            continue
                        cells = lab.outputs(path)
                        problems += [f"{path}: {e}" for e in errors_in(cells)]
                        explorers = [
                            c
                            for c in cells
                            if any(WIDGET_VIEW in o.get("data", {}) for o in c["outputs"])
                        ]
                        for cell in explorers:
                            why = move_a_control(lab, path, cell)
                            if why:
                                problems.append(f"{path}: explorer in cell {cell['index']}: {why}")
                        exercise, why = exercise_feedback(lab, path, cells)
                        if why:
                            problems.append(f"{path}: {why}")
                        print(
                            f"jupyterlab: {path}: ran in {timings[path]:.1f} s, "
                            f"{len(explorers)} explorer(s) moved, exercise {exercise or '-'} "
                            "wrong then right",
                            flush=True,
                        )
                        lab.page.evaluate(JS_CLOSE, path)
                lab.close()
            finally:
                browser.close()
    finally:
        server.stop()
    total = time.monotonic() - start
    print(f"jupyterlab: {len(CHAPTERS)} chapters in {total:.1f} s ({jobs} at a time)")
    assert not problems, "\n".join(problems)
