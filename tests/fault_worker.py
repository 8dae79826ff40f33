"""``arena-stream`` in a child process that dies with the process that started it.

Exactly the CLI's entry point (``arena_stream.cli.entry``) with the same
arguments; the only addition is Linux's parent-death signal, so a test that is
interrupted never leaves a worker running against the shared broker::

    python tests/fault_worker.py --log-level info worker --config FILE
"""

from __future__ import annotations

import contextlib
import signal
import sys


def die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            # PR_SET_PDEATHSIG = 1: SIGKILL this process when its parent exits.
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


if __name__ == "__main__":
    die_with_parent()
    from arena_stream.cli.entry import main

    sys.exit(main(sys.argv[1:]))
