"""Logical full backups with mysqldump, plus the same-snapshot per-table reference.

The stream is mysqldump's stdout, read in 1 MiB chunks from an enlarged pipe; mysqldump's
stderr goes to a file (never an unread pipe) and is quoted if it fails. The password reaches
mysqldump through a 0600 option file. After the stream is drained the source checks mysqldump's
exit status and its "Dump completed" trailer, and that the coordinates mysqldump printed equal
those of the reference snapshot (see ``backupd.sources.snapshot``).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Callable, Iterator

import pymysql

from backupd.config import ShardConfig
from backupd.errors import BackupdError, SourceError
from backupd.model import Coordinates, Reference, utc_now
from backupd.mysql import connect, major_minor, option_file, query, server_info, user_databases
from backupd.processes import enlarge_pipe, file_tail
from backupd.reference import TableInfo, compute_reference
from backupd.sources.base import SourceResult
from backupd.sources.snapshot import CommitBlock, open_reference_snapshot

log = logging.getLogger(__name__)

READ_CHUNK = 1024 * 1024
HEADER_LIMIT = 4 * 1024 * 1024
TAIL_KEEP = 64 * 1024
_HEADER_COORDS = re.compile(
    rb"^-- CHANGE (?:MASTER|REPLICATION SOURCE) TO (?:MASTER|SOURCE)_LOG_FILE='([^']+)', "
    rb"(?:MASTER|SOURCE)_LOG_POS=(\d+);", re.M)
_TRAILER = re.compile(rb"^-- Dump completed", re.M)
_TRAILER_GTID = re.compile(rb"^-- SET GLOBAL gtid_slave_pos='([^']*)';", re.M)


@functools.lru_cache(maxsize=8)
def client_version(binary: str) -> tuple[str, str]:
    """``(flavour, version)`` of a mysqldump binary: ``("mariadb", "10.11.19")`` or ``("mysql", "8.0.36")``."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30,
                             check=False).stdout
    except FileNotFoundError:
        raise SourceError(f"mysqldump binary '{binary}' not found",
                          hint="install mariadb-client or set [backupd] mysqldump") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"mysqldump binary '{binary}' did not answer --version within 30s") from None
    flavour = "mariadb" if "mariadb" in out.lower() else "mysql"
    match = re.search(r"Distrib (\d+\.\d+\.\d+)", out) or re.search(r"Ver (\d+\.\d+\.\d+)", out)
    return flavour, match.group(1) if match else "unknown"


def coordinate_args(flavour: str, version: str) -> list[str]:
    """The flags that make mysqldump print its snapshot's binlog coordinates (commented)."""
    if flavour == "mariadb":
        return ["--master-data=2", "--gtid"]
    if major_minor(version) >= (8, 0) and tuple(map(int, version.split(".")[:3])) >= (8, 0, 26):
        return ["--source-data=2", "--set-gtid-purged=COMMENTED"]
    return ["--master-data=2", "--set-gtid-purged=COMMENTED"]


def common_args(binary: str, option_path: str, flavour: str, version: str) -> list[str]:
    """Flags every mysqldump run of backupd gets (the option file must come first)."""
    return [binary, f"--defaults-file={option_path}", "--single-transaction", "--quick",
            "--hex-blob", "--default-character-set=utf8mb4", "--max-allowed-packet=1G",
            "--no-tablespaces", *coordinate_args(flavour, version)]


def mysqldump_args(binary: str, option_path: str, flavour: str, version: str,
                   databases: list[str]) -> list[str]:
    """The command line of a full logical backup."""
    return common_args(binary, option_path, flavour, version) + \
        ["--routines", "--triggers", "--events", "--databases", *databases]


@dataclass(frozen=True)
class SnapshotInfo:
    """Where the coordinated snapshots sit, as seen while commits were blocked."""

    coordinates: Coordinates
    snapshot_at: datetime        # backupd's clock (UTC)
    server_utc: datetime         # the server's UTC_TIMESTAMP(6), naive
    server_local: datetime       # the server's NOW(6) in its default time zone, naive


