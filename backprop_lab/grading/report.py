"""How a grading run is reported: per-student files, the gradebook, the run record, merging.

An output folder (``--out``) holds:

``results/<file>.json``
    one per student: the rows of that student (the gradebook is rebuilt from these, so a
    regrade of some students into the same folder keeps everyone else's rows);
``feedback/<file>.md``, ``junit/<file>/junit.xml``
    what the student reads, and nbval's JUnit report;
``gradebook.csv``
    every student's rows, sorted by student;
``run.json``
    what the grades were computed against (a digest of the instructor notebooks and of the
    secret seed, never the seed itself) and which shard ``K/N`` of the students this folder
    holds; :func:`merge` refuses to combine folders that disagree.

``<file>`` is the student name when it is a plain file name, else a readable form of it plus
a short hash of the name, so that two names differing only by a space or an accent never
share a file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import sys
from pathlib import Path

from backprop_lab.grading.atomic import write_atomic

GRADEBOOK_FIELDS = ["student", "exercise", "points", "max_points", "reason", "isolation"]
RUN_FILE = "run.json"
RUN_FORMAT = 1


class ReportError(Exception):
    """An output folder that cannot be used as asked; the message says what to do."""


def file_name(student: str) -> str:
    """The file name (without suffix) of a student's results, feedback and JUnit report."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", student).strip("._") or "student"
    if slug == student:
        return slug
    return f"{slug}-{hashlib.sha256(student.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def shard_of(student: str, count: int) -> int:
    """The shard (0 .. count-1) a student belongs to: a hash of the id, the same everywhere."""
    digest = hashlib.sha256(student.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


def seed_digest(seed: int) -> str:
    return hashlib.sha256(f"backprop-lab-secret-seed:{int(seed)}".encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- per student


def write_student(out: Path, name: str, result: dict) -> None:
    write_atomic(out / "results" / f"{name}.json", json.dumps(result, indent=1))
    lines = [f"# Feedback for {result['student']}", ""]
    total = sum(r["points"] for r in result["exercises"])
    top = sum(r["max_points"] for r in result["exercises"])
    lines += [f"Total: {total:g} / {top:g} points.", ""]
    for r in result["exercises"]:
        lines += [
            f"## Exercise {r['exercise']} ({r['notebook']}): {r['points']:g} / {r['max_points']:g}",
            "",
            r["reason"],
            "",
        ]
        if r.get("details"):
            lines += ["```text", r["details"].strip()[:4000], "```", ""]
    if result["isolation"] != "full":
        lines += [f"Grading isolation: {result['isolation']}", ""]
    write_atomic(out / "feedback" / f"{name}.md", "\n".join(lines))


def read_results(out: Path) -> dict[str, tuple[Path, dict]]:
    """{student: (results file, result)} of an output folder."""
    found: dict[str, tuple[Path, dict]] = {}
    folder = Path(out) / "results"
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.json")):
        try:
            result = json.loads(path.read_text())
            student = result["student"]
            result["exercises"]  # noqa: B018 - must be there
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReportError(
                f"{path} is not a grading result ({type(exc).__name__}: {exc}); delete it or "
                "grade that student again"
            ) from None
        if student in found:
            raise ReportError(f"{found[student][0]} and {path} both hold student {student!r}")
        found[student] = (path, result)
    return found


# --------------------------------------------------------------------------- the gradebook


def write_gradebook(out: Path, results: list[dict]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=GRADEBOOK_FIELDS, lineterminator="\n")
    w.writeheader()
    for res in sorted(results, key=lambda r: r["student"]):
        for r in res["exercises"]:
            w.writerow(
                {
                    "student": res["student"],
                    "exercise": r["exercise"],
                    "points": f"{r['points']:g}",
                    "max_points": f"{r['max_points']:g}",
                    "reason": r["reason"],
                    "isolation": res["isolation"],
                }
            )
    return write_atomic(Path(out) / "gradebook.csv", buf.getvalue())


# --------------------------------------------------------------------------- the run record


def read_run(out: Path) -> dict | None:
    path = Path(out) / RUN_FILE
    if not path.exists():
        return None
    try:
        run = json.loads(path.read_text())
        if run.get("format") != RUN_FORMAT:
            raise ValueError(f"format {run.get('format')!r}")
        return run
    except (OSError, ValueError, AttributeError) as exc:
        raise ReportError(f"{path} is unreadable ({exc}); delete it or use a new --out") from None


def write_run(out: Path, *, source_digest: str, seed: str, shard: str | None, **extra) -> None:
    run = {
        "format": RUN_FORMAT,
        "source_digest": source_digest,
        "seed_digest": seed,
        "shard": shard,
        **extra,
    }
    write_atomic(Path(out) / RUN_FILE, json.dumps(run, indent=1) + "\n")


# --------------------------------------------------------------------------- merging shards


def merge(folders: list[Path], out: Path, partial: bool = False) -> list[dict]:
    """Combine the output folders of shards into ``out``; returns every student's result.

    Refuses (:class:`ReportError`) folders that are not grading outputs, that were graded
    against different instructor notebooks or under different secret seeds, that hold the
    same student twice, or (unless ``partial``) that leave a shard out.
    """
    folders = [Path(f) for f in folders]
    out = Path(out)
    if not folders:
        raise ReportError("no shard folders given")
    runs = []
    for folder in folders:
        if not folder.is_dir():
            raise ReportError(f"{folder} does not exist or is not a folder")
        run = read_run(folder)
        if run is None:
            raise ReportError(
                f"{folder} has no {RUN_FILE}: it is not the --out folder of a "
                "'backprop-lab grade' run (or that run was stopped before it started grading)"
            )
        runs.append(run)
    resolved = {f.resolve() for f in folders}
    if out.resolve() in resolved:
        raise ReportError(f"--out {out} is one of the shard folders; merge into a new folder")
    if out.exists() and any(out.iterdir()):
        raise ReportError(f"--out {out} is not empty; merge into a new folder")
    for key, what in (
        ("source_digest", "different instructor notebooks (--source)"),
        ("seed_digest", "different secret seeds (give every shard the same --seed)"),
    ):
        values = {r.get(key) for r in runs}
        if len(values) > 1:
            groups = {}
            for folder, r in zip(folders, runs):
                groups.setdefault(r.get(key), []).append(str(folder))
            listing = " vs ".join(", ".join(g) for g in groups.values())
            raise ReportError(f"the shards were graded against {what}: {listing}")
    shards = [r.get("shard") for r in runs]
    if all(shards):
        counts = {s.split("/")[1] for s in shards}
        if len(counts) > 1:
            raise ReportError(f"the shards split the class differently: {', '.join(shards)}")
        n = int(counts.pop())
        given = [int(s.split("/")[0]) for s in shards]
        twice = sorted({k for k in given if given.count(k) > 1})
        if twice:
            raise ReportError(f"shard(s) {', '.join(f'{k}/{n}' for k in twice)} given twice")
        missing = [k for k in range(n) if k not in given]
        if missing and not partial:
            raise ReportError(
                f"shard(s) {', '.join(f'{k}/{n}' for k in missing)} missing: pass every "
                "shard's --out folder (or --partial to merge what there is)"
            )
    owner: dict[str, tuple[Path, Path, dict]] = {}
    for folder in folders:
        for student, (path, result) in read_results(folder).items():
            if student in owner:
                raise ReportError(
                    f"student {student!r} was graded in both {owner[student][0]} and {folder}; "
                    "the shards overlap (grade each shard of one split with --shard K/N)"
                )
            owner[student] = (folder, path, result)
    out.mkdir(parents=True, exist_ok=True)
    for folder, path, _result in owner.values():
        name = path.stem
        shutil.copy2(path, _mk(out / "results") / path.name)
        feedback = folder / "feedback" / f"{name}.md"
        if feedback.exists():
            shutil.copy2(feedback, _mk(out / "feedback") / feedback.name)
        junit = folder / "junit" / name
        if junit.is_dir():
            shutil.copytree(junit, out / "junit" / name, dirs_exist_ok=True)
    results = [r for _f, _p, r in owner.values()]
    write_gradebook(out, results)
    write_run(
        out,
        source_digest=runs[0]["source_digest"],
        seed=runs[0]["seed_digest"],
        shard=None,
        merged_from=[str(f) for f in folders],
    )
    return results


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- progress


def progress_bar(total: int, enabled: bool):
    """tqdm's bar on stderr, counting graded submissions (off when not ``enabled``)."""
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
