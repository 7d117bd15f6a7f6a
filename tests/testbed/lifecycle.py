"""Running a test-bed server's mariadbd: start, readiness, stop, crash (:class:`ServerLifecycle`).

:class:`~tests.testbed.mariadb.MariaDBServer` inherits these methods; they use its fields
(``name``, ``port``, ``pid``, ``_proc``), paths and :meth:`server_args`. Every server runs in
its own session, so it outlives the process that started it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from contextlib import closing, suppress
from pathlib import Path

import pymysql

from tests.testbed.template import _binary

__all__ = ["ServerLifecycle", "find_free_port"]

_BIND_ERROR_MARKERS = ("Bind on TCP/IP port", "Address already in use")
_PORT_RETRIES = 5


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0).

    Inherently racy: :meth:`MariaDBServer.start` retries with a new port if the bind fails.
    """
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_alive(pid: int, datadir: Path) -> bool:
    """True if ``pid`` is a live (non-zombie) mariadbd serving ``datadir``.

    Checking the command line guards against pid reuse after the server has gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        return False
    return f"--datadir={datadir}".encode() in cmdline


def _tail(path: Path, lines: int = 20) -> str:
    """Last ``lines`` lines of a text file, or a note that it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"<{path} does not exist>"
    return "\n".join(text.splitlines()[-lines:])


class ServerLifecycle:
    """Process control of one mariadbd instance (mixed into ``MariaDBServer``)."""

    # Fields of MariaDBServer; its paths, server_args() and save_state() are used too.
    name: str
    port: int
    pid: int | None
    _proc: subprocess.Popen[bytes] | None

    def start(self, timeout: float = 60.0) -> None:
        """Launch mariadbd in its own session and wait until it accepts connections.

        Raises RuntimeError (with the last 20 lines of the error log) if the process exits
        early or is not ready within ``timeout`` seconds; in the latter case the process is
        SIGKILLed first, so a failed start never leaks a server. If the port turned out to be
        taken, a new port is picked (``self.port`` changes) and the start is retried.
        """
        if self.is_running():
            raise RuntimeError(f"{self.name}: already running (pid {self.pid})")
        for directory in (self.tmpdir, self.binlog_base.parent, self.relay_base.parent):
            directory.mkdir(parents=True, exist_ok=True)
        for attempt in range(_PORT_RETRIES):
            log_offset = self.error_log.stat().st_size if self.error_log.exists() else 0
            self._launch()
            try:
                self._wait_ready(timeout)
                self.save_state()
                return
            except _EarlyExit as exc:
                fresh_log = self._read_log_from(log_offset)
                if attempt + 1 < _PORT_RETRIES and any(m in fresh_log for m in _BIND_ERROR_MARKERS):
                    self.port = find_free_port()
                    continue
                raise RuntimeError(
                    f"{self.name}: mariadbd exited with code {exc.returncode} during start;"
                    f" last lines of {self.error_log}:\n{_tail(self.error_log)}"
                ) from None
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        """Popen mariadbd in a new session (``setsid()`` in the child via start_new_session,
        so Popen's pid is mariadbd's own and the server outlives its caller), stdin closed,
        stdout/stderr appended to ``stdout_log``."""
        with open(self.stdout_log, "ab") as out:
            self._proc = subprocess.Popen(
                self.server_args(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.pid = self._proc.pid

    def _wait_ready(self, timeout: float) -> None:
        """Poll a socket connection until it works; raise _EarlyExit or RuntimeError."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            returncode = self._proc.poll()
            if returncode is not None:
                self.pid = None
                raise _EarlyExit(returncode)
            if self._ping():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"{self.name}: not ready after {timeout:.0f}s; last lines of "
                    f"{self.error_log}:\n{_tail(self.error_log)}"
                )
            time.sleep(0.05)

    def _ping(self) -> bool:
        """True if a root connection over the socket succeeds right now."""
        if not self.socket.exists():
            return False
        try:
            conn = pymysql.connect(unix_socket=str(self.socket), user="root", password="",
                                   connect_timeout=2)
        except (pymysql.MySQLError, OSError):
            return False
        conn.close()
        return True

    def _read_log_from(self, offset: int) -> str:
        try:
            with open(self.error_log, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _current_pid(self) -> int | None:
        """Pid of the live server: the one we recorded, else the pid file's (covers state
        loaded with from_dict and servers restarted through another object). None if the
        server is down."""
        candidates = [self.pid]
        with suppress(FileNotFoundError, ValueError):
            candidates.append(int(self.pid_file.read_text().strip()))
        for pid in candidates:
            if pid is not None and self._pid_alive(pid):
                return pid
        return None

    def _pid_alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return _proc_alive(pid, self.datadir)

    def is_running(self) -> bool:
        """True if this instance's mariadbd process is alive (zombies count as dead)."""
        return self._current_pid() is not None

    def _wait_gone(self, pid: int, deadline: float) -> bool:
        """Wait until ``pid`` is gone (reaping it if we are its parent); False on timeout."""
        while self._pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        if self._proc is not None and self._proc.pid == pid:
            self._proc.wait()
            self._proc = None
        return True

    def stop(self, timeout: float = 60.0) -> None:
        """Shut down cleanly (``mariadb-admin shutdown``); SIGKILL if not gone in ``timeout``.

        No-op when the server is not running.
        """
        pid = self._current_pid()
        if pid is None:
            self._forget()
            return
        deadline = time.monotonic() + timeout
        with suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [_binary("mariadb-admin"), "--no-defaults", f"--socket={self.socket}",
                 "-uroot", "shutdown"],
                capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout,
            )
        if not self._wait_gone(pid, deadline):
            self._signal(pid, signal.SIGKILL)
            self._wait_gone(pid, time.monotonic() + 30)
        self._forget()

    def kill(self) -> None:
        """SIGKILL the server (simulates a crash) and wait for it to vanish. No-op if down."""
        pid = self._current_pid()
        if pid is not None:
            self._signal(pid, signal.SIGKILL)
            if not self._wait_gone(pid, time.monotonic() + 30):
                raise RuntimeError(f"{self.name}: pid {pid} survived SIGKILL")
        self._forget()

    def _signal(self, pid: int, sig: signal.Signals) -> None:
        with suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _forget(self) -> None:
        """Drop process bookkeeping after the server is known to be down."""
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        self.pid = None


class _EarlyExit(Exception):
    """mariadbd exited before it became ready."""

    def __init__(self, returncode: int) -> None:
        super().__init__(returncode)
        self.returncode = returncode
