"""Helpers for the child processes backupd runs: is one still running (Linux /proc; pid reuse
and unreaped zombies excluded), bigger pipes to read them through, the tail of their stderr."""

from __future__ import annotations

import fcntl
import os
from typing import IO

PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def enlarge_pipe(fd: int) -> None:
    """Grow a pipe to ``PIPE_SIZE`` (fewer wake-ups of a fast producer); a smaller pipe only
    costs speed, so failure is ignored."""
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass


def file_tail(handle: IO[bytes], limit: int = 4096) -> str:
    """The last ``limit`` bytes of a (stderr) file, as stripped text."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - limit))
    return handle.read().decode("utf-8", "replace").strip()


def _proc_stat(pid: int) -> list[str]:
    """Fields 3.. of /proc/<pid>/stat (state first), or [] where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            # the command name (field 2) may hold spaces and parentheses: split after its ')'
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_start(pid: int) -> str:
    """Start time of ``pid`` (clock ticks since boot), or "" where unknown."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else ""


def pid_alive(pid: int, started: str = "") -> bool:
    """Whether ``pid`` runs (and, if ``started`` is given, is the process that started then).

    A killed process that nobody reaped yet (a zombie) is not running.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    fields = _proc_stat(pid)
    if fields and fields[0] in ("Z", "X"):
        return False
    return not started or (len(fields) > 19 and fields[19] == started)
