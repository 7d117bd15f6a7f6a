"""Logical full backups with mysqldump, plus the same-snapshot per-table reference.

The stream is mysqldump's stdout, read in 1 MiB chunks from an enlarged pipe; mysqldump's
stderr goes to a file (never an unread pipe) and is quoted if it fails. The password reaches
mysqldump through a 0600 option file. After the stream is drained the source checks mysqldump's
exit status and its "Dump completed" trailer, and that the coordinates mysqldump printed equal
those of the reference snapshot (see ``backupd.sources.snapshot``).
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import IO, Iterator

import pymysql

from backupd.config import ShardConfig
from backupd.errors import BackupdError, SourceError
from backupd.model import Coordinates, Reference, ServerInfo, utc_now
from backupd.mysql import connect, major_minor, option_file, query, server_info, user_databases
from backupd.reference import TableInfo, compute_reference, list_tables
from backupd.sources.base import SourceResult
from backupd.sources.snapshot import CommitBlock, open_reference_snapshot

log = logging.getLogger(__name__)

READ_CHUNK = 1024 * 1024
PIPE_SIZE = 1024 * 1024
HEADER_LIMIT = 4 * 1024 * 1024
TAIL_KEEP = 64 * 1024
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
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
    flavour = "mariadb" if "mariadb" in out.lower() else "mysql"
    match = re.search(r"Distrib (\d+\.\d+\.\d+)", out) or re.search(r"Ver (\d+\.\d+\.\d+)", out)
    return flavour, match.group(1) if match else "unknown"


def mysqldump_args(binary: str, option_path: str, flavour: str, version: str,
                   databases: list[str]) -> list[str]:
    """The mysqldump command line (the option file must come first)."""
    args = [binary, f"--defaults-file={option_path}", "--single-transaction", "--quick",
            "--routines", "--triggers", "--events", "--hex-blob", "--default-character-set=utf8mb4",
            "--max-allowed-packet=1G", "--no-tablespaces"]
    if flavour == "mariadb":
        args += ["--master-data=2", "--gtid"]
    elif major_minor(version) >= (8, 0) and tuple(map(int, version.split(".")[:3])) >= (8, 0, 26):
        args += ["--source-data=2", "--set-gtid-purged=COMMENTED"]
    else:
        args += ["--master-data=2", "--set-gtid-purged=COMMENTED"]
    return args + ["--databases", *databases]


class MysqldumpSource:
    """A full logical backup of one shard (see the module docstring)."""

    method = "mysqldump"

    def __init__(self, shard_id: str, shard: ShardConfig, *, mysqldump: str = "mysqldump",
                 work_dir: str | None = None):
        self.shard_id = shard_id
        self.shard = shard
        self.binary = mysqldump
        self.work_dir = work_dir
        self.label = f"shard {shard_id}"

    @contextmanager
    def open(self) -> Iterator["DumpStream"]:
        with ExitStack() as stack:
            control = connect(self.shard, label=self.label)
            stack.callback(control.close)
            reference_conn = connect(self.shard, label=self.label, read_timeout=None)
            stack.callback(reference_conn.close)
            server = server_info(control, label=self.label)
            databases = self._databases(control)
            flavour, version = client_version(self.binary)
            option_path = stack.enter_context(option_file(self.shard, self.work_dir))
            stderr_file = stack.enter_context(tempfile.TemporaryFile(dir=self.work_dir))

            block = CommitBlock(control, server, lock_wait_timeout=self.shard.lock_wait_timeout,
                                label=self.label)
            block.acquire()
            stack.callback(block.release)
            coordinates = open_reference_snapshot(reference_conn, server, label=self.label)
            snapshot_at = utc_now()
            process = subprocess.Popen(
                mysqldump_args(self.binary, str(option_path), flavour, version, databases),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_file, bufsize=0,
                start_new_session=True)  # its own process group: _reap kills wrappers' children too
            stack.callback(_reap, process)
            stream = DumpStream(self, process, stderr_file, databases, server, coordinates,
                                snapshot_at, {"mysqldump": f"{flavour} {version}"})
            stream.read_header()
            block.release()
            log.debug("%s: snapshot at %s:%s, commits unblocked", self.label,
                      coordinates.binlog_file, coordinates.binlog_pos)
            stream.check_header_coordinates()

            scanner = _ReferenceScanner(self, control, reference_conn, databases)
            stack.callback(scanner.stop)
            stream.scanner = scanner
            scanner.start()
            yield stream

    def _databases(self, conn: pymysql.connections.Connection) -> list[str]:
        present = user_databases(conn, label=self.label)
        if not self.shard.databases:
            if not present:
                raise SourceError(f"{self.label}: has no user databases to back up")
            return present
        missing = [d for d in self.shard.databases if d not in present]
        if missing:
            raise SourceError(f"{self.label}: database '{missing[0]}' (from shards.{self.shard_id}."
                              f"databases) does not exist on {self.shard.describe()}")
        return list(self.shard.databases)


class DumpStream:
    """mysqldump's stdout as chunks, with its header checked and its trailer verified."""

    def __init__(self, source: MysqldumpSource, process: subprocess.Popen[bytes], stderr_file: IO[bytes],
                 databases: list[str], server: ServerInfo, coordinates: Coordinates,
                 snapshot_at: datetime, tool_versions: dict[str, str]):
        self.source = source
        self.process = process
        self.stderr_file = stderr_file
        self.databases = databases
        self.server = server
        self.coordinates = coordinates
        self.snapshot_at = snapshot_at
        self.tool_versions = tool_versions
        self.scanner: _ReferenceScanner | None = None
        self._fd = process.stdout.fileno()  # type: ignore[union-attr]
        self._pending: list[bytes] = []
        self._tail = b""
        self._header_coords: tuple[str, int] | None = None
        self._drained = False
        try:
            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # a smaller pipe only costs speed

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
        raise SourceError(f"{self.source.label}: mysqldump printed no binlog coordinates in its "
                          f"first {len(header)} bytes", detail=self._stderr_tail())

    def check_header_coordinates(self) -> None:
        assert self._header_coords is not None
        ours = (self.coordinates.binlog_file, self.coordinates.binlog_pos)
        if self._header_coords != ours:
            raise SourceError(f"{self.source.label}: mysqldump's snapshot is at "
                              f"{self._header_coords[0]}:{self._header_coords[1]} but the "
                              f"reference snapshot is at {ours[0]}:{ours[1]}; refusing a backup "
                              "whose reference may not match its data")

    def chunks(self) -> Iterator[bytes]:
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
        log.debug("%s: mysqldump finished", self.source.label)
        if not _TRAILER.search(self._tail):
            raise SourceError(f"{self.source.label}: mysqldump exited 0 but its output has no "
                              "'Dump completed' trailer (truncated dump)", detail=self._stderr_tail())
        self._drained = True

    def result(self) -> SourceResult:
        if not self._drained:
            raise SourceError(f"{self.source.label}: result() called before the dump was drained")
        assert self.scanner is not None
        reference = self.scanner.join()
        log.debug("%s: reference of %d tables ready", self.source.label, len(reference.tables))
        coordinates = self.coordinates
        trailer_gtid = _TRAILER_GTID.search(self._tail)
        if trailer_gtid and coordinates.gtid and trailer_gtid.group(1).decode() != coordinates.gtid:
            raise SourceError(f"{self.source.label}: mysqldump recorded GTID "
                              f"{trailer_gtid.group(1).decode()!r} but the reference snapshot is at "
                              f"{coordinates.gtid!r}")
        return SourceResult(method=self.source.method, databases=self.databases,
                            snapshot_at=self.snapshot_at,
                            coordinates=coordinates, server=self.server, reference=reference,
                            tool_versions=self.tool_versions)

    def _keep_tail(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk[-TAIL_KEEP:])[-TAIL_KEEP:]

    def _finish_process(self) -> None:
        code = self.process.wait()
        if code != 0:
            raise SourceError(f"{self.source.label}: mysqldump failed with exit status {code}: "
                              f"{self._stderr_tail().splitlines()[-1] if self._stderr_tail() else 'no message'}",
                              detail=self._stderr_tail())

    def _stderr_tail(self) -> str:
        self.stderr_file.seek(0, os.SEEK_END)
        size = self.stderr_file.tell()
        self.stderr_file.seek(max(0, size - 4096))
        return self.stderr_file.read().decode("utf-8", "replace").strip()


