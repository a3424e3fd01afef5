"""The verdict: compare what the kernel recorded with the expected outputs, and explain.

:func:`judge` takes a spec, its cases (expected values included), the arrays and the JSON
record that :mod:`backprop_lab.checks.runner` produced, and returns a JSON-able dict. Its
feedback never contains an expected value: it says which outputs are right, in backward
order, and for each wrong one the first explanation that *holds* on every case: one of the
exercise's own hypotheses (its planted bugs), else a fact that was verified (transposed,
not summed over a broadcast axis, opposite sign, a constant factor stated as a number with
no guess, the size of the error against the tolerance).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from backprop_lab.checks.oracle.spec import Bug, Case, Spec
from backprop_lab.ops import unbroadcast


def _scale(b: np.ndarray) -> float:
    m = float(np.max(np.abs(b))) if b.size else 0.0
    return max(m, 1.0) if math.isfinite(m) else 1.0


def close(a: np.ndarray | None, b: np.ndarray | None, rtol: float, atol: float) -> bool:
    """``a`` equals ``b`` within ``rtol`` plus ``atol`` times ``max(|b|, 1)``."""
    if a is None or b is None or np.shape(a) != np.shape(b):
        return False
    with np.errstate(all="ignore"):
        return bool(np.allclose(a, b, rtol=rtol, atol=atol * _scale(b)))


def _fmt_shape(shape) -> str:
    shape = tuple(shape)
    return f"({shape[0]},)" if len(shape) == 1 else str(shape)


def _sci(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-").replace("e+0", "e+")


# --------------------------------------------------------------------------- one output


def _variant_output(bug: Bug, spec: Spec, case: Case, k: int):
    value = bug.variant(case)
    if len(spec.outputs) == 1 and not isinstance(value, tuple):
        value = (value,)
    part = value[k] if k < len(value) else None
    return None if part is None else np.asarray(part, dtype=np.float64)


def _bug_explains(bug: Bug, spec: Spec, cases: list[Case], gots: list[dict], name: str) -> bool:
    if bug.outputs is not None and name not in bug.outputs:
        return False
    k = spec.outputs.index(name)
    rtol = spec.rtol if bug.rtol is None else bug.rtol
    atol = spec.atol if bug.atol is None else bug.atol
    differs = False
    with np.errstate(all="ignore"):
        for case, got in zip(cases, gots):
            if bug.predicate is not None:
                try:
                    if not bug.predicate(case, got):
                        return False
                except Exception:
                    return False
                differs = True
                continue
            try:
                want = _variant_output(bug, spec, case, k)
            except Exception:
                return False
            if want is None:
                return False
            if not close(got.get(name), want, rtol, atol):
                return False
            differs = differs or not close(want, case.expected[k], spec.rtol, spec.atol)
    return differs


def _explains_all(bug: Bug, spec: Spec, cases: list[Case], gots: list[dict]) -> bool:
    """The variant matches the answer on every output (None: the output must be right)."""
    rtol = spec.rtol if bug.rtol is None else bug.rtol
    atol = spec.atol if bug.atol is None else bug.atol
    with np.errstate(all="ignore"):
        for case, got in zip(cases, gots):
            for k, name in enumerate(spec.outputs):
                try:
                    want = _variant_output(bug, spec, case, k)
                except Exception:
                    return False
                want = case.expected[k] if want is None else want
                if not close(got.get(name), want, rtol, atol):
                    return False
    return True


def _facts(spec: Spec, cases: list[Case], gots: list[dict], name: str) -> str:
    """A verified statement about a wrong output, when no hypothesis of the spec holds."""
    k = spec.outputs.index(name)
    pairs = [(g.get(name), c.expected[k], c) for g, c in zip(gots, cases)]
    rtol, atol = spec.rtol, spec.atol
    got0, exp0, _ = pairs[0]
    if any(not np.all(np.isfinite(g)) for g, _, _ in pairs):
        bad = sum(int(np.sum(~np.isfinite(g))) for g, _, _ in pairs)
        return (
            f"{name} has {bad} NaN or infinite entries. Look for a division by zero, the log "
            "of a number that is not positive, or an exp that overflows."
        )
    if any(g.shape != e.shape for g, e, _ in pairs):
        bad = next((g, e) for g, e, _ in pairs if g.shape != e.shape)
        g, e = bad
        where = spec.shape_words(name)
        should = f"{where}, {_fmt_shape(e.shape)}" if where else _fmt_shape(e.shape)
        text = f"{name} has shape {_fmt_shape(g.shape)}; it should have {should}."
        if all(
            g.ndim == 2 and g.T.shape == e.shape and close(g.T, e, rtol, atol) for g, e, _ in pairs
        ):
            return (
                text
                + " It is the right matrix transposed: swap the order of the product or add a .T."
            )
        if all(
            _reducible(g, e.shape) and close(unbroadcast(np, g, e.shape), e, rtol, atol)
            for g, e, _ in pairs
        ):
            return text + (
                " Summed over the axes that broadcasting added, it would be right: an input "
                "that was broadcast in the forward pass gets the sum of the gradients of all "
                "its copies (for a bias added to every row, sum over axis 0)."
            )
        if g.size == e.size and all(close(g.reshape(e.shape), e, rtol, atol) for g, e, _ in pairs):
            return text + " Its entries are right: reshape it."
        return text
    if all(close(-g, e, rtol, atol) for g, e, _ in pairs):
        return f"{name} has the wrong sign in every entry: look for a minus sign."
    if all(
        g.ndim == 2 and g.shape[0] == g.shape[1] and close(g.T, e, rtol, atol) for g, e, _ in pairs
    ):
        if not all(close(e.T, e, rtol, atol) for _, e, _ in pairs):
            return (
                f"{name} is the right matrix transposed: swap the order of the product or add a .T."
            )
    if spec.kind == "backward":
        if all(
            c.forward_value is not None and close(g, c.forward_value, rtol, atol)
            for g, _, c in pairs
        ):
            return (
                f"{name} is the forward value, not a gradient: a backward rule returns "
                "d(loss)/d(input)."
            )
        if all(
            c.upstream is not None
            and g.shape == c.upstream.shape
            and close(g, c.upstream, rtol, atol)
            for g, _, c in pairs
        ):
            return (
                f"{name} is the upstream gradient passed through unchanged: multiply it by the "
                "local derivative."
            )
    ratios = []
    for g, e, _ in pairs:
        denom = float(np.sum(e * e))
        if denom == 0.0:
            ratios = []
            break
        c = float(np.sum(g * e)) / denom
        if abs(c) < 1e-12 or not close(g, c * e, rtol, atol):
            ratios = []
            break
        ratios.append(c)
    if ratios:
        if max(ratios) - min(ratios) <= 1e-6 * max(abs(r) for r in ratios):
            return (
                f"Every entry of {name} is {ratios[0]:.4g} times the right value, in every case: "
                "look for a constant factor that is missing or extra."
            )
        shown = ", ".join(f"{r:.3g}" for r in ratios)
        return (
            f"In each case every entry of {name} is off by one common factor, but the factor "
            f"changes from case to case ({shown}): look for a factor that depends on the inputs."
        )
    worst_rel, worst_idx, worst_case, wrong_entries, total = _worst(spec, pairs)
    if worst_rel < 1e-2:
        return (
            f"{name} is close but not within the tolerance: "
            + _closeness_text(spec, worst_rel, worst_idx, worst_case)
            + (
                " An approximation (a finite difference, a rounded constant) rather than the exact "
                "rule gives errors of this size."
            )
        )
    # the entry that is furthest off: its value is printed (at least 1% from the right one,
    # so the printout never reveals an expected value)
    g = pairs[worst_case][0]
    idx = tuple(int(i) for i in worst_idx) if worst_idx is not None else ()
    yours = float(g[idx]) if g.ndim else float(g)
    return (
        f"{wrong_entries} of {total} entries of {name} are wrong (over {len(pairs)} cases). The "
        f"furthest off is entry {idx} of case {worst_case + 1}, where yours is {yours:+.4g}: "
        "work that entry out by hand."
    )


def _worst(spec: Spec, pairs):
    """(largest relative error, its index, its case, wrong entries, all entries)."""
    rtol, atol = spec.rtol, spec.atol
    worst_rel, worst_idx, worst_case = 0.0, None, 0
    wrong_entries = 0
    total = 0
    for n, (g, e, _) in enumerate(pairs):
        allowed = atol * _scale(e) + rtol * np.abs(e)
        err = np.abs(g - e)
        bad = err > allowed
        wrong_entries += int(bad.sum())
        total += bad.size
        rel = err / np.maximum(np.abs(e), atol * _scale(e))
        if bad.any():
            i = int(np.argmax(np.where(bad, rel, -1.0)))
            if rel.reshape(-1)[i] > worst_rel:
                worst_rel = float(rel.reshape(-1)[i])
                worst_idx = np.unravel_index(i, e.shape) if e.ndim else ()
                worst_case = n
    return worst_rel, worst_idx, worst_case, wrong_entries, total


def _closeness_text(spec: Spec, worst_rel: float, worst_idx, worst_case: int) -> str:
    idx = tuple(int(i) for i in worst_idx) if worst_idx is not None else ()
    return (
        f"the largest relative error is about {_sci(worst_rel)} (case {worst_case + 1}, entry "
        f"{idx}), and the check allows {_sci(spec.rtol)} relative plus {_sci(spec.atol)} "
        "absolute."
    )


def _closeness(spec: Spec, cases: list[Case], gots: list[dict], name: str) -> str | None:
    """How close a wrong output is, when it is within 1% (None otherwise)."""
    k = spec.outputs.index(name)
    pairs = [(g.get(name), c.expected[k], c) for g, c in zip(gots, cases)]
    if any(g is None or g.shape != e.shape or not np.all(np.isfinite(g)) for g, e, _ in pairs):
        return None
    worst_rel, worst_idx, worst_case, _, _ = _worst(spec, pairs)
    if worst_rel >= 1e-2 or worst_idx is None:
        return None
    text = _closeness_text(spec, worst_rel, worst_idx, worst_case)
    return text[0].upper() + text[1:]


def _reducible(g: np.ndarray, shape: tuple) -> bool:
    if g.ndim < len(shape):
        return False
    tail = g.shape[g.ndim - len(shape) :]
    return all(s == t or s == 1 for s, t in zip(shape, tail))


# --------------------------------------------------------------------------- errors

_BROADCAST = re.compile(r"shapes \(([\d, ]*)\)\s+\(([\d, ]*)\)")


def _broadcast_shapes(message: str) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The two shapes of NumPy's "could not be broadcast together with shapes (4,5) (4,)"."""
    if "broadcast" not in message:
        return None
    m = _BROADCAST.search(message)
    if not m:
        return None
    return tuple(tuple(int(v) for v in g.split(",") if v.strip()) for g in m.groups())


