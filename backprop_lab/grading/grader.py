"""``backprop-lab grade``: grade submissions with nbval against the pristine instructor notebooks.

For each source notebook the instructor's notebook is first run under the secret seed (the
expected outputs; cached per notebook + seed). For each submission only the answer cells are
taken and put into that run; the result is executed by ``pytest --nbval-lax`` in a sandboxed
kernel (see :mod:`backprop_lab.grading.sandbox`), one pytest process per submission, several
submissions at once. nbval compares the check cells' printouts in the grader's process; the
JUnit XML maps each ``Cell N`` back to its cell id and exercise.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from backprop_lab.grading import notebook as nbu
from backprop_lab.grading import report, sandbox
from backprop_lab.grading.atomic import write_atomic

SECRET_ENV = "BACKPROP_LAB_SECRET_SEED"
GRADEBOOK_FIELDS = report.GRADEBOOK_FIELDS
INTERRUPTED = "NOT GRADED: interrupted (Ctrl-C) before this submission was graded"
# ANSI colour codes; pytest's JUnit XML writes the escape character as the text "#x1B"
_ANSI = re.compile(r"(?:\x1b|#x1B)\[[0-9;]*[A-Za-z]")


@dataclass
class Options:
    source: Path
    out: Path
    seed: int | None = None
    jobs: int = 0  # 0: two per core (kernel start-up waits as much as it computes)
    cell_timeout: float = 30.0
    memory_mb: int = 4096
    cpu_seconds: int = 120
    cpus: float = 1.0  # CPU budget of one submission (cgroup v2 only)
    hide: list = field(default_factory=list)
    progress: bool = True
    shard: tuple[int, int] | None = None  # (K, N): grade the students with shard_of == K


class GradeError(Exception):
    """A run that cannot go ahead as asked (a usage error); the message says what to do."""


class _Interrupted(Exception):
    """Raised in a grading thread once Ctrl-C has stopped the run."""


@dataclass
class Source:
    key: str  # file name, e.g. 05-backprop.ipynb
    path: Path
    nb: object
    exercises: dict
    expected: object = None  # the instructor notebook run under the secret seed
    error: str | None = None


# --------------------------------------------------------------------------- helpers


def _clean(text: str) -> str:
    return _ANSI.sub("", text or "")


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


SUSPICIOUS_NAMES = {
    "builtins",
    "__builtins__",
    "exec",
    "eval",
    "compile",
    "open",
    "__import__",
    "importlib",
    "os",
    "subprocess",
    "ctypes",
    "gc",
    "inspect",
    "globals",
    "setattr",
    "signal",
    "socket",
    "multiprocessing",
    "sys",
    "shutil",
    "pathlib",
    "io",
}


def scan_answer(source: str) -> list[str]:
    """Things in an answer cell an instructor may want to read (never changes the score)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [f"does not parse as Python ({exc.msg}, line {exc.lineno})"]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in SUSPICIOUS_NAMES:
            found.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for m in mods:
                if m and m.split(".")[0] in SUSPICIOUS_NAMES | {"backprop_lab"}:
                    found.add(f"import {m}")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, (ast.Name, ast.Attribute)):
                    base = ast.unparse(t.value)
                    if base.split(".")[0] in {
                        "np",
                        "numpy",
                        "backprop_lab",
                        "checks",
                        "sys",
                        "builtins",
                        "bl",
                    }:
                        found.add(f"assigns {ast.unparse(t)}")
    return sorted(found)


# --------------------------------------------------------------------------- the grader


