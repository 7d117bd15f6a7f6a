"""The snapshot hand-off: reference connections that see exactly what mysqldump's snapshot sees.

Sequence (the same idea as mydumper's coordinated snapshots, but blocking only commits):
1. a control connection blocks commits: ``BACKUP STAGE BLOCK_COMMIT`` on MariaDB >= 10.4
   (reads and uncommitted writes go on), ``FLUSH TABLES WITH READ LOCK`` elsewhere;
2. the reference connection opens ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` and reads the
   binlog coordinates of its snapshot;
3. the caller starts mysqldump and waits until mysqldump has printed its own coordinates
   (it opens its snapshot before that);
4. commits are unblocked.
No transaction can commit between the two snapshots, so both see the same data; the caller
checks that both report the same binlog position. Commits stall only for the milliseconds
between steps 1 and 4; ``lock_wait_timeout`` bounds the wait for the block itself.

``SnapshotSession`` holds the connections of one shard and runs that sequence for every source
(full, incremental, physical); ``ReferenceScanner`` computes the per-table reference on its
snapshot connections in a thread while the data streams.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import pymysql

from backupd.errors import BackupdError, SourceError
from backupd.mysql.connection import connect, major_minor, query, server_info, user_databases
from backupd.mysql.dump import DumpProcess, client_version, common_args, coordinate_args
from backupd.mysql.options import option_file
from backupd.mysql.reference import TableInfo, compute_reference
from backupd.mysql.replication import replica_snapshot
from backupd.repo.model import Coordinates, Reference, ServerInfo, TakenFrom, utc_now
from backupd.repo.repository import Shard

log = logging.getLogger(__name__)


def uses_backup_stage(server: ServerInfo) -> bool:
    return server.vendor == "mariadb" and major_minor(server.version) >= (10, 4)


class CommitBlock:
    """Blocks commits on the server while held (see the module docstring)."""

    def __init__(self, conn: pymysql.connections.Connection, server: ServerInfo, *,
                 lock_wait_timeout: float, label: str):
        self.conn = conn
        self.server = server
        self.label = label
        self.lock_wait_timeout = max(1, int(lock_wait_timeout))
        self.held = False

    def acquire(self) -> None:
        query(self.conn, f"SET SESSION lock_wait_timeout = {self.lock_wait_timeout}", label=self.label)
        try:
            if uses_backup_stage(self.server):
                for stage in ("START", "FLUSH", "BLOCK_DDL", "BLOCK_COMMIT"):
                    query(self.conn, f"BACKUP STAGE {stage}", label=self.label)
                    self.held = True  # from START on, BACKUP STAGE END releases what is held
            else:
                query(self.conn, "FLUSH TABLES WITH READ LOCK", label=self.label)
                self.held = True
        except Exception as exc:
            self.release()
            raise SourceError(f"{self.label}: could not block commits to take a consistent "
                              f"snapshot within {self.lock_wait_timeout}s: {exc}",
                              hint="a long-running DDL or query may hold table locks; retry later "
                                   "or raise lock_wait_timeout") from None

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            statement = "BACKUP STAGE END" if uses_backup_stage(self.server) else "UNLOCK TABLES"
            query(self.conn, statement, label=self.label)
        except Exception as exc:  # the connection closing releases the lock anyway
            log.warning("%s: releasing the commit block failed (%s); closing the connection", self.label, exc)
            self.conn.close()


def _close_quietly(conn: pymysql.connections.Connection) -> None:
    """Close ``conn`` unless something (a failed release) closed it already."""
    if conn.open:
        conn.close()


def open_reference_snapshot(conn: pymysql.connections.Connection, server: ServerInfo, *,
                            label: str) -> Coordinates:
    """Start a consistent-snapshot transaction on ``conn`` and return its binlog coordinates.

    Must be called while commits are blocked (so that SHOW MASTER STATUS matches on MySQL).
    """
    query(conn, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", label=label)
    query(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT", label=label)
    if server.vendor == "mariadb":
        status = dict(query(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'", label=label))
        file, pos = status.get("Binlog_snapshot_file"), status.get("Binlog_snapshot_position")
        if not file or pos is None:
            raise SourceError(f"{label}: binary logging is off; backupd needs log_bin to record "
                              "the snapshot's coordinates", hint="enable log_bin on the shard")
        gtid, server_id = query(conn, "SELECT BINLOG_GTID_POS(%s, %s), @@server_id", (file, int(pos)),
                                label=label)[0]
        return Coordinates(binlog_file=file, binlog_pos=int(pos), gtid=gtid or None, server_id=int(server_id))
    rows = query(conn, "SHOW MASTER STATUS", label=label)
    if not rows:
        raise SourceError(f"{label}: binary logging is off; backupd needs log_bin to record "
                          "the snapshot's coordinates", hint="enable log_bin on the shard")
    gtid, server_id = query(conn, "SELECT @@GLOBAL.gtid_executed, @@server_id", label=label)[0]
    return Coordinates(binlog_file=rows[0][0], binlog_pos=int(rows[0][1]), gtid=gtid or None,
                       server_id=int(server_id))


@dataclass(frozen=True)
class SnapshotInfo:
    """Where the coordinated snapshots sit, as seen while commits were blocked.

    ``coordinates`` are the server's own (what every snapshot and dump is checked against);
    ``recorded`` what the backup records: the same, or on a replica the primary's file and
    position it had applied (``backupd.mysql.replication``). ``snapshot_at`` is the time of the
    data: backupd's clock on a primary, minus the replica's lag on a replica; the server times
    are shifted back alike, so windows computed from them cover the data's time."""

    coordinates: Coordinates
    snapshot_at: datetime        # UTC
    server_utc: datetime         # the server's UTC_TIMESTAMP(6), naive
    server_local: datetime       # the server's NOW(6) in its default time zone, naive
    primary: Coordinates | None = None  # on a replica: the primary's coordinates applied
    taken_from: TakenFrom | None = None   # on a replica: which, and where the data time comes from

    @property
    def recorded(self) -> Coordinates:
        return self.primary or self.coordinates