def _keepdims_hint(a: tuple, b: tuple) -> list[str]:
    for x, y in ((a, b), (b, a)):
        if len(x) == 2 and len(y) == 1 and x[0] == y[0] and x[1] != y[0]:
            return [
                f"  A value per row needs shape ({y[0]}, 1): keep the summed axis "
                "(keepdims=True) or index it with [:, None]."
            ]
    return []


def _error_text(spec: Spec, err: dict, who: str, where: str = "") -> list[str]:
    kind = err.get("type", "Exception")
    msg = err.get("message", "")
    line = err.get("line")
    lines = []
    if line:
        lines.append(f"{who} raised {kind}{where} at line {err.get('lineno')} of your code:")
        lines.append(f"    {line}")
        for op in err.get("operands", [])[:1]:
            a, b = tuple(op["left_shape"]), tuple(op["right_shape"])
            la, lb = op["left"], op["right"]
            if op["op"] == "@":
                inner_b = b[0] if len(b) == 1 else (b[-2] if b else None)
                lines.append(
                    f"  {la} has shape {_fmt_shape(a)} and {lb} has shape {_fmt_shape(b)}: in "
                    "A @ B the last axis of A must match the first axis of B "
                    f"({a[-1] if a else '?'} vs {inner_b})."
                )
                if len(b) == 2 and a and a[-1] == b[-1]:
                    lines.append(
                        f"  {lb}.T has shape {_fmt_shape(b[::-1])}, which fits: a transpose is "
                        "probably missing."
                    )
                elif len(a) == 2 and b and len(b) >= 2 and a[-2] == b[-2]:
                    lines.append(
                        f"  {la}.T has shape {_fmt_shape(a[::-1])}, which fits: a transpose is "
                        "probably missing."
                    )
            else:
                lines.append(
                    f"  {la} has shape {_fmt_shape(a)} and {lb} has shape {_fmt_shape(b)}: they do "
                    "not broadcast (shapes are lined up from the last axis)."
                )
                lines += _keepdims_hint(a, b)
        if not err.get("operands"):
            shapes = _broadcast_shapes(msg)
            if shapes:
                a, b = shapes
                lines.append(
                    f"  Arrays of shapes {_fmt_shape(a)} and {_fmt_shape(b)} do not broadcast "
                    "(shapes are lined up from the last axis)."
                )
                lines += _keepdims_hint(a, b)
            else:
                lines.append(f"  {kind}: {msg}")
        return lines
    lines.append(f"{who} raised {kind}{where}: {msg}")
    if kind == "TypeError" and ("argument" in msg or "positional" in msg):
        lines.append(f"  The check calls it as {spec.call_text()}.")
    return lines