class SnapshotSession:
    """Connections to one shard whose snapshots, and those of the mysqldump runs it starts,
    all see the same data (see ``backupd.sources.snapshot``).

    ``open_dumps(build)`` blocks commits, opens ``len(self.snapshots)`` snapshot connections,
    calls ``build(info)`` for the mysqldump command lines, starts them, waits until each has
    printed its coordinates, unblocks commits and checks that every snapshot is at the same
    binlog position. Closing the session kills what is still running and closes everything.
    """

    def __init__(self, shard_id: str, shard: ShardConfig, *, mysqldump: str, work_dir: str | None,
                 snapshot_connections: int):
        self.shard_id = shard_id
        self.shard = shard
        self.binary = mysqldump
        self.work_dir = work_dir
        self.label = f"shard {shard_id}"
        self._stack = ExitStack()
        try:
            self.control = self._connect()
            self.snapshots = [self._connect(read_timeout=None) for _ in range(snapshot_connections)]
            self.server = server_info(self.control, label=self.label)
            self.option_path = str(self._stack.enter_context(option_file(shard, work_dir)))
        except BaseException:
            self._stack.close()
            raise

    def _connect(self, **options: Any) -> pymysql.connections.Connection:
        conn = connect(self.shard, label=self.label, **options)
        self._stack.callback(conn.close)
        return conn

    @property
    def flavour(self) -> str:
        """mysqldump's flavour ("mariadb" or "mysql"), asked only when a dump needs it."""
        return client_version(self.binary)[0]

    @property
    def version(self) -> str:
        return client_version(self.binary)[1]

    def databases(self) -> list[str]:
        """The shard's configured databases (checked to exist), or every user database."""
        present = user_databases(self.control, label=self.label)
        if not self.shard.databases:
            if not present:
                raise SourceError(f"{self.label}: has no user databases to back up")
            return present
        missing = [d for d in self.shard.databases if d not in present]
        if missing:
            raise SourceError(f"{self.label}: database '{missing[0]}' (from shards.{self.shard_id}."
                              f"databases) does not exist on {self.shard.describe()}")
        return list(self.shard.databases)

    def common_args(self, *, coordinates: bool = True) -> list[str]:
        """mysqldump's shared flags; ``coordinates=False`` for runs outside the coordinated
        snapshot (schema objects, which are not versioned by snapshots anyway)."""
        args = common_args(self.binary, self.option_path, self.flavour, self.version)
        return args if coordinates else [a for a in args if a not in coordinate_args(self.flavour, self.version)]

    @property
    def tool_versions(self) -> dict[str, str]:
        return {"mysqldump": f"{self.flavour} {self.version}"}

    def open_dumps(self, build: Callable[[SnapshotInfo], list[list[str]]]
                   ) -> tuple[SnapshotInfo, list["DumpProcess"]]:
        block = CommitBlock(self.control, self.server, lock_wait_timeout=self.shard.lock_wait_timeout,
                            label=self.label)
        block.acquire()
        try:
            seen = [open_reference_snapshot(conn, self.server, label=self.label) for conn in self.snapshots]
            now_utc, now_local = query(self.snapshots[0], "SELECT UTC_TIMESTAMP(6), NOW(6)", label=self.label)[0]
            info = SnapshotInfo(seen[0], utc_now(), now_utc, now_local)
            dumps = [self.start_dump(args) for args in build(info)]
            for dump in dumps:
                dump.read_header()
        finally:
            block.release()
        log.debug("%s: snapshot at %s:%s, commits unblocked", self.label,
                  info.coordinates.binlog_file, info.coordinates.binlog_pos)
        ours = (info.coordinates.binlog_file, info.coordinates.binlog_pos)
        for other in seen[1:]:
            if (other.binlog_file, other.binlog_pos) != ours:
                raise SourceError(f"{self.label}: two reference snapshots disagree "
                                  f"({other.binlog_file}:{other.binlog_pos} vs {ours[0]}:{ours[1]})")
        for dump in dumps:
            dump.check_coordinates(info.coordinates)
        return info, dumps

    def start_dump(self, args: list[str]) -> "DumpProcess":
        """Start one mysqldump run, killed (if still running) when the session closes."""
        stderr_file = self._stack.enter_context(tempfile.TemporaryFile(dir=self.work_dir))
        dump = DumpProcess(self.label, args, stderr_file)
        self._stack.callback(dump.reap)
        return dump

    def scan_reference(self, databases: list[str], *, tables: list[TableInfo] | None = None,
                       connections: list[int] | None = None) -> "ReferenceScanner":
        """Start computing the reference in a thread, on the snapshot connections numbered
        ``connections`` (default: the first)."""
        conns = [self.snapshots[i] for i in (connections or [0])]
        scanner = ReferenceScanner(self, conns, databases, tables)
        self._stack.callback(scanner.stop)
        scanner.start()
        return scanner

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "SnapshotSession":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class MysqldumpSource:
    """A full logical backup of one shard (see the module docstring)."""

    method = "mysqldump"

    def __init__(self, shard_id: str, shard: ShardConfig, *, mysqldump: str = "mysqldump",
                 work_dir: str | None = None):
        self.shard_id = shard_id
        self.shard = shard
        self.binary = mysqldump
        self.work_dir = work_dir

    @contextmanager
    def open(self) -> Iterator["DumpStream"]:
        with SnapshotSession(self.shard_id, self.shard, mysqldump=self.binary,
                             work_dir=self.work_dir, snapshot_connections=1) as session:
            databases = session.databases()
            info, (dump,) = session.open_dumps(
                lambda _: [mysqldump_args(self.binary, session.option_path, session.flavour,
                                          session.version, databases)])
            scanner = session.scan_reference(databases)
            yield DumpStream(session, dump, scanner, databases, info)


