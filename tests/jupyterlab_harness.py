"""A JupyterLab server and Chromium driver for tests (used by tests/test_jupyterlab.py).

``LabServer(folder)`` starts ``jupyter lab`` on a free local port with a random token, its
own settings/workspace/runtime folders (so nothing of the user's set-up leaks in), the
notebook windowing turned off (every cell is in the DOM), and ``window.jupyterapp``
exposed; ``stop()`` shuts the server down together with its kernels. ``LabPage`` wraps one
browser page on that server with the few actions the tests need, through JupyterLab's own
commands (``docmanager:open``, ``notebook:run-all-cells``) and its notebook model.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("BOOK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

NOTEBOOK_SETTINGS = {"windowingMode": "none"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """``jupyter lab`` serving ``folder`` on 127.0.0.1 (see the module docstring)."""

    def __init__(self, folder: Path, startup_timeout: float = 90.0) -> None:
        self.folder = Path(folder)
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.home = Path(tempfile.mkdtemp(prefix="bl-lab-home-"))
        settings = self.home / "settings" / "@jupyterlab" / "notebook-extension"
        settings.mkdir(parents=True)
        (settings / "tracker.jupyterlab-settings").write_text(json.dumps(NOTEBOOK_SETTINGS))
        env = dict(os.environ)
        env.pop("BACKPROP_LAB_STATIC", None)  # explorers are live in a kernel
        env.update(
            JUPYTERLAB_SETTINGS_DIR=str(self.home / "settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(self.home / "workspaces"),
            JUPYTER_RUNTIME_DIR=str(self.home / "runtime"),
            JUPYTER_CONFIG_DIR=str(self.home / "config"),
            IPYTHONDIR=str(self.home / "ipython"),
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
        )
        jupyter = Path(sys.executable).with_name("jupyter")
        cmd = [
            str(jupyter) if jupyter.exists() else "jupyter",
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.folder}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--ServerApp.disable_check_xsrf=False",
        ]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log_path = self.home / "lab.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.folder,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: the server and its kernels
        )
        self._wait_ready(startup_timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str) -> Any:
        req = urllib.request.Request(
            f"{self.url}/api/{path}", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with status {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                self.api("status")
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"jupyter lab did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Shut down the kernels and the server (SIGTERM to its process group, then KILL)."""
        if self.proc.poll() is None:
            try:
                for kernel in self.api("kernels"):
                    req = urllib.request.Request(
                        f"{self.url}/api/kernels/{kernel['id']}",
                        method="DELETE",
                        headers={"Authorization": f"token {self.token}"},
                    )
                    urllib.request.urlopen(req, timeout=10).close()
            except OSError:
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self._log.close()
        shutil.rmtree(self.home, ignore_errors=True)


# JavaScript run in the page; `app` is window.jupyterapp.
JS_OPEN = """async (path) => {
  const app = window.jupyterapp;
  const panel = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
  await panel.context.ready;
  await panel.sessionContext.ready;
  window.__bl = window.__bl || {};
  window.__bl[path] = panel;
  return {dirty: panel.context.model.dirty};
}"""

JS_RUN_ALL = """(path) => {
  const app = window.jupyterapp;
  const panel = window.__bl[path];
  app.shell.activateById(panel.id);
  panel.__runDone = false;
  app.commands.execute('notebook:run-all-cells').then(() => { panel.__runDone = true; });
  return true;
}"""

JS_STATE = """(path) => {
  const panel = window.__bl[path];
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.model.cells;
  let pending = 0;
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type === 'code' && panel.content.widgets[i].promptNode &&
        panel.content.widgets[i].promptNode.textContent.includes('*')) pending++;
  }
  return {status: kernel ? kernel.status : 'none', done: !!panel.__runDone, pending};
}"""

JS_OUTPUTS = """(path) => {
  const panel = window.__bl[path];
  const cells = panel.content.model.cells;
  const out = [];
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    out.push({index: i, id: c.id, tags: c.getMetadata('tags') || [],
              source: c.sharedModel.getSource(), outputs: c.outputs.toJSON(),
              executionCount: c.executionCount});
  }
  return out;
}"""


class LabPage:
    """One Chromium page with JupyterLab loaded from ``server``."""

    def __init__(self, browser: Any, server: LabServer, host_problems: list[str]) -> None:
        self.server = server
        self.context = browser.new_context(viewport={"width": 1366, "height": 900})
        self.problems = host_problems
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.goto(f"{server.url}/lab?token={server.token}", wait_until="load")
        self.page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started")
        self.page.evaluate("() => window.jupyterapp.started")
        self.page.wait_for_function(
            "() => window.jupyterapp.commands.hasCommand('notebook:run-all-cells')",
            timeout=60_000,
        )

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(self.server.url) or url.startswith(("data:", "blob:", "about:")):
            route.continue_()
        else:
            self.problems.append(f"request to another host: {url}")
            route.abort()

    def open(self, path: str) -> dict[str, Any]:
        return self.page.evaluate(JS_OPEN, path)

    def run_all(self, path: str) -> None:
        self.page.evaluate(JS_RUN_ALL, path)

    def state(self, path: str) -> dict[str, Any]:
        return self.page.evaluate(JS_STATE, path)

    def outputs(self, path: str) -> list[dict[str, Any]]:
        return self.page.evaluate(JS_OUTPUTS, path)

    def close(self) -> None:
        self.context.close()
