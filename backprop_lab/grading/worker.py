"""A long-lived grading worker: runs ``pytest --nbval-lax`` in-process, one request at a time.

Importing pytest, nbval and jupyter_client costs more CPU than a whole fixture notebook, so the
grader keeps a few of these workers (each in its own network and PID namespace when the
machine allows) and sends them one JSON request per line on stdin::

    {"args": [...pytest arguments...], "log": "/path/to/log"}

The worker answers ``{"rc": N}`` on its original stdout; everything pytest prints goes to the
request's log file. Kernels still run in the sandbox (a separate process per notebook); the
worker only runs nbval, which compares outputs in the grader's side of the connection. The
grader kills and replaces a worker that does not answer in time.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    from backprop_lab.grading.run_nbval import fast_imports, fast_iopub

    fast_imports()
    fast_iopub()
    import pytest

    try:  # a flood of output from a kernel must not take the machine down (soft limit only:
        # the sandboxed kernels this worker starts set their own)
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = 6 * 2**30
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    except (ImportError, ValueError, OSError):
        pass
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    proto.write('{"ready": true}\n')
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        try:
            rc = int(pytest.main(list(request["args"])))
        except BaseException as exc:  # noqa: BLE001 - report, keep serving
            print(f"worker: {type(exc).__name__}: {exc}", file=sys.stderr)
            rc = -1
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        proto.write(json.dumps({"rc": rc}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