class DumpStream:
    """A full backup's stream: mysqldump's stdout, then the facts of its snapshot."""

    def __init__(self, session: SnapshotSession, dump: "DumpProcess", scanner: "ReferenceScanner",
                 databases: list[str], info: SnapshotInfo):
        self.session = session
        self.dump = dump
        self.scanner = scanner
        self.databases = databases
        self.info = info
        self._drained = False

    def chunks(self) -> Iterator[bytes]:
        yield from self.dump.chunks()
        self._drained = True

    def result(self) -> SourceResult:
        if not self._drained:
            raise SourceError(f"{self.session.label}: result() called before the dump was drained")
        reference = self.scanner.join()
        self.dump.check_trailer_gtid(self.info.coordinates)
        return SourceResult(method=MysqldumpSource.method, databases=self.databases,
                            snapshot_at=self.info.snapshot_at, coordinates=self.info.coordinates,
                            server=self.session.server, reference=reference,
                            tool_versions=self.session.tool_versions)


class DumpProcess:
    """One running mysqldump: its stdout as chunks, its header coordinates, exit status and
    trailer checked. stderr goes to a file and is quoted when it fails."""

    def __init__(self, label: str, args: list[str], stderr_file: IO[bytes]):
        self.label = label
        self.stderr_file = stderr_file
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_file, bufsize=0,
            start_new_session=True)  # its own process group: reap() kills wrappers' children too
        self._fd = self.process.stdout.fileno()  # type: ignore[union-attr]
        self._pending: list[bytes] = []
        self._tail = b""
        self._header_coords: tuple[str, int] | None = None
        enlarge_pipe(self._fd)

    def read_header(self) -> None:
        """Read until mysqldump has printed its binlog coordinates (it has its snapshot then)."""
        header = b""
        while len(header) < HEADER_LIMIT:
            chunk = os.read(self._fd, READ_CHUNK)
            if not chunk:
                self._finish_process()  # raises with mysqldump's stderr if it failed
                break
            self._pending.append(chunk)
            header += chunk
            match = _HEADER_COORDS.search(header)
            if match:
                self._header_coords = (match.group(1).decode(), int(match.group(2)))
                return
        raise SourceError(f"{self.label}: mysqldump printed no binlog coordinates in its "
                          f"first {len(header)} bytes", detail=self._stderr_tail())

    def check_coordinates(self, coordinates: Coordinates) -> None:
        assert self._header_coords is not None
        ours = (coordinates.binlog_file, coordinates.binlog_pos)
        if self._header_coords != ours:
            raise SourceError(f"{self.label}: mysqldump's snapshot is at "
                              f"{self._header_coords[0]}:{self._header_coords[1]} but the "
                              f"reference snapshot is at {ours[0]}:{ours[1]}; refusing a backup "
                              "whose reference may not match its data")

    def chunks(self) -> Iterator[bytes]:
        """The whole output; at its end, mysqldump's exit status and trailer are checked."""
        pending, self._pending = self._pending, []
        for chunk in pending:
            self._keep_tail(chunk)
            yield chunk
        while True:
            chunk = os.read(self._fd, READ_CHUNK)
            if not chunk:
                break
            self._keep_tail(chunk)
            yield chunk
        self._finish_process()
        log.debug("%s: mysqldump finished", self.label)
        if not _TRAILER.search(self._tail):
            raise SourceError(f"{self.label}: mysqldump exited 0 but its output has no "
                              "'Dump completed' trailer (truncated dump)", detail=self._stderr_tail())

    def check_trailer_gtid(self, coordinates: Coordinates) -> None:
        """The GTID in mysqldump's trailer (MariaDB) must be the reference snapshot's."""
        trailer_gtid = _TRAILER_GTID.search(self._tail)
        if trailer_gtid and coordinates.gtid and trailer_gtid.group(1).decode() != coordinates.gtid:
            raise SourceError(f"{self.label}: mysqldump recorded GTID "
                              f"{trailer_gtid.group(1).decode()!r} but the reference snapshot is at "
                              f"{coordinates.gtid!r}")

    def _keep_tail(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk[-TAIL_KEEP:])[-TAIL_KEEP:]

    def _finish_process(self) -> None:
        code = self.process.wait()
        if code != 0:
            tail = self._stderr_tail()
            raise SourceError(f"{self.label}: mysqldump failed with exit status {code}: "
                              f"{tail.splitlines()[-1] if tail else 'no message'}", detail=tail)

    def _stderr_tail(self) -> str:
        return file_tail(self.stderr_file)

    def reap(self) -> None:
        """Make sure mysqldump (and its process group) is gone."""
        process = self.process
        if process.returncode is None:  # not reaped yet, so its group id cannot have been reused
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        process.wait()
        if process.stdout:
            process.stdout.close()