class _ReferenceScanner:
    """Computes the reference in the reference snapshot, in a thread, while the dump streams."""

    def __init__(self, source: MysqldumpSource, control: pymysql.connections.Connection,
                 conn: pymysql.connections.Connection, databases: list[str]):
        self.source = source
        self.control = control
        self.conn = conn
        self.databases = databases
        self._stop = threading.Event()
        self._result: Reference | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"reference-{source.shard_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            tables: list[TableInfo] = list_tables(self.conn, self.databases, label=self.source.label)
            self._result = compute_reference(self.conn, self.databases, self.source.shard.reference,
                                             label=self.source.label, tables=tables,
                                             should_stop=self._stop.is_set)
        except BaseException as exc:  # reported by join()
            self._error = exc

    def join(self) -> Reference:
        self._thread.join()
        if self._error is not None:
            if isinstance(self._error, BackupdError):
                raise self._error
            raise SourceError(f"{self.source.label}: computing the table reference failed: {self._error}")
        assert self._result is not None
        return self._result

    def stop(self) -> None:
        """Abandon the scan: stop between tables and kill the running query."""
        if not self._thread.is_alive():
            return
        self._stop.set()
        try:
            query(self.control, f"KILL QUERY {self.conn.thread_id()}", label=self.source.label)
        except Exception:
            pass
        self._thread.join(timeout=30)


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Make sure mysqldump (and its process group) is gone when the source closes."""
    if process.returncode is None:  # not reaped yet, so its group id cannot have been reused
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    process.wait()
    if process.stdout:
        process.stdout.close()
