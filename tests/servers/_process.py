"""Child processes for test servers: own session, log file, lifeline, terminate-then-kill.

:class:`ServerProcess` starts one server command as the leader of a new session (so it and
everything it forks form one process group we can signal as a whole), with stdin closed and
stdout/stderr appended to a log file.

Lifeline: every child gets the read end of a pipe whose only write end stays in the test
process. When the test process dies without cleaning up (SIGKILL, crash), the child reads EOF
and shuts itself down, so no server outlives its test session. Servers we cannot teach that
(memcached, moto_server) run under a *leash*: this file run as a script, stdlib only, which
starts the real command as its child, ends it on lifeline EOF or SIGTERM/SIGINT (with SIGTERM,
or a signal of the caller's choice for servers that are slow to stop) and reaps it.
Our Swift launcher watches the lifeline itself (``lifeline="self"``).

This module imports only the standard library: it is also run by other interpreters.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Self

__all__ = ["LIFELINE_ENV", "PortTaken", "START_ATTEMPTS", "ServerProcess", "SingleProcessServer", "find_free_port",
           "group_members", "stop_all", "tail"]

#: Environment variable naming the lifeline's read fd inside the child.
LIFELINE_ENV = "BACKUPD_TESTSERVER_LIFELINE_FD"

#: Log text meaning "the port we picked was taken meanwhile": retry with another port.
BIND_ERROR_MARKERS = ("Address already in use", "Could not bind", "EADDRINUSE")

_LEASH_GRACE = 5.0


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

    ``lifeline``: ``"leash"`` wraps the command in this file's leash (any command);
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
            argv = [sys.executable, os.path.abspath(__file__), str(self.leash_signal), "--",
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


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group ``pgid`` (from /proc)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry.name))
    return members


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(fields[9])
    return inodes


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _wait_exited(pid: int, timeout: float) -> bool:
    """True once ``pid`` (our child) has exited, without reaping it; False on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True  # already reaped
        if info is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class PortTaken(Exception):
    """A server could not bind its port (raised by ``_wait_ready``; start picks another)."""


START_ATTEMPTS = 3


class SingleProcessServer:
    """The life cycle of a test server that runs as one :class:`ServerProcess` (moto,
    carbon-cache). Subclasses set ``name`` and ``port`` (None: pick a free one) and implement
    :meth:`_process` (the process for ``self.port``, not started) and :meth:`_serves`."""

    name = "server"
    port: int | None = None
    _proc: ServerProcess | None = None

    def _process(self) -> ServerProcess:
        raise NotImplementedError

    def _serves(self) -> bool:
        """True once the server answers on ``self.port``; raises :class:`PortTaken` when
        something else answers there."""
        raise NotImplementedError

    def _wait_ready(self, deadline: float, offset: int) -> None:
        """Return once :meth:`_serves`; :class:`PortTaken` if the process died of a bind
        error (its log from ``offset`` says so), RuntimeError for any other death or at
        ``deadline``."""
        assert self._proc is not None
        while True:
            code = self._proc.exit_code()
            if code is not None:
                with open(self.log_path, "rb") as f:
                    f.seek(offset)
                    fresh = f.read().decode(errors="replace")
                if any(marker in fresh for marker in BIND_ERROR_MARKERS):
                    raise PortTaken()
                raise RuntimeError(f"{self.name} exited with code {code} during start:\n{tail(self.log_path)}")
            if self._serves():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready in time:\n{tail(self.log_path)}")
            time.sleep(0.05)

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until it serves. A port given to the constructor (or kept from an
        earlier start) is reused; otherwise a free one is picked, and picked again if it was
        taken meanwhile."""
        if self.running():
            raise RuntimeError(f"{self.name} already running on port {self.port}")
        fixed_port = self.port is not None
        for attempt in range(START_ATTEMPTS):
            if self.port is None or (attempt and not fixed_port):
                self.port = find_free_port()
            self._proc = self._process()
            offset = self._proc.log_offset()
            self._proc.start()
            try:
                self._wait_ready(time.monotonic() + timeout, offset)
                return
            except PortTaken:
                self.kill()
                if fixed_port:
                    raise RuntimeError(f"{self.name}: port {self.port} is taken:\n{tail(self.log_path)}") from None
            except BaseException:
                self.kill()
                raise
        raise RuntimeError(f"{self.name}: ports kept being taken; gave up")

    @property
    def pid(self) -> int | None:
        """Pid of the leash running the server (leader of its process group), if started."""
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, SIGKILL after ``timeout`` s. Idempotent."""
        if self._proc is not None:
            self._proc.stop(timeout)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL: what the server held only in memory is lost. Idempotent."""
        if self._proc is not None:
            self._proc.kill()
            self._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


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


# ----------------------------------------------------------------------------- the leash
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
