"""How close the instructor's answers come to their exercises' cost limits.

    .venv/bin/python benchmarks/bench_cost_margins.py [--seeds 4]

A cost check fails an answer that takes more than ``multiple`` x one forward pass (CPU time)
on a large input; its job is to refuse finite differences and other per-entry schemes, which
cost thousands of forward passes. The instructor's answer must stay far below the limit, or
a loaded machine fails an honest student: exercise 15.2's answer measured 5-9x against a
limit of 10x, and 14x once under load, before its limit was raised.

For every exercise with a cost check this prints the answer's measured ratio to one forward
pass (one figure per seed, each the best of the check's repeats, in the same process as the
forward pass it is divided by) and the largest ratio as a fraction of the limit. Fractions
above 0.5 are marked: they leave less than a factor of two for a busy machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _chapter_solutions import answer_source  # noqa: E402

import backprop_lab.checks.runner as runner  # noqa: E402
from backprop_lab.checks import oracle  # noqa: E402
from backprop_lab.checks.testing import answer_from_source, practice_verdict  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="seeds per exercise (default 4)")
    args = parser.parse_args()

    notebooks = {p.name.split("-")[0].lstrip("0"): p.name for p in ROOT.glob("notebooks/*.ipynb")}
    ratios: list[float] = []
    measure = runner._measure_cost

    def spy(*a, **k):
        out = measure(*a, **k)
        ratios.append(out["answer_s"] / out["reference_s"])
        return out

    runner._measure_cost = spy
    print(
        f"{'exercise':>8s} {'limit':>6s}  {'answer / forward pass, per seed':32s} {'max/limit':>9s}"
    )
    try:
        for exercise in oracle.ids():
            cost = oracle.spec(exercise).cost
            if cost is None:
                continue
            ratios.clear()
            try:
                source = answer_source(notebooks[exercise.split(".")[0]], exercise)
                answer = answer_from_source(source, {"np": np})
                passed = all(
                    practice_verdict(exercise, answer, seed=s)["passed"] for s in range(args.seeds)
                )
            except Exception as exc:  # an answer of several functions, or a multi-part check
                print(
                    f"{exercise:>8s} {cost.multiple:5g}x  not measured here ({type(exc).__name__})"
                )
                continue
            if not ratios:
                print(f"{exercise:>8s} {cost.multiple:5g}x  not measured here (no cost run)")
                continue
            share = max(ratios) / cost.multiple
            flag = "  <- less than 2x headroom" if share > 0.5 else ""
            if not passed:
                flag += "  <- the instructor's answer FAILED"
            figures = " ".join(f"{r:5.1f}" for r in ratios)
            print(f"{exercise:>8s} {cost.multiple:5g}x  {figures:32s} {share:9.2f}{flag}")
    finally:
        runner._measure_cost = measure


if __name__ == "__main__":
    main()
