"""A reference snapshot that sees exactly what mysqldump's snapshot sees.

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
"""

from __future__ import annotations

import logging

import pymysql

from backupd.errors import SourceError
from backupd.model import Coordinates, ServerInfo
from backupd.mysql import major_minor, query

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
                    self.held = True
                    query(self.conn, f"BACKUP STAGE {stage}", label=self.label)
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
        if not file:
            raise SourceError(f"{label}: binary logging is off; backupd needs log_bin to record "
                              "the snapshot's coordinates", hint="enable log_bin on the shard")
        gtid = query(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, int(pos)), label=label)[0][0]
        return Coordinates(binlog_file=file, binlog_pos=int(pos), gtid=gtid or None)
    rows = query(conn, "SHOW MASTER STATUS", label=label)
    if not rows:
        raise SourceError(f"{label}: binary logging is off; backupd needs log_bin to record "
                          "the snapshot's coordinates", hint="enable log_bin on the shard")
    gtid = query(conn, "SELECT @@GLOBAL.gtid_executed", label=label)[0][0]
    return Coordinates(binlog_file=rows[0][0], binlog_pos=int(rows[0][1]), gtid=gtid or None)
