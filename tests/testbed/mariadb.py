"""Throwaway MariaDB servers for tests and benchmarks.

Every instance lives in its own directory (``root``): datadir, tmpdir, binlogs, relay logs,
pid file, logs and (when the path is short enough) its unix socket. Instances are cheap because
their datadir is a ``cp -a`` of a pristine template built once per machine/cache directory by
``mariadb-install-db`` and shared between processes through an ``fcntl`` lock.

Nothing here touches the system MariaDB: every server runs with ``--no-defaults``, its own
socket and a free loopback port.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

__all__ = [
    "MariaDBServer",
    "find_free_port",
    "mariadb_version",
    "template_datadir",
]

# Options used to build the template datadir. Part of the template's cache key.
INSTALL_DB_OPTIONS: tuple[str, ...] = (
    "--no-defaults",
    "--user=root",
    "--auth-root-authentication-method=normal",
    "--skip-test-db",
    "--skip-name-resolve",
)

# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_BIND_ERROR_MARKERS = ("Bind on TCP/IP port", "Address already in use")
_PORT_RETRIES = 5


def _binary(name: str) -> str:
    """Return the absolute path of executable ``name`` (also searching the sbin dirs)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_BIN_DIRS])
    path = shutil.which(name, path=search)
    if path is None:
        raise FileNotFoundError(f"{name} not found in PATH or {_EXTRA_BIN_DIRS}")
    return path


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0).

    Inherently racy: :meth:`MariaDBServer.start` retries with a new port if the bind fails.
    """
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@functools.lru_cache(maxsize=1)
def mariadb_version() -> str:
    """Return the full ``mariadbd --version`` line (cached per process)."""
    out = subprocess.run(
        [_binary("mariadbd"), "--version"],
        check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    return out.stdout.strip()


def _template_name() -> str:
    """Cache key of the template datadir: version number plus a hash of version and options."""
    version = mariadb_version()
    match = re.search(r"Ver\s+(\S+)", version)
    number = re.sub(r"[^A-Za-z0-9.+-]+", "_", match.group(1) if match else "unknown")
    digest = hashlib.sha256("\n".join((version, *INSTALL_DB_OPTIONS)).encode()).hexdigest()
    return f"datadir-{number}-{digest[:12]}"


def _build_template(build_dir: Path) -> Path:
    """Run mariadb-install-db into ``build_dir/data`` (own tmpdir); return the datadir."""
    datadir = build_dir / "data"
    tmpdir = build_dir / "tmp"
    tmpdir.mkdir()
    cmd = [
        _binary("mariadb-install-db"),
        *INSTALL_DB_OPTIONS,
        f"--datadir={datadir}",
        f"--tmpdir={tmpdir}",
    ]
    result = subprocess.run(
        cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"mariadb-install-db failed (rc={result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return datadir


def template_datadir(cache_root: Path) -> Path:
    """Return a pristine, initialised datadir under ``cache_root``, building it once.

    Contract: the returned directory is complete and must be treated as read-only (copy it,
    never start a server on it). The directory name encodes the ``mariadbd --version`` string,
    so a server upgrade builds a new template. Safe to call concurrently from threads and
    processes: an exclusive ``fcntl.flock`` on ``<cache_root>/<name>.lock`` serialises builders,
    and the datadir is built in a temporary directory and renamed into place, so a present
    directory is always complete.
    """
    cache_root = Path(cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    name = _template_name()
    target = cache_root / name
    if target.is_dir():
        return target
    with open(cache_root / f"{name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if target.is_dir():
                return target
            for stale in cache_root.glob(f".build-{name}-*"):  # from a builder that died
                shutil.rmtree(stale, ignore_errors=True)
            build_dir = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=cache_root))
            try:
                _build_template(build_dir).rename(target)
            finally:
                shutil.rmtree(build_dir, ignore_errors=True)
            return target
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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


@dataclass
class MariaDBServer:
    """One throwaway mariadbd instance, fully contained in ``root``.

    Create with :meth:`create` (or rebuild from JSON state with :meth:`from_dict`), then
    :meth:`start`. All lifecycle methods are idempotent where it makes sense (``stop``,
    ``kill``, ``destroy`` on a stopped server are no-ops). An instance object is not meant to
    be driven from several threads at once, but distinct instances can start/stop in parallel.
    """

    name: str
    root: Path
    port: int
    server_id: int
    extra_args: list[str] = field(default_factory=list)
    pid: int | None = None
    _proc: subprocess.Popen[bytes] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # ----------------------------------------------------------------- derived paths
    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def tmpdir(self) -> Path:
        return self.root / "tmp"

    @property
    def pid_file(self) -> Path:
        return self.root / "mariadbd.pid"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    @property
    def stdout_log(self) -> Path:
        """Where the server's stdout/stderr go (normally almost empty)."""
        return self.root / "mariadbd.out"

    @property
    def binlog_base(self) -> Path:
        """``--log-bin`` base name: binlogs are ``<root>/binlog/bin.000001`` etc."""
        return self.root / "binlog" / "bin"

    @property
    def relay_base(self) -> Path:
        return self.root / "relay" / "relay"

    @property
    def socket(self) -> Path:
        """Unix socket: ``<root>/mysqld.sock``, or a short /tmp path derived from ``root``
        when that would exceed the 107-byte sun_path limit."""
        preferred = self.root / "mysqld.sock"
        if len(os.fsencode(preferred)) <= _MAX_SOCKET_PATH:
            return preferred
        digest = hashlib.sha256(os.fsencode(self.root.resolve())).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"mariadb-tb-{digest}.sock"

    # ----------------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        root: Path,
        name: str,
        server_id: int,
        cache_root: Path,
        extra_args: Sequence[str] = (),
    ) -> MariaDBServer:
        """Copy the template datadir into ``root/data`` and pick a free port (not started).

        ``root`` may exist but must not already contain a datadir.
        """
        root = Path(root).absolute()
        server = cls(name=name, root=root, port=find_free_port(), server_id=server_id,
                     extra_args=list(extra_args))
        if server.datadir.exists():
            raise FileExistsError(f"{server.datadir} already exists")
        template = template_datadir(cache_root)
        root.mkdir(parents=True, exist_ok=True)
        # --sparse=always: the 96 MiB redo log is mostly zeros; copies take ~6 MiB on disk.
        subprocess.run(["cp", "-a", "--sparse=always", str(template), str(server.datadir)],
                       check=True, stdin=subprocess.DEVNULL)
        for directory in (server.tmpdir, server.binlog_base.parent, server.relay_base.parent):
            directory.mkdir(parents=True, exist_ok=True)
        server.save_state()
        return server

    @property
    def state_file(self) -> Path:
        """``<root>/server.json``: this instance's state, for ``python -m tests.testbed server``."""
        return self.root / "server.json"

    def save_state(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, self.state_file)

    @classmethod
    def load(cls, root: Path) -> MariaDBServer:
        """The instance whose state ``save_state`` wrote under ``root``."""
        return cls.from_dict(json.loads((Path(root) / "server.json").read_text()))

    def control_commands(self) -> tuple[list[str], list[str]]:
        """``(start, stop)`` command lines that start/stop this instance from any process (the
        test bed's stand-in for ``systemctl start|stop mariadb``)."""
        repo = Path(__file__).resolve().parents[2]
        base = ["env", f"PYTHONPATH={repo}", sys.executable, "-m", "tests.testbed", "server",
                "--server-root", str(self.root)]
        return base + ["start"], base + ["stop"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; derived paths are included for consumers' convenience."""
        return {
            "name": self.name,
            "root": str(self.root),
            "port": self.port,
            "server_id": self.server_id,
            "extra_args": list(self.extra_args),
            "pid": self.pid,
            "socket": str(self.socket),
            "datadir": str(self.datadir),
            "tmpdir": str(self.tmpdir),
            "pid_file": str(self.pid_file),
            "error_log": str(self.error_log),
            "binlog_base": str(self.binlog_base),
            "relay_base": str(self.relay_base),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MariaDBServer:
        """Inverse of :meth:`to_dict` (derived keys are ignored)."""
        pid = data.get("pid")
        return cls(
            name=str(data["name"]),
            root=Path(data["root"]),
            port=int(data["port"]),
            server_id=int(data["server_id"]),
            extra_args=[str(a) for a in data.get("extra_args", [])],
            pid=int(pid) if pid is not None else None,
        )

    # ----------------------------------------------------------------- lifecycle
    def server_args(self) -> list[str]:
        """Full mariadbd command line for this instance."""
        return [
            _binary("mariadbd"),
            "--no-defaults",
            "--user=root",
            f"--datadir={self.datadir}",
            f"--tmpdir={self.tmpdir}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.socket}",
            f"--pid-file={self.pid_file}",
            f"--log-error={self.error_log}",
            f"--server-id={self.server_id}",
            f"--log-bin={self.binlog_base}",
            f"--relay-log={self.relay_base}",
            "--binlog-format=ROW",
            "--log-slave-updates=1",
            "--innodb-buffer-pool-size=128M",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
            "--skip-name-resolve",
            "--max-allowed-packet=256M",
            "--innodb-flush-log-at-trx-commit=2",
            "--sync-binlog=0",
            "--local-infile=1",
            *self.extra_args,
        ]

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

    def destroy(self) -> None:
        """Stop the server and delete ``root`` (and an out-of-root socket, if any)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        if not self.socket.is_relative_to(self.root):
            self.socket.unlink(missing_ok=True)

    # ----------------------------------------------------------------- SQL helpers
    def connect(self, database: str | None = None, **kw: Any) -> pymysql.connections.Connection:
        """New PyMySQL connection as root over the socket (utf8mb4, autocommit on).

        Keyword arguments override the defaults (e.g. ``local_infile=True``,
        ``cursorclass=pymysql.cursors.SSCursor``).
        """
        params: dict[str, Any] = {
            "unix_socket": str(self.socket),
            "user": "root",
            "password": "",
            "database": database,
            "charset": "utf8mb4",
            "autocommit": True,
        }
        params.update(kw)
        return pymysql.connect(**params)

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement on a fresh connection and return all rows."""
        with closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def execute(self, sql: str, args: Any = None) -> int:
        """Run one statement on a fresh connection; return the affected row count."""
        with closing(self.connect()) as conn, conn.cursor() as cur:
            return int(cur.execute(sql, args))


class _EarlyExit(Exception):
    """mariadbd exited before it became ready."""

    def __init__(self, returncode: int) -> None:
        super().__init__(returncode)
        self.returncode = returncode
