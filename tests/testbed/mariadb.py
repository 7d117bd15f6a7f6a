"""Throwaway MariaDB servers for tests and benchmarks.

Every instance lives in its own directory (``root``): datadir, tmpdir, binlogs, relay logs,
pid file, logs and (when the path is short enough) its unix socket. Instances are cheap because
their datadir is a ``cp -a`` of a pristine template built once per machine/cache directory by
``mariadb-install-db`` and shared between processes through an ``fcntl`` lock.

Nothing here touches the system MariaDB: every server runs with ``--no-defaults``, its own
socket and a free loopback port.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

from tests.testbed.lifecycle import ServerLifecycle, find_free_port
from tests.testbed.template import _binary, mariadb_version, template_datadir

__all__ = [
    "MariaDBServer",
    "find_free_port",
    "mariadb_version",
    "template_datadir",
]

# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


@dataclass
class MariaDBServer(ServerLifecycle):
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

    # ------------------------------- lifecycle (start/stop/kill: see ServerLifecycle)
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