# --------------------------------------------------------------------------- the verdict


def _verdict(spec: Spec, answer: str, status: str, score: float, lines: list[str], **extra) -> dict:
    out = {
        "exercise": spec.id,
        "answer": answer,
        "passed": status == "passed",
        "status": status,
        "score": float(score),
        "outputs": extra.pop("outputs", []),
        "diagnosis": extra.pop("diagnosis", []),
        "cases": spec.cases,
        "cost": extra.pop("cost", None),
        "feedback": "\n".join(lines),
    }
    out.update(extra)
    return out


def _got(spec: Spec, arrays: dict, k: int) -> dict:
    return {o: arrays.get(f"case{k}/{o}") for o in spec.outputs}


def missing(spec: Spec, reason: str) -> dict:
    head = f"Exercise {spec.id} ({spec.title})"
    return _verdict(
        spec,
        spec.title,
        "missing",
        0.0,
        [
            f"{head}: the check did not finish, so there is nothing to grade ({reason}). "
            "Does your function run to the end on the exercise's inputs?"
        ],
    )


def judge(spec: Spec, cases: list[Case], large: Case | None, arrays: dict, record: dict) -> dict:
    """The verdict for one exercise: passed, score, rows in backward order, feedback (with
    what the answer printed on its first case, when it fails: students debug with print)."""
    verdict = _judge(spec, cases, large, arrays, record)
    if verdict["passed"]:
        return verdict
    recs = record.get("cases") if isinstance(record.get("cases"), list) else []
    printed = next((r.get("printed") for r in recs if isinstance(r, dict) and r.get("printed")), "")
    if isinstance(printed, str) and printed.strip():
        shown = printed.rstrip("\n").splitlines()
        block = [f"    | {line[:120]}" for line in shown[:PRINTED_LINES]]
        if len(shown) > PRINTED_LINES:
            block.append(f"    | ... ({len(shown) - PRINTED_LINES} more lines)")
        verdict["feedback"] += "\n  Your function printed (first case):\n" + "\n".join(block)
    return verdict


