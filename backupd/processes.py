"""Is a process still running? (Linux /proc; pid reuse and unreaped zombies excluded.)

Used by the shard lock (a lease left by a crashed process on this host is stale at once) and by
the option-file clean-up (folders of killed processes are removed by the next one).
"""

from __future__ import annotations

import os


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
