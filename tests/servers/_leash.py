"""The leash: run a server command as our child and end it when the test process is gone.

    python _leash.py STOP_SIGNAL_NUMBER -- COMMAND [ARG...]

:class:`~tests.servers._server_process.ServerProcess` runs servers that cannot watch the
lifeline themselves (memcached, moto_server, carbon) under this script: it starts the real
command as its child, ends it on lifeline EOF or SIGTERM/SIGINT (with ``STOP_SIGNAL_NUMBER``:
SIGTERM, or a signal of the caller's choice for servers that are slow to stop) and reaps it.

This file imports only the standard library: it is run by path, as a script.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
from contextlib import suppress

#: Environment variable naming the lifeline's read fd inside the child.
LIFELINE_ENV = "BACKUPD_TESTSERVER_LIFELINE_FD"

_LEASH_GRACE = 5.0


def _leash(stop_signal: int, argv: list[str]) -> int:
    """Run ``argv`` as our child until it exits; send it ``stop_signal`` when the lifeline
    breaks or we get SIGTERM/SIGINT (SIGKILL if it is still there 5 s later)."""
    lifeline = int(os.environ.pop(LIFELINE_ENV))
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    done = threading.Event()

    def send(signum: int) -> None:
        if not done.is_set():  # never signal a reaped (possibly reused) pid
            with suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    def forward(_signum: int, _frame: object) -> None:
        send(stop_signal)

    def watch() -> None:
        while True:
            try:
                if not os.read(lifeline, 64):
                    break
            except OSError as exc:
                if exc.errno != errno.EINTR:
                    break
        send(stop_signal)
        if not done.wait(_LEASH_GRACE):
            send(signal.SIGKILL)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    threading.Thread(target=watch, daemon=True).start()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped yet
    done.set()
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(f"usage: {sys.argv[0]} STOP_SIGNAL_NUMBER -- COMMAND [ARG...]")
    sys.exit(_leash(int(sys.argv[1]), sys.argv[3:]))
