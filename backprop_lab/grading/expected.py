"""Run a (trusted) instructor notebook to record the expected outputs under the secret seed.

``python -m backprop_lab.grading.expected IN OUT --kernel NAME --timeout S`` executes IN with
nbclient in the grading kernel and writes OUT. Exit status 0 when every cell ran; otherwise 3
and the failing cells on stderr (the grader then cannot grade that notebook).
"""

from __future__ import annotations

import argparse
import sys

from backprop_lab.grading.run_nbval import fast_imports

fast_imports()

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from backprop_lab.grading.atomic import write_atomic  # noqa: E402
from backprop_lab.grading.notebook import AUDIT_ID  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args(argv)
    nb = nbformat.read(args.src, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=args.kernel,
        timeout=args.timeout,
        allow_errors=True,
        startup_timeout=120,
    )
    client.execute()
    failed, other = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                line = f"cell {cell.get('id')}: {out.get('ename')}: {out.get('evalue')}"
                tags = cell.get("metadata", {}).get("tags", [])
                graded = "check" in tags or "answer" in tags or cell.get("id") == AUDIT_ID
                (failed if graded else other).append(line)
    if other:  # not graded, so not fatal; but the instructor should know
        print("warning: cells that fail under the secret seed (not graded):", file=sys.stderr)
        print("\n".join(other), file=sys.stderr)
    if failed:
        print("\n".join(failed), file=sys.stderr)
        return 3
    write_atomic(args.dst, nbformat.writes(nb) + "\n", mode=0o600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
