"""Who runs it: nbval in long-lived worker processes, and every process the grader starts.

:class:`Nbval` runs ``pytest --nbval-lax`` on a submission's merged notebooks in a
:class:`WorkerPool` worker (``backprop_lab.grading.worker``), or in a process of its own when no
worker will serve. :class:`Procs` keeps the other processes the grader starts. After Ctrl-C
(the ``stop`` event) nothing new starts and :class:`Interrupted` is raised in grading threads.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from backprop_lab.grading import sandbox


class Interrupted(Exception):
    """Raised in a grading thread once Ctrl-C has stopped the run."""


class Nbval:
    """Runs nbval for one submission at a time (thread-safe)."""

    def __init__(self, prefix, env, cell_timeout, workers, procs, stop):
        self.prefix, self.env, self.cell_timeout = prefix, env, cell_timeout
        self.workers, self.procs, self.stop = workers, procs, stop

    def args(self, files: list[Path], workdir: Path, junit: Path) -> list[str]:
        ini = workdir / "pytest.ini"
        ini.write_text("[pytest]\naddopts =\n")
        return [
            "-p", "nbval.plugin", "-p", "no:cacheprovider", "--nbval-lax",
            "--nbval-kernel-name", sandbox.KERNEL_NAME,
            "--nbval-cell-timeout", str(self.cell_timeout),
            "--nbval-kernel-startup-timeout", "60",
            "-c", str(ini), "--rootdir", str(workdir), "--junitxml", str(junit),
            "-q", "--no-header", "-o", "junit_logging=no", *map(str, files),
        ]  # fmt: skip

    def run(self, files: list[Path], workdir: Path, junit: Path, ncells: int):
        """Run nbval on ``files``: (return code, log text, killed for overrunning)."""
        args = self.args(files, workdir, junit)
        limit = 90 + ncells * (self.cell_timeout + 10)
        log = workdir / "pytest.log"
        for _attempt in range(2):
            if self.stop.is_set():
                raise Interrupted
            worker = self.workers.get()
            rc = worker.request(args, log, limit) if worker else None
            if self.stop.is_set():
                raise Interrupted
            if worker is not None and rc is not None:
                self.workers.put(worker)
                return rc, read(log), False
            if worker is not None:
                worker.kill()
                if worker.timed_out:
                    return -9, read(log), True
        # no worker would serve: one pytest process for this submission
        cmd = [*self.prefix, sys.executable, "-m", "backprop_lab.grading.run_nbval", *args]
        rc, out, _, killed = self.procs.run(
            cmd,
            limit,
            env=self.env,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if self.stop.is_set():
            raise Interrupted
        return rc, out, killed


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


class Worker:
    """One ``backprop_lab.grading.worker`` process and its line protocol."""

    def __init__(self, cmd, env, cwd):
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.buf = b""
        self.timed_out = False
        if self._line(120) is None:
            self.kill()
            raise RuntimeError("grading worker did not start")

    def _line(self, timeout: float):
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.timed_out = True
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None  # the worker died
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def request(self, args, log: Path, timeout: float):
        """pytest's return code, or None when the worker died or overran ``timeout``."""
        try:
            msg = json.dumps({"args": args, "log": str(log)}) + "\n"
            self.proc.stdin.write(msg.encode())
            self.proc.stdin.flush()
        except OSError:
            return None
        reply = self._line(timeout)
        return None if reply is None else int(reply.get("rc", -1))

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()


class WorkerPool:
    """Idle workers; a thread takes one (or starts one) per submission and gives it back."""

    def __init__(self, cmd, env, cwd, stop: threading.Event | None = None):
        self.cmd, self.env, self.cwd = cmd, env, cwd
        self.idle: list[Worker] = []
        self.all: list[Worker] = []
        self.lock = threading.Lock()
        self.stop = stop or threading.Event()

    def get(self):
        with self.lock:
            if self.stop.is_set():
                return None
            if self.idle:
                return self.idle.pop()
        try:
            worker = Worker(self.cmd, self.env, self.cwd)
        except (OSError, RuntimeError):
            return None
        with self.lock:
            self.all.append(worker)
            if self.stop.is_set():  # Ctrl-C came while it started
                worker.kill()
                return None
        return worker

    def kill_all(self) -> None:
        with self.lock:
            workers = list(self.all)
        for worker in workers:
            worker.kill()

    def put(self, worker) -> None:
        with self.lock:
            self.idle.append(worker)

    def close(self) -> None:
        for worker in self.all:
            if self.stop.is_set():
                worker.kill()
            else:
                worker.close()


class Procs:
    """The processes the grader started itself (instructor runs, one-off nbval runs), each
    in its own session, so that Ctrl-C can kill them and everything they started."""

    def __init__(self):
        self.lock = threading.Lock()
        self.live: set = set()

    def start(self, cmd, **kwargs):
        proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
        with self.lock:
            self.live.add(proc)
        return proc

    def forget(self, proc) -> None:
        with self.lock:
            self.live.discard(proc)

    def run(self, cmd, timeout: float, **kwargs) -> tuple[int, str | None, str | None, bool]:
        """Start ``cmd`` (see :meth:`start`), wait at most ``timeout`` seconds, kill it and
        everything it started when it runs over. Returns (return code, stdout, stderr,
        timed out)."""
        proc = self.start(cmd, **kwargs)
        try:
            out, err = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            self.kill(proc)
            out, err = proc.communicate()
            timed_out = True
        finally:
            self.forget(proc)
        return proc.returncode, out, err, timed_out

    @staticmethod
    def kill(proc) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass

    def kill_all(self) -> None:
        with self.lock:
            procs = list(self.live)
        for proc in procs:
            self.kill(proc)
