"""How an outcome is read: nbval's JUnit XML turned into points and reasons per exercise.

:func:`parse_junit` reads the outcome of each ``Cell N``; :func:`explain` says in one line
why a cell did not pass (and gives the detail for the student); :func:`score` turns the
outcomes of one notebook into the rows of its exercises.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from backprop_lab.grading import notebook as nbu
from backprop_lab.grading import verdicts as trusted
from backprop_lab.grading.assemble import merged_source, scan_answer

# ANSI colour codes; pytest's JUnit XML writes the escape character as the text "#x1B"
_ANSI = re.compile(r"(?:\x1b|#x1B)\[[0-9;]*[A-Za-z]")


def clean(text: str) -> str:
    return _ANSI.sub("", text or "")


def row(ex, key, points, entry, reason, details=""):
    return {
        "exercise": ex,
        "notebook": key,
        "points": points,
        "max_points": entry["max_points"],
        "reason": reason,
        "details": details,
    }


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
        results[(case.get("classname", ""), int(m[1]))] = (outcome, clean(text))
    return results


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
            "kernel died or stopped responding (a crash, sys.exit/os._exit, or a resource limit)",
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


def score(result, src, merged, notes, file, cells, killed, timeout, judged=None):
    """Append the rows of one notebook of a submission to ``result`` from nbval's outcomes.

    ``judged`` ({exercise id: verdict}, trusted verdicts): a check cell that ran scores by its
    exercise's verdict, and the feedback is the verdict's (never an expected value); a cell
    that did not run scores 0 with nbval's reason (timed out, kernel died, ...).
    """
    check_ids = getattr(src, "check_ids", None) if judged is not None else None
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
                row(ex, src.key, 0, e, f"NOT GRADED: the kernel did not start ({why})")
            )
        result["graded"] = False
        return
    audit = outcome.get(nbu.AUDIT_ID, ("missing", ""))
    tamper = None
    if audit[0] == "failed" and "TAMPERING DETECTED" in audit[1]:
        tamper = explain(*audit, timeout)[0]
    for ex, e in src.exercises.items():
        aid = e["answer"]
        note = notes.get(aid)
        flags = scan_answer(merged_source(merged, aid)) if aid else []
        review = f"; review: {', '.join(flags)}" if flags else ""
        if aid is None or note == "missing":
            result["exercises"].append(row(ex, src.key, 0, e, f"answer cell {aid} missing"))
            continue
        if tamper:
            result["exercises"].append(
                row(ex, src.key, 0, e, tamper + review, audit[1].strip()[-2000:])
            )
            continue
        points, reasons, details = 0.0, [], []
        for cid in e["checks"]:
            state, text = outcome.get(cid, ("failed", "not run (the run was stopped)"))
            cell = next(c for c in merged.cells if c.get("id") == cid)
            if state == "passed" and check_ids is not None:
                verdict = judged.get(check_ids.get(cid))
                if verdict is not None and verdict.get("passed"):
                    points += nbu.points(cell)
                    continue
                if verdict is None:
                    reasons.append(f"not graded: no verdict for check cell {cid}")
                    continue
                reasons.append(f"wrong answer: {trusted.summary(verdict)}")
                details.append(f"{cid}: {str(verdict.get('feedback', '')).strip()}")
                continue
            if state == "passed":
                points += nbu.points(cell)
                continue
            short, detail = explain(state, text, timeout)
            if state == "skipped":
                cause = first_stop(ids, outcome, cid, timeout)
                if cause:
                    short = f"not run: cell {cause[0]} {cause[1]}"
            if killed and cid not in outcome:
                short = "timed out (the whole notebook)"
            reasons.append(short)
            details.append(f"{cid}: {detail}")
        a_state, a_text = outcome.get(aid, ("passed", ""))
        if reasons and a_state == "failed":
            a_short = explain(a_state, a_text, timeout)[0]
            if a_short.startswith("not run:"):
                reasons = [a_short]  # the kernel was gone before this exercise
            else:
                reasons = [f"the answer cell failed: {a_short}"] + [
                    r for r in reasons if r != a_short and not r.startswith(f"not run: cell {aid} ")
                ]
        reason = "passed" if not reasons else "; ".join(dict.fromkeys(reasons))
        if note:
            reason += f" ({note})"
        result["exercises"].append(
            row(ex, src.key, points, e, reason + review, "\n\n".join(details))
        )


def first_stop(ids, outcome, cid, timeout):
    """(cell id, what happened) for the cell whose timeout made nbval skip ``cid``."""
    for prev in ids[: ids.index(cid)][::-1]:
        state, text = outcome.get(prev, ("passed", ""))
        if state == "failed" and ("Timeout of" in text or "Failed to interrupt" in text):
            return prev, explain(state, text, timeout)[0]
    return None