class ReferenceScanner:
    """Computes the reference on snapshot connections, in a thread, while the dump streams."""

    def __init__(self, session: SnapshotSession, conns: list[pymysql.connections.Connection],
                 databases: list[str], tables: list[TableInfo] | None):
        self.session = session
        self.conns = conns
        self.databases = databases
        self.tables = tables
        self._stop = threading.Event()
        self._result: Reference | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"reference-{session.shard_id}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = compute_reference(self.conns, self.databases, self.session.shard.reference,
                                             label=self.session.label, tables=self.tables,
                                             should_stop=self._stop.is_set)
        except BaseException as exc:  # reported by join()
            self._error = exc

    def join(self) -> Reference:
        self._thread.join()
        log.debug("%s: reference ready", self.session.label)
        if self._error is not None:
            if isinstance(self._error, BackupdError):
                raise self._error
            raise SourceError(f"{self.session.label}: computing the table reference failed: {self._error}")
        assert self._result is not None
        return self._result

    def stop(self) -> None:
        """Abandon the scan: stop between tables and kill the running queries."""
        if not self._thread.is_alive():
            return
        self._stop.set()
        for conn in self.conns:
            try:
                query(self.session.control, f"KILL QUERY {conn.thread_id()}", label=self.session.label)
            except Exception:
                pass
        self._thread.join(timeout=30)