class SnapshotSession:
    """Connections to one shard whose snapshots, and those of the mysqldump runs it starts,
    all see the same data (see ``backupd.mysql.snapshot``).

    ``open_dumps(build)`` blocks commits, opens ``len(self.snapshots)`` snapshot connections,
    calls ``build(info)`` for the mysqldump command lines, starts them, waits until each has
    printed its coordinates, unblocks commits and checks that every snapshot is at the same
    binlog position. Closing the session kills what is still running and closes everything.
    """

    def __init__(self, shard: Shard, *, mysqldump: str, work_dir: str | None, snapshot_connections: int):
        self.shard = shard
        self.config = shard.config
        self.binary = mysqldump
        self.work_dir = work_dir
        self.label = shard.label
        self._stack = ExitStack()
        try:
            self.control = self._connect()
            self.snapshots = [self._connect(read_timeout=None) for _ in range(snapshot_connections)]
            self.server = server_info(self.control, label=self.label)
            self.option_path = str(self._stack.enter_context(option_file(shard.config, work_dir)))
        except BaseException:
            self._stack.close()
            raise

    def open_snapshot_connection(self) -> int:
        """One more snapshot connection (call before ``open_dumps``); returns its index."""
        self.snapshots.append(self._connect(read_timeout=None))
        return len(self.snapshots) - 1

    def _connect(self, **options: Any) -> pymysql.connections.Connection:
        conn = connect(self.config, label=self.label, **options)
        self._stack.callback(_close_quietly, conn)
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
        if not self.config.databases:
            if not present:
                raise SourceError(f"{self.label}: has no user databases to back up")
            return present
        missing = [d for d in self.config.databases if d not in present]
        if missing:
            raise SourceError(f"{self.label}: database '{missing[0]}' (from shards.{self.shard.id}."
                              f"databases) does not exist on {self.config.describe()}")
        return list(self.config.databases)

    def common_args(self, *, coordinates: bool = True) -> list[str]:
        """mysqldump's shared flags; ``coordinates=False`` for runs outside the coordinated
        snapshot (schema objects, which are not versioned by snapshots anyway)."""
        args = common_args(self.binary, self.option_path, self.flavour, self.version)
        return args if coordinates else [a for a in args if a not in coordinate_args(self.flavour, self.version)]

    @property
    def tool_versions(self) -> dict[str, str]:
        return {"mysqldump": f"{self.flavour} {self.version}"}

    def open_dumps(self, build: Callable[[SnapshotInfo], list[list[str]]]
                   ) -> tuple[SnapshotInfo, list[DumpProcess]]:
        block = CommitBlock(self.control, self.server, lock_wait_timeout=self.config.lock_wait_timeout,
                            label=self.label)
        block.acquire()
        try:
            seen = [open_reference_snapshot(conn, self.server, label=self.label) for conn in self.snapshots]
            now_utc, now_local = query(self.snapshots[0], "SELECT UTC_TIMESTAMP(6), NOW(6)", label=self.label)[0]
            info = SnapshotInfo(seen[0], utc_now(), now_utc, now_local)
            if self.shard.from_replica:
                info = self._on_replica(info)
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

    def _on_replica(self, info: SnapshotInfo) -> SnapshotInfo:
        """The snapshot as taken on a replica: the primary's coordinates, the data's time."""
        seen = replica_snapshot(self.control, self.snapshots[0], self.config, now=info.snapshot_at,
                                label=f"{self.label} {self.shard.from_replica}")
        assert self.shard.from_replica is not None
        log.info("%s: snapshot on %s: %s", self.label, self.shard.from_replica, seen.describe())
        return replace(info, snapshot_at=info.snapshot_at - seen.lag, server_utc=info.server_utc - seen.lag,
                       server_local=info.server_local - seen.lag, primary=seen.primary(info.coordinates),
                       taken_from=seen.taken_from(self.shard.from_replica))

    def start_dump(self, args: list[str]) -> DumpProcess:
        """Start one mysqldump run, killed (if still running) when the session closes."""
        dump = DumpProcess(self.label, args, work_dir=self.work_dir)
        self._stack.callback(dump.reap)
        return dump

    def scan_reference(self, databases: list[str], *, tables: list[TableInfo] | None = None,
                       connections: list[int] | None = None) -> ReferenceScanner:
        """Start computing the reference in a thread, on the snapshot connections numbered
        ``connections`` (default: the first)."""
        conns = [self.snapshots[i] for i in (connections or [0])]
        scanner = ReferenceScanner(self, conns, databases, tables)
        self._stack.callback(scanner.stop)
        scanner.start()
        return scanner

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> SnapshotSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


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
        self._thread = threading.Thread(target=self._run, name=f"reference-{session.shard.id}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = compute_reference(self.conns, self.databases, self.session.config.reference,
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