PRINTED_LINES = 8


def _judge(spec: Spec, cases: list[Case], large: Case | None, arrays: dict, record: dict) -> dict:
    answer = record.get("answer") if isinstance(record.get("answer"), str) else None
    answer = (answer or spec.title)[:60]
    head = f"Exercise {spec.id} ({answer})"
    status = record.get("status")
    if status == "wrong_count":
        return _verdict(spec, answer, "wrong_count", 0.0, [
            f"Exercise {spec.id}: the check takes {spec.answers} answer(s), as in "
            f"check(\"{spec.id}\", {spec.title}); it was given {record.get('given')}."
        ])  # fmt: skip
    if status == "not_callable":
        return _verdict(spec, answer, "not_callable", 0.0, [
            f"Exercise {spec.id}: pass your function itself, as in check(\"{spec.id}\", "
            f"{spec.title}); it was given a {record.get('given_type')}."
        ])  # fmt: skip
    recs = record.get("cases") or []
    if not isinstance(recs, list):
        return missing(spec, "the record is malformed")
    for case_rec in recs:
        st = case_rec.get("status")
        if st == "not_implemented":
            return _verdict(spec, answer, "not_implemented", 0.0, [
                f"{head}: not implemented yet. Replace the line `raise NotImplementedError(...)` "
                "with your code, run that cell, then run this one again."
            ])  # fmt: skip
        if st == "error":
            lines = _error_text(spec, case_rec.get("error") or {}, head)
            return _verdict(spec, answer, "error", 0.0, lines, diagnosis=lines[1:])
        if st == "bad_return":
            what = case_rec.get("returned", "something else")
            if len(spec.outputs) == 1:
                text = f"{head} returned {what}; it should return one array, {spec.outputs[0]}."
            else:
                names = ", ".join(spec.outputs)
                text = (
                    f"{head} returned {what}; it should return a tuple of "
                    f"{len(spec.outputs)} arrays, ({names}), in that order."
                )
            return _verdict(spec, answer, "bad_return", 0.0, [text])
    if len(recs) < len(cases):
        return missing(spec, f"{len(recs)} of {len(cases)} cases ran")

    gots = [_got(spec, arrays, k) for k in range(len(cases))]
    problems: dict[str, str] = {}
    for case_rec in recs:
        for name, why in (case_rec.get("problems") or {}).items():
            if name in spec.outputs:
                problems.setdefault(name, why)
    right: dict[str, bool] = {}
    for k, name in enumerate(spec.outputs):
        right[name] = name not in problems and all(
            close(g.get(name), c.expected[k], spec.rtol, spec.atol) for g, c in zip(gots, cases)
        )
    rows = [{"name": n, "right": right[n]} for n in spec.order()]
    # bugs whose variant reproduces the whole answer (every output) come first
    whole = [b for b in spec.bugs if b.variant is not None and _explains_all(b, spec, cases, gots)]
    diagnosis: list[str] = []
    explained: dict[str, list[str]] = {}  # bug sentence -> the outputs it explains
    for name in spec.order():
        if right[name]:
            continue
        if name in problems:
            why = problems[name]
            if why == "None":
                diagnosis.append(f"{name} is None: is a return value missing?")
            else:
                diagnosis.append(f"{name} is {why}.")
            continue
        found = [b.message for b in whole if _bug_explains(b, spec, cases, gots, name)]
        found += [b.message for b in spec.bugs if _bug_explains(b, spec, cases, gots, name)]
        if found:
            text = found[0]
            near = _closeness(spec, cases, gots, name)
            if near is not None:
                text = f"{text} {near}"
            if text not in explained:
                explained[text] = []
                diagnosis.append(text)  # a placeholder, named below
            explained[text].append(name)
        else:
            diagnosis.append(_facts(spec, cases, gots, name))
    # one bug that explains several outputs is said once, where the first of them stands
    if len(spec.outputs) > 1:
        diagnosis = [f"{', '.join(explained[d])}: {d}" if d in explained else d for d in diagnosis]
    diagnosis = list(dict.fromkeys(diagnosis))

    mutated = sorted({m for r in recs for m in (r.get("mutated") or [])})
    called = sorted({c for r in recs for c in (r.get("called") or [])})
    unwatched = any(r.get("profile_removed") for r in recs)
    all_right = all(right.values())
    lines: list[str] = []
    n_right = sum(right.values())
    multi = len(spec.outputs) > 1
    summary = ", ".join(f"{r['name']} {'right' if r['right'] else 'wrong'}" for r in rows)
    label = "In backward order" if spec.backward_order else "Outputs"

    status = "passed"
    extra_fail: list[str] = []
    if mutated:
        status = "mutated"
        extra_fail.append(
            f"Your function changed its input {', '.join(mutated)} in place. Leave inputs as "
            "they are (other steps still need them): work on a copy, or build new arrays."
        )
    if called:
        status = "forbidden"
        extra_fail.append(
            f"Your function calls {', '.join(called)}, which computes the answer for you. "
            "Write that part yourself, with the tools the exercise names."
        )
    if unwatched:
        status = "forbidden"
        extra_fail.append(
            "Your function switched off the check's call monitor (sys.setprofile); a checked "
            "answer must leave it alone."
        )

    cost_info = None
    if all_right and not extra_fail and spec.cost is not None:
        cost_info, cost_lines, cost_status = _judge_cost(spec, large, arrays, record, head)
        if cost_status != "passed":
            status = cost_status
            extra_fail.extend(cost_lines)

    if not all_right:
        status = "wrong"
        lines.append(f"{head}: not right yet.")
        if multi:
            lines.append(f"  {label}: {summary}.")
        lines += [f"  {d}" for d in diagnosis]
        if multi and spec.backward_order and 0 < n_right:
            first = next(r["name"] for r in rows if not r["right"])
            if not rows[0]["right"] or first != rows[0]["name"]:
                lines.append(
                    f"  The first wrong gradient in backward order is {first}: look at the step "
                    "that computes it and at the gradient it starts from."
                )
        lines += [f"  {t}" for t in extra_fail]
        score = 0.0 if extra_fail else n_right / len(spec.outputs)
        return _verdict(spec, answer, status, score, lines, outputs=rows,
                        diagnosis=diagnosis + extra_fail, cost=cost_info)  # fmt: skip
    if extra_fail:
        lines.append(f"{head}: the values are right, but:")
        lines += [f"  {t}" for t in extra_fail]
        return _verdict(spec, answer, status, 0.0, lines, outputs=rows, diagnosis=extra_fail,
                        cost=cost_info)  # fmt: skip
    lines.append(f"{head}: passed on {len(cases)} cases.")
    if multi:
        lines.append(f"  {label}: {summary}.")
    if spec.cost is not None:
        lines.append(f"  Cost: within {spec.cost.multiple:g}x one forward pass on a large input.")
    return _verdict(spec, answer, "passed", 1.0, lines, outputs=rows, cost=cost_info)


