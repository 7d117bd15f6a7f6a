"""One child process for a test server: own session, log file, lifeline, terminate-then-kill.

:class:`ServerProcess` starts one server command as the leader of a new session (so it and
everything it forks form one process group we can signal as a whole), with stdin closed and
stdout/stderr appended to a log file, tied to the test process by a lifeline (see
:mod:`tests.servers._process`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path

from tests.servers import _leash
from tests.servers._leash import LIFELINE_ENV
from tests.servers._procfs import _listening_inodes, _readlink, _wait_exited, group_members

__all__ = ["BIND_ERROR_MARKERS", "ServerProcess", "find_free_port", "stop_all", "tail"]

#: Log text meaning "the port we picked was taken meanwhile": retry with another port.
BIND_ERROR_MARKERS = ("Address already in use", "Could not bind", "EADDRINUSE")


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (racy: callers retry on bind errors)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    """Last ``lines`` lines of a text file, or a note that it does not exist."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return f"<{path} does not exist>"
    return "\n".join(text.splitlines()[-lines:])


class ServerProcess:
    """One server command run as a session leader, logging to ``log``.

    ``lifeline``: ``"leash"`` wraps the command in the leash, ``_leash.py`` (any command);
    ``"self"`` passes the lifeline fd to the command itself via ``LIFELINE_ENV`` (it must exit
    when reading the fd returns EOF). ``leash_signal``: what the leash sends its child to stop
    it (SIGKILL suits servers without state worth a graceful stop, e.g. memcached, which
    otherwise takes up to 1 s). :meth:`stop` and :meth:`kill` are idempotent; after them no
    process of the group is left.
    """

    def __init__(self, name: str, argv: Sequence[str], log: Path, *,
                 lifeline: str = "leash", env: Mapping[str, str] | None = None,
                 leash_signal: int = signal.SIGTERM) -> None:
        if lifeline not in ("leash", "self"):
            raise ValueError(f"lifeline must be 'leash' or 'self', not {lifeline!r}")
        self.name = name
        self.argv = list(argv)
        self.log = Path(log)
        self.lifeline = lifeline
        self.env = dict(env) if env is not None else None
        self.leash_signal = int(leash_signal)
        self._proc: subprocess.Popen[bytes] | None = None
        self._lifeline_w: int | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        """True while the process (leash or server) has not exited."""
        return self._proc is not None and self.exit_code() is None

    def exit_code(self) -> int | None:
        """Exit status (negative: killed by that signal) once the process has exited, else None.

        Does not reap it: the exited leader stays a zombie until :meth:`stop`, so its process
        group id cannot be reused before we have swept the group.
        """
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return proc.returncode if proc is not None else None
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return proc.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def pids(self) -> list[int]:
        """Live members of the process group (the leader, and the server under a leash)."""
        return group_members(self._proc.pid) if self._proc is not None else []

    def owns_port(self, port: int) -> bool:
        """True if a process of our group holds the socket listening on ``port``: tells our
        server from another one that took the port first and answers there."""
        targets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
        for pid in self.pids() if targets else ():
            try:
                with os.scandir(f"/proc/{pid}/fd") as fds:
                    if any(_readlink(fd.path) in targets for fd in fds):
                        return True
            except OSError:
                continue
        return False

    def log_offset(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def start(self) -> None:
        if self.running():
            raise RuntimeError(f"{self.name}: already running (pid {self.pid})")
        self.stop()  # reap a previous, exited incarnation and close its lifeline
        read_fd, write_fd = os.pipe()  # both non-inheritable; pass_fds opens read_fd for the child
        env = dict(os.environ if self.env is None else self.env)
        env[LIFELINE_ENV] = str(read_fd)
        argv = self.argv
        if self.lifeline == "leash":
            argv = [sys.executable, os.path.abspath(_leash.__file__), str(self.leash_signal), "--",
                    *argv]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.log, "ab") as out:
                out.write(f"--- {time.strftime('%H:%M:%S')} starting {self.argv}\n".encode())
                out.flush()
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, pass_fds=(read_fd,), env=env,
                )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        self._lifeline_w = write_fd

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the whole process group (no-op if it is gone)."""
        if self._proc is not None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signum)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, SIGKILL it after ``timeout`` s, reap. Idempotent."""
        if self._proc is None:
            return
        self._cut_lifeline()
        if self._proc.returncode is None:
            self.send_signal(signal.SIGTERM)
        self._finish(timeout)

    def kill(self) -> None:
        """SIGKILL the group at once and reap (simulates a crash). Idempotent."""
        if self._proc is None:
            return
        self._cut_lifeline()
        self.send_signal(signal.SIGKILL)
        self._finish(10.0)

    def _cut_lifeline(self) -> None:
        if self._lifeline_w is not None:
            with suppress(OSError):
                os.close(self._lifeline_w)
            self._lifeline_w = None

    def _finish(self, timeout: float) -> None:
        """Wait for the leader to exit, kill what is left of its group, then reap it.

        The leader stays a zombie (``WNOWAIT``) until its group was SIGKILLed, so its pid, and
        with it the group id, cannot be reused by an unrelated process in between.
        """
        proc = self._proc
        assert proc is not None
        if proc.returncode is None and not _wait_exited(proc.pid, timeout):
            self.send_signal(signal.SIGKILL)
            _wait_exited(proc.pid, 10.0)
        self.send_signal(signal.SIGKILL)  # stragglers the leader left behind
        proc.wait()
        self._proc = None


def stop_all(processes: Iterable[ServerProcess], timeout: float = 10.0) -> None:
    """Stop several processes in parallel: SIGTERM all first, then wait for each."""
    procs = [p for p in processes if p is not None]
    for proc in procs:
        proc._cut_lifeline()
        if proc.running():
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.stop(max(0.1, deadline - time.monotonic()))
