"""``python -m backprop_lab.grading.run_nbval ARGS``: pytest with nbval, started quickly.

jsonschema imports ``rfc3987_syntax`` when it is installed, which builds a parser at import
time (about 2 s here) for a string format notebooks never use; blocking that import makes
each grading process start about 2 s sooner.
"""

import sys
import time


def fast_imports() -> None:
    sys.modules.setdefault("rfc3987_syntax", None)  # an ImportError, which jsonschema allows


def fast_iopub() -> None:
    """nbval waits for IOPub in 1 s steps (ZeroMQ's slow joiner makes the first try miss);
    poll in 50 ms steps instead, with the same 30 s budget."""
    from queue import Empty

    from nbval import kernel

    def _ensure_iopub_up(self):
        for _ in range(600):
            msg_id = self.kc.kernel_info()
            try:
                self.await_reply(msg_id, timeout=10)
            except Empty:
                raise RuntimeError("Kernel info request timed out after 10 seconds!") from None
            try:
                self.await_idle(msg_id, 0.05)
            except Empty:
                continue
            return
        raise RuntimeError("Wasn't able to establish IOPub after 30 seconds.")

    kernel.RunningKernel._ensure_iopub_up = _ensure_iopub_up

    original_await_reply = kernel.RunningKernel.await_reply

    def await_reply(self, msg_id, timeout=None):
        """As nbval's, but notice within half a second that the kernel died (a crash or
        os._exit), instead of waiting out the cell timeout and the interrupt."""
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        while True:
            step = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            try:
                return original_await_reply(self, msg_id, timeout=step)
            except Empty:
                if not self.is_alive():
                    raise RuntimeError("Kernel dead: it died while running this cell") from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    kernel.RunningKernel.await_reply = await_reply


def main() -> int:
    fast_imports()
    fast_iopub()
    import pytest

    return int(pytest.main(sys.argv[1:], plugins=None))


if __name__ == "__main__":
    sys.exit(main())
