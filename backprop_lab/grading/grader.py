"""``backprop-lab grade``: grade submissions with nbval against the pristine instructor notebooks.

For each source notebook the instructor's notebook is first run under the secret seed (the
expected outputs; cached per notebook + seed). For each submission only the answer cells are
taken and put into that run; the result is executed by ``pytest --nbval-lax`` in a sandboxed
kernel (see :mod:`backprop_lab.grading.sandbox`), in long-lived nbval workers, several
submissions at once; the JUnit XML maps each ``Cell N`` back to its cell id and exercise.

Trusted verdicts (:mod:`.verdicts`; every chapter of the book): when every check cell is
``check("<chapter>.<n>", answer)``, the kernel gets a check folder with the case arguments
and no seed, the oracle's package is hidden from it, and the points and the feedback come
from ``oracle.verdict`` computed here, after the kernel wrote the answer's outputs as data;
nbval still runs the cells (time limits, crashes) but no longer compares check cells. Other
check cells (the deprecated ``check_backward`` ...) are graded the old way: the seed is in
the kernel and nbval compares the check cells' printouts with the instructor's.

The pipeline, stage by stage: what gets run (:mod:`.assemble`: the instrumented instructor
notebook, a submission's answers merged in), who runs it (:mod:`.runners`: nbval workers and
the grader's other processes), how an outcome is read (:mod:`.outcome`: JUnit XML to points
and reasons), how it is reported (:mod:`.report`: feedback, results, gradebook, run record,
shard merging, progress bar). This module holds the run itself: setup, sources, students,
shards, Ctrl-C.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
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

from backprop_lab.grading import assemble, outcome, report, sandbox, verdicts
from backprop_lab.grading import notebook as nbu
from backprop_lab.grading.atomic import write_atomic
from backprop_lab.grading.outcome import clean, row
from backprop_lab.grading.runners import Interrupted, Nbval, Procs, WorkerPool

SECRET_ENV = "BACKPROP_LAB_SECRET_SEED"
GRADEBOOK_FIELDS = report.GRADEBOOK_FIELDS
INTERRUPTED = "NOT GRADED: interrupted (Ctrl-C) before this submission was graded"


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


@dataclass
class Source:
    key: str  # file name, e.g. 05-backprop.ipynb
    path: Path
    nb: object
    exercises: dict
    expected: object = None  # the instructor notebook run under the secret seed
    error: str | None = None
    check_ids: dict | None = None  # {check cell id: exercise id} when verdicts are trusted


# --------------------------------------------------------------------------- helpers


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


# --------------------------------------------------------------------------- the grader


class Grader:
    """One grading run: setup, the instructor runs, each submission, the gradebook.

    The stages live in their own modules: what gets run (:mod:`.assemble`), who runs it
    (:mod:`.runners`), how an outcome is read (:mod:`.outcome`), how it is reported
    (:mod:`.report`).
    """

    # (the stages' functions, under the names they had here)
    instrument = staticmethod(assemble.instrument)
    merge = staticmethod(assemble.merge)
    parse_junit = staticmethod(outcome.parse_junit)
    explain = staticmethod(outcome.explain)

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
        self.refused: dict[str, str] = {}  # student: why the whole submission is refused
        self.stop = threading.Event()  # set by Ctrl-C
        self.procs = Procs()  # every process the grader starts, to kill on Ctrl-C
        self.trusted = False  # verdicts computed here, not in the kernel (see .verdicts)

    # ---- setup

    def _seed(self) -> int:
        """The seed pinned by the instructor (--seed, $BACKPROP_LAB_SECRET_SEED), else a fresh
        one for this run: a feedback file of one run tells nothing about the next."""
        if self.opts.seed is not None:
            return int(self.opts.seed)
        if os.environ.get(SECRET_ENV, "").strip():
            try:
                return int(os.environ[SECRET_ENV])
            except ValueError:
                raise GradeError(f"${SECRET_ENV} must be an integer") from None
        (self.private / "seed").unlink(missing_ok=True)  # (kept and reused by older versions)
        return secrets.randbelow(2**62)

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
            # trusted verdicts: the kernel gets a check folder and never the seed
            "seed": None if self.trusted else self.seed,
            "trusted": self.trusted,
            "memory_mb": self.opts.memory_mb,
            "cpu_seconds": self.opts.cpu_seconds,
            "cgroup": self.cgroup,
            "cpus": self.opts.cpus,
            "hide": (self._hide_list(submissions) + self._oracle_dir()) if isolate else [],
            # the instructor's repositories, covered whole (the package and the Python
            # environment are bound back): .git, built books and other copies of solutions
            "cover": self._checkouts() if isolate else [],
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

    def _checkouts(self) -> list[str]:
        """The git checkouts holding the source notebooks, the backprop_lab package or the
        grader's working folder. Hiding only the source folder would leave the solutions in
        ``.git``, in a built book (``_build/``) and in any other copy of the checkout; the
        kernel sees none of it, only what it needs of it (the package, a venv inside it)."""
        import backprop_lab

        found = []
        for start in (self.opts.source, os.path.dirname(backprop_lab.__file__), os.getcwd()):
            p = Path(os.path.realpath(start))
            for d in (p, *p.parents):
                if d != Path("/") and (d / ".git").exists():
                    if str(d) not in found:
                        found.append(str(d))
                    break
        return found

    def _oracle_dir(self) -> list[str]:
        """With trusted verdicts the oracle's package is hidden from the kernel too."""
        if not self.trusted:
            return []
        from backprop_lab.checks import oracle

        return [os.path.realpath(os.path.dirname(oracle.__file__))]

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
            self.sources[path.name] = Source(
                path.name, path, nb, ex, check_ids=verdicts.check_ids(nb)
            )
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        self.source_digest = digest.hexdigest()[:24]
        # one kernel set-up per run: trusted verdicts when every check cell allows them
        self.trusted = all(src.check_ids is not None for src in self.sources.values())
        if not self.trusted:
            legacy = sorted(k for k, s in self.sources.items() if s.check_ids is None)
            print(
                "backprop-lab grade: check cells in "
                + ", ".join(legacy)
                + ' are not all check("<chapter>.<n>", answer) calls of registered exercises; '
                "this run grades the old way (the seed is in the kernel, nbval compares "
                "printouts)",
                file=sys.stderr,
            )

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
        pristine = assemble.instrument(src.nb, compare_checks=not self.trusted)
        cache = _private_dir(self.private / "expected")
        target = cache / f"{Path(src.key).stem}-{self._fingerprint(pristine)}.ipynb"
        if not target.exists():
            work = _private_dir(self.private / "work")
            if self.trusted:  # a folder of its own: the kernel finds check/ where it starts
                work = _private_dir(work / f"pristine-{Path(src.key).stem}")
                check = verdicts.prepare(work, list(src.check_ids.values()), self.seed)
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
            rc, _out, err, timed_out = self.procs.run(
                cmd,
                600,
                env=self.env,
                cwd=work,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            if timed_out:
                src.error = "the instructor notebook timed out under the secret seed"
                return
            if self.stop.is_set():
                return
            if rc != 0 or not target.exists():
                tail = clean(err).strip().splitlines()[-5:]
                src.error = "the instructor notebook fails under the secret seed: " + " | ".join(
                    tail
                )
                return
            if self.trusted:
                judged = verdicts.judge(check, list(src.check_ids.values()), self.seed)
                wrong = [ex for ex, v in judged.items() if not v.get("passed")]
                if wrong:
                    target.unlink(missing_ok=True)
                    src.error = (
                        "the instructor notebook fails its own checks under the secret seed: "
                        + "; ".join(f"{ex}: {verdicts.summary(judged[ex])}" for ex in wrong)
                    )
                    return
        src.expected = nbu.read(target)
        stem = Path(src.key).stem
        for old in cache.glob(f"{stem}-*.ipynb"):  # runs under other seeds or other code
            if old != target and old.name[len(stem) + 1 :].count("-") == 0:
                old.unlink(missing_ok=True)

    # ---- matching submissions to sources

    def discover(self, submissions: list[str]) -> list[tuple[str, dict]]:
        """[(student, {source key: Path | None})], one entry per submission argument."""
        jobs = []
        for arg in submissions:
            p = Path(arg)
            given = Path(os.path.abspath(arg))  # the student is named by the path as given
            if p.is_symlink() and p.is_dir():
                self.refused[given.name] = (
                    f"the submission folder {given.name} is a symbolic link; submit a folder"
                )
                jobs.append((given.name, {k: p / k for k in self.sources}))
            elif p.is_dir():
                found = {n.name: n for n in nbu.find_notebooks(p)}
                jobs.append((given.name, {k: found.get(k) for k in self.sources}))
            else:
                if p.name in self.sources:
                    student = given.parent.name
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
            ids = {c.get("id") for c in nbu.read_submission(path).cells}
        except nbu.NotebookError:
            return next(iter(self.sources))
        best = max(
            self.sources.values(),
            key=lambda s: len(ids & {e["answer"] for e in s.exercises.values()}),
        )
        return best.key

    # ---- running one submission

    def grade_student(self, student: str, mapping: dict) -> dict:
        if self.stop.is_set():
            raise Interrupted
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
                    result["exercises"].append(row(ex, key, 0, e, f"NOT GRADED: {src.error}"))
                continue
            if path is None:
                for ex, e in src.exercises.items():
                    result["exercises"].append(row(ex, key, 0, e, f"{key} not submitted"))
                continue
            try:
                if student in self.refused:
                    raise nbu.Refused(self.refused[student])
                sub = nbu.read_submission(path)
            except nbu.NotebookError as exc:
                kind = "refused" if isinstance(exc, nbu.Refused) else "not a readable notebook"
                for ex, e in src.exercises.items():
                    result["exercises"].append(row(ex, key, 0, e, f"{kind}: {exc}"))
                continue
            merged, notes = assemble.merge(src.expected, sub)
            file = work / key
            write_atomic(file, nbu.write_text(merged), mode=0o600)
            runnable.append((src, merged, notes, file, sub))
        judged = None
        if runnable and self.trusted:  # the inputs under the secret seed, for the kernel
            exercises = [ex for r in runnable for ex in r[0].check_ids.values()]
            check = verdicts.prepare(work, exercises, self.seed)
        if runnable:
            junit = work / "junit.xml"
            ncells = sum(len(nbu.code_cell_ids(m)) for _, m, _, _, _ in runnable)
            rc, output, killed = self.nbval.run([r[3] for r in runnable], work, junit, ncells)
            try:
                cells = outcome.parse_junit(junit)
            except (OSError, ET.ParseError):
                cells = None
            if cells is None:
                reason = (
                    "timed out (the whole notebook)"
                    if killed
                    else "NOT GRADED: nbval produced no result: "
                    + " | ".join(clean(output).strip().splitlines()[-3:])
                )
                if not killed:
                    result["graded"] = False
                for src, _, _, _, _ in runnable:
                    for ex, e in src.exercises.items():
                        result["exercises"].append(row(ex, src.key, 0, e, reason))
            else:
                if self.trusted:  # judged here, from what the kernel wrote as data
                    judged = verdicts.judge(check, exercises, self.seed)
                for src, merged, notes, file, _sub in runnable:
                    outcome.score(
                        result,
                        src,
                        merged,
                        notes,
                        file,
                        cells,
                        killed,
                        self.opts.cell_timeout,
                        judged=judged,
                    )
                write_atomic(self.out / "junit" / slug / "junit.xml", junit.read_bytes())
        self._write_student(slug, result)
        shutil.rmtree(work, ignore_errors=True)  # merged notebooks hold expected outputs
        return result

    # ---- output

    def _secrets(self) -> None:
        """What must not reach a student's feedback: the seed and the grader's own paths."""
        paths = {self.opts.source, self.out, *self.opts.hide}
        found = []
        for p in paths:
            for form in {str(p), os.path.abspath(p), os.path.realpath(p)}:
                if len(form) > 1:
                    found.append((form.rstrip(os.sep), "<hidden path>"))
        if len(str(self.seed)) >= 6:  # (a short pinned seed is not worth hiding, and "5"
            found.append((str(self.seed), "<secret seed>"))  # would mangle every number)
        self.scrub_list = sorted(found, key=lambda f: -len(f[0]))  # longest first

    def _scrub(self, text):
        if not isinstance(text, str):
            return text
        for secret, stand_in in getattr(self, "scrub_list", []):
            text = text.replace(secret, stand_in)
        return text

    def _write_student(self, name: str, result: dict) -> None:
        result.setdefault("seed_digest", report.seed_digest(self.seed))
        result.setdefault("source_digest", self.source_digest)
        for r in result.get("exercises", []):
            r["reason"] = self._scrub(r.get("reason"))
            r["details"] = self._scrub(r.get("details"))
        result["notes"] = [self._scrub(n) for n in result.get("notes", [])]
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
        report.read_results(self.out)  # a damaged earlier result: say so before any work
        self._clean_stale()
        todo = self.discover(submissions)
        self._secrets()
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
        self.workers = WorkerPool(
            [*self._prefix(), sys.executable, "-m", "backprop_lab.grading.worker"],
            self.env,
            _private_dir(self.private / "work"),
            self.stop,
        )
        self.nbval = Nbval(
            self._prefix(), self.env, self.opts.cell_timeout, self.workers, self.procs, self.stop
        )
        pool = ThreadPoolExecutor(max_workers=self.jobs)
        futures = {}
        bar = report.progress_bar(len(todo), self.opts.progress)
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
                result["exercises"].append(row(ex, key, 0, e, reason))
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
        except Interrupted:
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


def grade(submissions: list[str], opts: Options) -> int:
    return Grader(opts).run(submissions)