class Grader:
    def __init__(self, opts: Options):
        self.opts = opts
        self.out = Path(opts.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.private = _private_dir(self.out / ".private")
        self.seed = self._seed()
        self.probe = sandbox.probe()
        self.jobs = opts.jobs or 2 * (os.cpu_count() or 1)
        self.lock = threading.Lock()
        self.sources: dict[str, Source] = {}
        self.hide_notes: list[str] = []
        self.source_digest = ""
        self.cgroup_note = ""
        self.cgroup: str | None = None
        self.stop = threading.Event()  # set by Ctrl-C
        self.procs = _Procs()  # every process the grader starts, to kill on Ctrl-C

    # ---- setup

    def _seed(self) -> int:
        if self.opts.seed is not None:
            return int(self.opts.seed)
        if os.environ.get(SECRET_ENV, "").strip():
            return int(os.environ[SECRET_ENV])
        stored = self.private / "seed"
        if stored.exists():
            return int(stored.read_text().strip())
        value = secrets.randbelow(2**62)
        write_atomic(stored, f"{value}\n", mode=0o600)
        return value

    def _needed_paths(self) -> list[str]:
        import numpy

        import backprop_lab

        paths = [
            sys.prefix,
            sys.base_prefix,
            os.path.dirname(os.path.dirname(os.__file__)),
            os.path.dirname(backprop_lab.__file__),
            os.path.dirname(numpy.__file__),
            os.path.realpath(sys.executable),
        ]
        return [os.path.realpath(p) for p in paths]

    def _hide_list(self, submissions: list[Path]) -> list[str]:
        wanted = [self.opts.source, self.out, *self.opts.hide]
        wanted += [p.parent if p.is_file() else p for p in submissions]
        wanted += [p.parent.parent for p in submissions if p.is_file()]
        needed = self._needed_paths()
        hide = []
        for p in wanted:
            p = os.path.realpath(p)
            if not os.path.isdir(p) or p in hide or p == "/":
                continue
            if any(n == p or n.startswith(p + os.sep) for n in needed):
                self.hide_notes.append(
                    f"cannot hide {p} from the kernel (it holds the Python environment)"
                )
                continue
            hide.append(p)
        return hide

    def _budget(self) -> None:
        """A cgroup per kernel (memory and CPU for the submission as a whole) where possible."""
        self.cgroup, why = sandbox.cgroup_parent(str(os.getpid()))
        if self.cgroup is None:
            self.cgroup_note = (
                f"no memory/CPU budget per submission as a whole ({why}), only limits "
                "per kernel process (address space --memory-mb, CPU time --cpu-seconds): a "
                "submission that forks can use more"
            )

    def _write_kernel(self, submissions: list[Path]) -> None:
        isolate = bool(self.probe["pidns"] and self.probe["mountns"])
        self._budget()
        config = {
            "seed": self.seed,
            "memory_mb": self.opts.memory_mb,
            "cpu_seconds": self.opts.cpu_seconds,
            "cgroup": self.cgroup,
            "cpus": self.opts.cpus,
            "hide": self._hide_list(submissions) if isolate else [],
            "isolate": isolate,
            "switch_uid": bool(self.probe["uid"]),
            "scratch": str(self.private / "scratch"),  # kernel homes when not isolated
        }
        cfg_path = self.private / "sandbox.json"
        write_atomic(cfg_path, json.dumps(config, indent=1), mode=0o600)
        spec_dir = self.private / "jupyter" / "kernels" / sandbox.KERNEL_NAME
        spec = {
            "argv": sandbox.kernel_argv(str(cfg_path), self.probe),
            "display_name": "backprop-lab grading sandbox",
            "language": "python",
            "interrupt_mode": "message",
        }
        write_atomic(spec_dir / "kernel.json", json.dumps(spec, indent=1), mode=0o600)
        self.env = {
            **os.environ,
            "JUPYTER_PATH": str(self.private / "jupyter"),
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.env.pop(SECRET_ENV, None)
        budget = [self.cgroup_note] if self.cgroup_note else []
        self.isolation = sandbox.isolation_label(self.probe, self.hide_notes + budget)

    def _prefix(self) -> list[str]:
        pre = sandbox.network_prefix(self.probe)
        if pre and self.probe.get("pidns"):
            # the whole pytest run in its own PID namespace: killing it kills every kernel
            pre = [pre[0], "--pid", "--fork", "--kill-child", *pre[1:]]
        return pre

    def load_sources(self) -> None:
        paths = nbu.find_notebooks(self.opts.source)
        if not paths:
            raise nbu.NotebookError(f"no notebooks in {self.opts.source}")
        digest = hashlib.sha256()
        for path in paths:
            nb = nbu.read(path)
            ex = nbu.exercises(nb)
            self.sources[path.name] = Source(path.name, path, nb, ex)
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        self.source_digest = digest.hexdigest()[:24]

    @staticmethod
    def instrument(nb):
        """The instructor notebook as graded: check cells compared, an audit cell at the end."""
        nb = copy.deepcopy(nb)
        for cell in nb.cells:
            if cell.get("cell_type") != "code":
                continue
            tags = [t for t in nbu.tags(cell) if t != nbu.COMPARE_TAG]
            if nbu.is_check(cell):
                tags.append(nbu.COMPARE_TAG)  # only check cells are compared when grading
            cell.metadata["tags"] = tags
        audit = nbformat.v4.new_code_cell(
            "from backprop_lab.grading import guard as _bl_guard\n_bl_guard.report()",
            id=nbu.AUDIT_ID,
        )
        audit.metadata["tags"] = [nbu.COMPARE_TAG]
        nb.cells.append(audit)
        return nb

    def _fingerprint(self, nb) -> str:
        import numpy

        import backprop_lab

        h = hashlib.sha256()
        h.update(nbu.write_text(nb).encode())
        h.update(str(self.seed).encode())
        for path in sorted(Path(backprop_lab.__file__).parent.rglob("*.py")):
            h.update(path.read_bytes())  # the checks and the engine check cells may use
        h.update(numpy.__version__.encode() + sys.version.encode())
        return h.hexdigest()[:24]

    def prepare_expected(self, src: Source) -> None:
        pristine = self.instrument(src.nb)
        cache = _private_dir(self.private / "expected")
        target = cache / f"{Path(src.key).stem}-{self._fingerprint(pristine)}.ipynb"
        if not target.exists():
            work = _private_dir(self.private / "work")
            tmp = work / f"pristine-{src.key}"
            write_atomic(tmp, nbu.write_text(pristine), mode=0o600)
            cmd = [
                *self._prefix(),
                sys.executable,
                "-m",
                "backprop_lab.grading.expected",
                str(tmp),
                str(target),
                "--kernel",
                sandbox.KERNEL_NAME,
                "--timeout",
                str(max(60.0, 6 * self.opts.cell_timeout)),
            ]
            proc = self.procs.start(
                cmd,
                env=self.env,
                cwd=work,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                _out, err = proc.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                self.procs.kill(proc)
                src.error = "the instructor notebook timed out under the secret seed"
                return
            finally:
                self.procs.forget(proc)
            if self.stop.is_set():
                return
            if proc.returncode != 0 or not target.exists():
                tail = _clean(err).strip().splitlines()[-5:]
                src.error = "the instructor notebook fails under the secret seed: " + " | ".join(
                    tail
                )
                return
        src.expected = nbu.read(target)

    # ---- matching submissions to sources

    def discover(self, submissions: list[str]) -> list[tuple[str, dict]]:
        """[(student, {source key: Path | None})], one entry per submission argument."""
        jobs = []
        for arg in submissions:
            p = Path(arg)
            if p.is_dir():
                found = {n.name: n for n in nbu.find_notebooks(p)}
                jobs.append((p.resolve().name, {k: found.get(k) for k in self.sources}))
            else:
                if p.name in self.sources:
                    student = p.resolve().parent.name
                    jobs.append((student, {p.name: p}))
                elif len(self.sources) == 1:
                    jobs.append((p.stem, {next(iter(self.sources)): p}))
                else:
                    jobs.append((p.stem, {self._guess_source(p): p}))
        # several files of one student (dir/05.ipynb dir/06.ipynb given separately): merge
        merged: dict[str, dict] = {}
        for student, mapping in jobs:
            merged.setdefault(student, {}).update(mapping)
        return list(merged.items())

    def _guess_source(self, path: Path) -> str:
        try:
            ids = {c.get("id") for c in nbu.read(path).cells}
        except nbu.NotebookError:
            return next(iter(self.sources))
        best = max(
            self.sources.values(),
            key=lambda s: len(ids & {e["answer"] for e in s.exercises.values()}),
        )
        return best.key

    @staticmethod
    def merge(expected, submission):
        """The graded notebook: the instructor's run with the student's answer sources.

        Returns (notebook, {answer id: note or None}); note is 'missing' or how it matched.
        """
        nb = copy.deepcopy(expected)
        sub_cells = [c for c in submission.cells if c.get("cell_type") == "code"]
        by_id = {c.get("id"): c for c in sub_cells}
        answer_ids = [c["id"] for c in nbu.answer_cells(nb)]
        unclaimed = [c for c in sub_cells if nbu.is_answer(c) and c.get("id") not in answer_ids]
        matched: dict[str, tuple] = {}
        for aid in answer_ids:
            if aid in by_id:
                matched[aid] = (by_id[aid], None)
        for aid in answer_ids:
            if aid not in matched and unclaimed:
                matched[aid] = (unclaimed.pop(0), "matched by position: its cell id changed")
        notes = {}
        for cell in nb.cells:
            if not nbu.is_answer(cell):
                continue
            aid = cell["id"]
            if aid in matched:
                cell.source = matched[aid][0].get("source", "")
                notes[aid] = matched[aid][1]
            else:
                cell.source = "# answer cell missing from the submission"
                notes[aid] = "missing"
            cell.outputs = []
            cell.execution_count = None
        return nb, notes

    # ---- running one submission

    def nbval_args(self, files: list[Path], workdir: Path, junit: Path) -> list[str]:
        ini = workdir / "pytest.ini"
        ini.write_text("[pytest]\naddopts =\n")
        return [
            "-p", "nbval.plugin", "-p", "no:cacheprovider", "--nbval-lax",
            "--nbval-kernel-name", sandbox.KERNEL_NAME,
            "--nbval-cell-timeout", str(self.opts.cell_timeout),
            "--nbval-kernel-startup-timeout", "60",
            "-c", str(ini), "--rootdir", str(workdir), "--junitxml", str(junit),
            "-q", "--no-header", "-o", "junit_logging=no", *map(str, files),
        ]  # fmt: skip

    def run_nbval(self, files: list[Path], workdir: Path, junit: Path, ncells: int):
        """Run nbval on ``files``: (return code, log text, killed for overrunning)."""
        args = self.nbval_args(files, workdir, junit)
        limit = 90 + ncells * (self.opts.cell_timeout + 10)
        log = workdir / "pytest.log"
        for _attempt in range(2):
            if self.stop.is_set():
                raise _Interrupted
            worker = self.workers.get()
            rc = worker.request(args, log, limit) if worker else None
            if self.stop.is_set():
                raise _Interrupted
            if worker is not None and rc is not None:
                self.workers.put(worker)
                return rc, _read(log), False
            if worker is not None:
                worker.kill()
                if worker.timed_out:
                    return -9, _read(log), True
        # no worker would serve: one pytest process for this submission
        cmd = [*self._prefix(), sys.executable, "-m", "backprop_lab.grading.run_nbval", *args]
        proc = self.procs.start(
            cmd,
            env=self.env,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            out, _ = proc.communicate(timeout=limit)
            killed = False
        except subprocess.TimeoutExpired:
            self.procs.kill(proc)
            out, _ = proc.communicate()
            killed = True
        finally:
            self.procs.forget(proc)
        if self.stop.is_set():
            raise _Interrupted
        return proc.returncode, out, killed

    @staticmethod
    def parse_junit(path: Path) -> dict[int, tuple[str, str]]:
        """{code cell number: (outcome, text)}; outcome in passed/failed/skipped."""
        root = ET.parse(path).getroot()
        results = {}
        for case in root.iter("testcase"):
            m = re.match(r"Cell (\d+)$", case.get("name", ""))
            if not m:
                continue
            outcome, text = "passed", ""
            for child in case:
                if child.tag in ("failure", "error"):
                    outcome = "failed"
                    text = (child.get("message") or "") + "\n" + (child.text or "")
                elif child.tag == "skipped":
                    outcome = "skipped"
                    text = (child.get("message") or "") + "\n" + (child.text or "")
            results[(case.get("classname", ""), int(m[1]))] = (outcome, _clean(text))
        return results

    @staticmethod
    def explain(outcome: str, text: str, timeout: float) -> tuple[str, str]:
        """(short reason, detail for the student) for a cell that did not pass."""
        if outcome == "skipped":
            return ("not run: an earlier cell timed out or the kernel stopped", text.strip())
        if "TAMPERING DETECTED" in text:
            line = text[text.index("TAMPERING DETECTED") :].splitlines()[0]
            return (f"tampering detected: {line.split(':', 1)[1].strip()}", line)
        if "CheckFailure" in text:
            detail = text[text.rindex("CheckFailure") :]
            detail = detail.split(":", 1)[1].strip() if ":" in detail else detail
            body = []
            for line in detail.splitlines():
                if line.strip().startswith(("---", "===", "Traceback")):
                    break
                body.append(line)
            detail = "\n".join(body).strip()
            diag = [ln.split("Diagnosis:", 1)[1].strip() for ln in body if "Diagnosis:" in ln]
            first = body[0] if body else "check failed"
            short = first if not diag else f"{first} {diag[0]}"
            return (f"wrong answer: {short}", detail)
        if "Kernel dead on test start" in text:
            return ("not run: the kernel had died in an earlier cell", text.strip())
        if "Failed to interrupt kernel" in text or "Kernel dead" in text:
            return (
                "kernel died or stopped responding (a crash, sys.exit/os._exit, or a "
                "resource limit)",
                text.strip(),
            )
        if "Timeout of" in text:
            return (f"timed out after {timeout:g} s", text.strip())
        if "outputs differ" in text.lower() or "mismatch" in text.lower():
            return ("output differs from the instructor's solution", text.strip())
        found = re.findall(r"^(\w+(?:Error|Exception|Exit|Interrupt)): ?(.*)$", text, re.M)
        if found:
            name, msg = found[-1]
            return (f"exception {name}: {msg.strip()[:160]}".rstrip(": "), text.strip())
        found = re.findall(r"^(\w+(?:Error|Exception|Exit|Interrupt))\b", text, re.M)
        if found:
            return (f"exception {found[-1]}", text.strip())
        return ("check cell failed", text.strip())

    def grade_student(self, student: str, mapping: dict) -> dict:
        if self.stop.is_set():
            raise _Interrupted
        slug = report.file_name(student)
        result = {
            "student": student,
            "isolation": self.isolation,
            "graded": True,
            "exercises": [],
            "notes": [],
        }
        work = _private_dir(self.private / "work" / f"{slug}-{secrets.token_hex(4)}")
        runnable = []  # (source, merged nb, notes, file)
        for key, path in mapping.items():
            src = self.sources[key]
            if src.error:
                result["graded"] = False
                for ex, e in src.exercises.items():
                    result["exercises"].append(self._row(ex, key, 0, e, f"NOT GRADED: {src.error}"))
                continue
            if path is None:
                for ex, e in src.exercises.items():
                    result["exercises"].append(self._row(ex, key, 0, e, f"{key} not submitted"))
                continue
            try:
                sub = nbu.read(path)
            except nbu.NotebookError as exc:
                for ex, e in src.exercises.items():
                    result["exercises"].append(
                        self._row(ex, key, 0, e, f"not a readable notebook: {exc}")
                    )
                continue
            merged, notes = self.merge(src.expected, sub)
            file = work / key
            write_atomic(file, nbu.write_text(merged), mode=0o600)
            runnable.append((src, merged, notes, file, sub))
        if runnable:
            junit = work / "junit.xml"
            ncells = sum(len(nbu.code_cell_ids(m)) for _, m, _, _, _ in runnable)
            rc, output, killed = self.run_nbval([r[3] for r in runnable], work, junit, ncells)
            try:
                cells = self.parse_junit(junit)
            except (OSError, ET.ParseError):
                cells = None
            if cells is None:
                reason = (
                    "timed out (the whole notebook)"
                    if killed
                    else "NOT GRADED: nbval produced no result: "
                    + " | ".join(_clean(output).strip().splitlines()[-3:])
                )
                if not killed:
                    result["graded"] = False
                for src, _, _, _, _ in runnable:
                    for ex, e in src.exercises.items():
                        result["exercises"].append(self._row(ex, src.key, 0, e, reason))
            else:
                for src, merged, notes, file, sub in runnable:
                    self._score(result, src, merged, notes, file, sub, cells, killed)
                write_atomic(self.out / "junit" / slug / "junit.xml", junit.read_bytes())
        self._write_student(slug, result)
        shutil.rmtree(work, ignore_errors=True)  # merged notebooks hold expected outputs
        return result

    @staticmethod
    def _row(ex, key, points, entry, reason, details=""):
        return {
            "exercise": ex,
            "notebook": key,
            "points": points,
            "max_points": entry["max_points"],
            "reason": reason,
            "details": details,
        }

    def _score(self, result, src, merged, notes, file, sub, cells, killed):
        ids = nbu.code_cell_ids(merged)
        # nbval's JUnit classname is the notebook's path relative to the rootdir (workdir)
        names = {k[0] for k in cells}
        cls = file.name if file.name in names else None
        if cls is None:
            cls = next((c for c in names if c.replace("\\", "/").endswith("/" + file.name)), None)
        if cls is None:
            stem = file.name[: -len(".ipynb")]
            cls = next((c for c in names if c == stem or c.endswith("." + stem)), None)
        outcome = {}
        for (c, n), value in cells.items():
            if c == cls and n < len(ids):
                outcome[ids[n]] = value
        first = outcome.get(ids[0], ("passed", "")) if ids else ("passed", "")
        if first[0] != "passed" and "Cell execution caused an exception" not in first[1]:
            # the first cell did not even run: the kernel did not start (not the student)
            why = (first[1].strip().splitlines() or [first[0]])[-1][:200]
            for ex, e in src.exercises.items():
                result["exercises"].append(
                    self._row(ex, src.key, 0, e, f"NOT GRADED: the kernel did not start ({why})")
                )
            result["graded"] = False
            return
        audit = outcome.get(nbu.AUDIT_ID, ("missing", ""))
        tamper = None
        if audit[0] == "failed" and "TAMPERING DETECTED" in audit[1]:
            tamper = self.explain(*audit, self.opts.cell_timeout)[0]
        sub_answers = {c.get("id"): c.get("source", "") for c in sub.cells}
        for ex, e in src.exercises.items():
            aid = e["answer"]
            note = notes.get(aid)
            flags = scan_answer(merged_source(merged, aid)) if aid else []
            review = f"; review: {', '.join(flags)}" if flags else ""
            if aid is None or note == "missing":
                result["exercises"].append(
                    self._row(ex, src.key, 0, e, f"answer cell {aid} missing")
                )
                continue
            if tamper:
                result["exercises"].append(
                    self._row(ex, src.key, 0, e, tamper + review, audit[1].strip()[-2000:])
                )
                continue
            points, reasons, details = 0.0, [], []
            for cid in e["checks"]:
                state, text = outcome.get(cid, ("failed", "not run (the run was stopped)"))
                cell = next(c for c in merged.cells if c.get("id") == cid)
                if state == "passed":
                    points += nbu.points(cell)
                    continue
                short, detail = self.explain(state, text, self.opts.cell_timeout)
                if state == "skipped":
                    cause = self._first_stop(ids, outcome, cid)
                    if cause:
                        short = f"not run: cell {cause[0]} {cause[1]}"
                if killed and cid not in outcome:
                    short = "timed out (the whole notebook)"
                reasons.append(short)
                details.append(f"{cid}: {detail}")
            a_state, a_text = outcome.get(aid, ("passed", ""))
            if reasons and a_state == "failed":
                a_short = self.explain(a_state, a_text, self.opts.cell_timeout)[0]
                if a_short.startswith("not run:"):
                    reasons = [a_short]  # the kernel was gone before this exercise
                else:
                    reasons = [f"the answer cell failed: {a_short}"] + [
                        r
                        for r in reasons
                        if r != a_short and not r.startswith(f"not run: cell {aid} ")
                    ]
            reason = "passed" if not reasons else "; ".join(dict.fromkeys(reasons))
            if note:
                reason += f" ({note})"
            result["exercises"].append(
                self._row(ex, src.key, points, e, reason + review, "\n\n".join(details))
            )
        del sub_answers

    def _first_stop(self, ids, outcome, cid):
        """(cell id, what happened) for the cell whose timeout made nbval skip ``cid``."""
        for prev in ids[: ids.index(cid)][::-1]:
            state, text = outcome.get(prev, ("passed", ""))
            if state == "failed" and ("Timeout of" in text or "Failed to interrupt" in text):
                return prev, self.explain(state, text, self.opts.cell_timeout)[0]
        return None

    # ---- output

    def _write_student(self, name: str, result: dict) -> None:
        result.setdefault("seed_digest", report.seed_digest(self.seed))
        result.setdefault("source_digest", self.source_digest)
        report.write_student(self.out, name, result)

    # ---- the whole run

    def _lock(self) -> None:
        """One run at a time per output folder (a second one would mix two gradebooks)."""
        import fcntl

        self._lock_file = open(self.private / "lock", "w")  # noqa: SIM115 - held for the run
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise GradeError(
                f"another 'backprop-lab grade' is writing to {self.out}; wait for it to end "
                "or use another --out"
            ) from None

    def _clean_stale(self) -> None:
        """Work folders, kernel homes and temporary files left by a run that was killed."""
        for name in ("work", "scratch"):
            shutil.rmtree(self.private / name, ignore_errors=True)
        sandbox.remove_stale_cgroups()
        for tmp in self.out.rglob(".*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass

    def _check_out(self) -> None:
        run = report.read_run(self.out)
        if run and run.get("source_digest") != self.source_digest:
            raise GradeError(
                f"{self.out} holds grades computed against other instructor notebooks than "
                f"--source {self.opts.source}; regrade into a new --out (or delete "
                f"{self.out / report.RUN_FILE} and {self.out / 'results'} to start over)"
            )

    def run(self, submissions: list[str]) -> int:
        self._lock()
        self.load_sources()
        self._check_out()
        self._clean_stale()
        todo = self.discover(submissions)
        if self.opts.shard:
            k, n = self.opts.shard
            todo = [(s, m) for s, m in todo if report.shard_of(s, n) == k]
        shard = f"{self.opts.shard[0]}/{self.opts.shard[1]}" if self.opts.shard else None
        self._write_kernel([Path(s) for s in submissions])
        if self.cgroup_note:
            print(f"backprop-lab grade: {self.cgroup_note}", file=sys.stderr)
        finished: dict[str, dict] = {}
        interrupted = False
        t0 = time.monotonic()
        self.workers = _WorkerPool(
            [*self._prefix(), sys.executable, "-m", "backprop_lab.grading.worker"],
            self.env,
            _private_dir(self.private / "work"),
            self.stop,
        )
        pool = ThreadPoolExecutor(max_workers=self.jobs)
        futures = {}
        bar = _progress_bar(len(todo), self.opts.progress)
        try:
            if todo:  # the instructor runs, in parallel
                list(pool.map(self.prepare_expected, self.sources.values()))
            futures = {pool.submit(self._safe_grade, s, m): s for s, m in todo}
            for fut in as_completed(futures):
                res = fut.result()
                finished[res["student"]] = res
                bar.update(1)
        except KeyboardInterrupt:
            interrupted = True
            finished.update(self._stop(pool, futures))
        finally:
            pool.shutdown(wait=not interrupted, cancel_futures=True)
            self.workers.close()
            self.procs.kill_all()
            shutil.rmtree(self.private / "scratch", ignore_errors=True)
            shutil.rmtree(self.private / "work", ignore_errors=True)
            if self.cgroup:
                sandbox.remove_cgroups(self.cgroup, keep_parent=False)
            bar.close()
        for student, mapping in todo:
            if student not in finished:
                finished[student] = self._not_graded(student, mapping, INTERRUPTED)
        seconds = time.monotonic() - t0
        if self.opts.progress and todo and not interrupted:
            print(
                f"graded {len(todo)} submissions in {seconds:.1f} s "
                f"({len(todo) / seconds * 60 if seconds > 0 else 0.0:.1f} per minute)",
                file=sys.stderr,
            )
        everyone = {s: r for s, (_p, r) in report.read_results(self.out).items()}
        everyone.update(finished)  # (they were just written; this covers a failed write)
        report.write_gradebook(self.out, list(everyone.values()))
        report.write_run(
            self.out,
            source_digest=self.source_digest,
            seed=report.seed_digest(self.seed),
            shard=shard,
            isolation=self.isolation,
        )
        ungraded = [r["student"] for r in finished.values() if not r["graded"]]
        if ungraded:
            print(f"NOT GRADED: {', '.join(sorted(ungraded))}", file=sys.stderr)
        kept = len(everyone) - len(finished)
        print(
            f"gradebook: {self.out / 'gradebook.csv'} ({len(finished)} submissions graded"
            + (f" in shard {shard}" if shard else "")
            + (f", {kept} kept from earlier runs" if kept else "")
            + f", isolation: {self.isolation})",
            file=sys.stderr,
        )
        if interrupted:
            done = sum(1 for r in finished.values() if r["graded"])
            print(
                f"backprop-lab grade: interrupted; {done} of {len(todo)} submissions graded, "
                "the rest are marked NOT GRADED (run the same command again to grade them)",
                file=sys.stderr,
            )
            return 130
        return 0 if not ungraded else 1

    def _stop(self, pool, futures) -> dict[str, dict]:
        """After Ctrl-C: kill every worker and kernel, keep what had finished."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: still a gradebook
        self.stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        self.workers.kill_all()
        self.procs.kill_all()
        done = {}
        deadline = time.monotonic() + 20
        for fut in futures:
            if fut.cancelled():
                continue
            try:
                res = fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - a thread still stuck: marked not graded
                continue
            done[res["student"]] = res
        return done

    def _not_graded(self, student, mapping, reason: str) -> dict:
        result = {
            "student": student,
            "isolation": self.isolation,
            "graded": False,
            "notes": [],
            "exercises": [],
        }
        for key in mapping:
            src = self.sources.get(key)
            for ex, e in src.exercises.items() if src else []:
                result["exercises"].append(self._row(ex, key, 0, e, reason))
        try:
            self._write_student(report.file_name(student), result)
        except Exception:  # noqa: BLE001
            pass
        return result

    def _safe_grade(self, student, mapping):
        if self.stop.is_set():
            return self._not_graded(student, mapping, INTERRUPTED)
        try:
            return self.grade_student(student, mapping)
        except _Interrupted:
            return self._not_graded(student, mapping, INTERRUPTED)
        except Exception as exc:  # noqa: BLE001 - one bad submission never stops the run
            if self.stop.is_set():
                return self._not_graded(student, mapping, INTERRUPTED)
            result = self._not_graded(
                student, mapping, f"NOT GRADED: internal error {type(exc).__name__}: {exc}"
            )
            result["notes"] = [repr(exc)]
            return result
        finally:
            if self.cgroup:
                sandbox.remove_cgroups(self.cgroup)  # the kernels that have ended


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


class _Worker:
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


class _WorkerPool:
    """Idle workers; a thread takes one (or starts one) per submission and gives it back."""

    def __init__(self, cmd, env, cwd, stop: threading.Event | None = None):
        self.cmd, self.env, self.cwd = cmd, env, cwd
        self.idle: list[_Worker] = []
        self.all: list[_Worker] = []
        self.lock = threading.Lock()
        self.stop = stop or threading.Event()

    def get(self):
        with self.lock:
            if self.stop.is_set():
                return None
            if self.idle:
                return self.idle.pop()
        try:
            worker = _Worker(self.cmd, self.env, self.cwd)
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


class _Procs:
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


def merged_source(nb, cell_id) -> str:
    for c in nb.cells:
        if c.get("id") == cell_id:
            return c.get("source", "")
    return ""


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc="grading",
        unit="submission",
        file=sys.stderr,
        disable=not enabled or total == 0,
        mininterval=0.5,
        dynamic_ncols=True,
    )


def grade(submissions: list[str], opts: Options) -> int:
    return Grader(opts).run(submissions)