def _describe_large(spec: Spec, large: Case) -> str:
    return ", ".join(f"{n} {_fmt_shape(large.inputs[n].shape)}" for n in spec.cost.inputs)


def _judge_cost(spec, large, arrays, record, head) -> tuple[dict | None, list[str], str]:
    cost = record.get("cost")
    if not isinstance(cost, dict):
        return None, ["The cost check did not run; run the check again."], "too_slow"
    desc = _describe_large(spec, large)
    entries = sum(x.size for x in large.inputs.values())
    multiple = spec.cost.multiple
    try:
        reference = float(cost.get("reference_s"))
        took = float(cost.get("answer_s"))
    except (TypeError, ValueError):
        return None, ["The cost check's timings are unreadable; run the check again."], "too_slow"
    ratio = took / reference if reference > 0 else math.inf
    info = {"ratio": ratio, "limit": multiple, "interrupted": bool(cost.get("interrupted"))}
    if cost.get("status") == "error":
        lines = _error_text(spec, cost.get("error") or {}, "Your function", " on a large input")
        return info, lines, "error"
    if cost.get("returned"):
        return (
            info,
            [f"On a large input ({desc}) your function returned {cost['returned']}."],
            "bad_return",
        )
    if cost.get("interrupted") or ratio > multiple:
        if cost.get("interrupted"):
            took_text = f"was stopped after more than {ratio:.0f} times"
        else:
            took_text = f"took {ratio:.0f} times"
        return info, [
            f"On a large input ({desc}) your function {took_text} as long as one forward "
            f"pass; the limit is {multiple:g}x. A backward rule costs a few forward passes "
            "whatever the size. Finite differences, or any loop over the entries, cost in "
            f"proportion to the number of entries ({entries:,} here): use the rule, written "
            "with whole-array operations."
        ], "too_slow"  # fmt: skip
    got = {o: arrays.get(f"cost/{o}") for o in spec.outputs}
    if any(v is None for v in got.values()) or not spec.large_case_ok(large, got):
        return info, [
            f"Your function is right on the small cases but wrong on a large input ({desc}). "
            "Does it depend on the size of its input?"
        ], "wrong"  # fmt: skip
    return info, [], "passed"


def jsonable_verdict(v: dict) -> dict[str, Any]:
    from backprop_lab.checks.record import jsonable

    return jsonable(v)
