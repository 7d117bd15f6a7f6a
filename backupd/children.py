"""The daemon's child processes: how a job is started, how it dies with the daemon.

Every job runs as its own process (``backupd <command> --json``, ``backupd.protocol``): in its own
session (a Ctrl-C on the daemon's terminal does not reach it), its stdout (its result) in a
temporary file, and with ``UNDER_DAEMON_ENV`` set (the daemon sends its metrics). Through
``PARENT_ENV`` the child learns the daemon's pid and asks the kernel for SIGTERM when the
daemon dies (``exit_with_parent``), so no job outlives its daemon.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO

from backupd.metrics import UNDER_DAEMON_ENV
from backupd.protocol import JobKind

PARENT_ENV = "BACKUPD_PARENT_PID"


@dataclass
class Child:
    """A running child job and where its stdout (its result) goes."""

    shard: str
    kind: JobKind
    process: subprocess.Popen[bytes]
    stdout: IO[bytes]
    started: float = field(default_factory=time.monotonic)

    def output(self) -> str:
        self.stdout.seek(0)
        return self.stdout.read().decode("utf-8", "replace")

    @classmethod
    def spawn(cls, shard: str, kind: JobKind, argv: list[str]) -> Child:
        """Start ``argv`` as the child job ``kind`` of ``shard``."""
        stdout = tempfile.TemporaryFile()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, start_new_session=True,
                                   env={**os.environ, PARENT_ENV: str(os.getpid()), UNDER_DAEMON_ENV: "1"})
        return cls(shard, kind, process, stdout)

    def signal(self, signum: int) -> None:
        """Send ``signum`` unless the child has already gone."""
        try:
            self.process.send_signal(signum)
        except ProcessLookupError:
            pass


def exit_with_parent() -> None:
    """In a child started by the daemon: get SIGTERM when the daemon dies (Linux), so no
    backup outlives it; if the daemon is already gone, stop now."""
    parent = os.environ.pop(PARENT_ENV, None)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)
