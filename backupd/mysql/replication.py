"""Backups from a replica: which server to read, how far behind it is, and the primary's
coordinates and data time at its snapshot.

``choose_server`` runs before a backup of a shard with ``backup_from = "replica"``: each of the
shard's ``replicas`` in order, the first whose replication runs (IO and SQL threads) and lags at
most ``max_lag`` is the one; with none, the primary when ``fallback_to_primary``, else
``ReplicaUnfit`` naming every replica and why (its lag, its stopped thread, its error).
``lag_policy = "warn"`` takes the first replica that answers whatever its state, saying so.

At the snapshot (commits blocked on the replica, so its SQL thread is held too),
``ReplicaStatus.read`` gives the primary's coordinates the replica has applied
(``Relay_Master_Log_File``/``Exec_Master_Log_Pos``; the GTID position is the replica's, which with
``log_slave_updates`` holds the primary's GTIDs), and ``data_time`` how old the snapshot's data
is: the heartbeat table's newest ``ts`` read inside the snapshot (exact: it is the primary's
clock as of the last heartbeat applied), else ``Seconds_Behind_Master`` (the replica's own
estimate, refused when the SQL thread is stopped: then it knows nothing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pymysql

from backupd.config import ShardConfig
from backupd.errors import BackupFailed, ServerError
from backupd.mysql.connection import connect, query
from backupd.repo.model import Coordinates, TakenFrom
from backupd.repo.repository import Shard

log = logging.getLogger(__name__)


class ReplicaUnfit(BackupFailed):
    """No replica of the shard may be backed up from (stopped, lagging, unreachable), and the
    shard does not fall back to its primary."""


@dataclass(frozen=True)
class ReplicaStatus:
    """What ``SHOW SLAVE STATUS`` says about one replica."""

    io_running: bool
    sql_running: bool
    lag: float | None               # Seconds_Behind_Master (None: unknown, a thread stopped)
    primary_file: str | None        # Relay_Master_Log_File: the primary's binlog applied up to...
    primary_pos: int | None         # ... Exec_Master_Log_Pos
    primary_server_id: int | None   # Master_Server_Id
    error: str | None

    @classmethod
    def read(cls, conn: pymysql.connections.Connection, *, label: str) -> ReplicaStatus | None:
        """The replica's status, or None if the server replicates from nobody."""
        with conn.cursor(pymysql.cursors.DictCursor) as cursor:
            try:
                cursor.execute("SHOW SLAVE STATUS")
                rows: list[dict[str, Any]] = list(cursor.fetchall())
            except pymysql.MySQLError as exc:
                raise ServerError(f"{label}: SHOW SLAVE STATUS failed: {exc.args[-1]}") from None
        if not rows:
            return None
        row = rows[0]
        lag = row.get("Seconds_Behind_Master")
        error = row.get("Last_SQL_Error") or row.get("Last_IO_Error") or None
        return cls(io_running=row.get("Slave_IO_Running") == "Yes", sql_running=row.get("Slave_SQL_Running") == "Yes",
                   lag=float(lag) if lag is not None else None, primary_file=row.get("Relay_Master_Log_File") or None,
                   primary_pos=int(row["Exec_Master_Log_Pos"]) if row.get("Exec_Master_Log_Pos") is not None else None,
                   primary_server_id=int(row["Master_Server_Id"]) if row.get("Master_Server_Id") else None,
                   error=error)

    def problem(self, max_lag: float) -> str | None:
        """Why a backup should not be taken from this replica (None: it is fit)."""
        if not self.sql_running:
            return f"replication is stopped (SQL thread{': ' + self.error if self.error else ''})"
        if not self.io_running:
            return f"replication is stopped (IO thread{': ' + self.error if self.error else ''})"
        if self.lag is None:
            return "its lag is unknown"
        if self.lag > max_lag:
            return f"it lags {self.lag:.0f}s behind the primary (max_lag {max_lag:.0f}s)"
        return None


def choose_server(shard: Shard) -> Shard:
    """The shard as its next backup must read it: itself (``backup_from = "primary"``), or on
    the chosen replica (module docstring). Raises ``ReplicaUnfit``."""
    config = shard.config
    if config.backup_from != "replica":
        return shard
    problems = []
    for replica in config.replicas:
        on_replica = config.on(replica)
        where = f"replica {replica.describe()}"
        try:
            conn = connect(on_replica, label=f"{shard.label} {where}")
        except ServerError as exc:
            problems.append(f"{where}: {exc.message}")
            continue
        try:
            status = ReplicaStatus.read(conn, label=f"{shard.label} {where}")
            problem = "it replicates from nobody" if status is None else status.problem(config.max_lag)
            if problem is not None and config.heartbeat_table:
                problem += _data_age(conn, config.heartbeat_table, label=f"{shard.label} {where}")
        finally:
            conn.close()
        if problem is None or (config.lag_policy == "warn" and status is not None):
            if problem is not None:
                log.warning("%s: backing up from %s although %s (lag_policy = \"warn\")", shard.label, where, problem)
            return replace(shard, config=on_replica, from_replica=where)
        problems.append(f"{where}: {problem}")
    if config.fallback_to_primary:
        log.warning("%s: backing up from the primary %s: no replica is fit (%s)", shard.label, config.describe(),
                    "; ".join(problems))
        return shard
    raise ReplicaUnfit(f"{shard.label}: no replica to back up from: {'; '.join(problems)}",
                       hint="fix replication, raise max_lag, or set fallback_to_primary = true")


def _data_age(conn: pymysql.connections.Connection, heartbeat_table: str, *, label: str) -> str:
    """``"; its data is 412s old (heartbeat)"``: how far behind the replica's data is, from the
    newest heartbeat it applied (known even when replication is stopped), or nothing."""
    database, table = heartbeat_table.split(".", 1)
    try:
        rows = query(conn, f"SELECT TIMESTAMPDIFF(MICROSECOND, MAX(`ts`), UTC_TIMESTAMP(6)) FROM "
                           f"`{database}`.`{table}`", label=label)
    except ServerError:
        return ""
    age = rows[0][0] if rows else None
    return f"; its data is {max(0, int(age)) / 1e6:.0f}s old (heartbeat)" if age is not None else ""


def choose_binlog_source(shard: Shard) -> tuple[ShardConfig, str | None]:
    """The server whose binlog the shard's archiver reads, and (on a replica) its description:
    the primary, or (``binlogs_from = "replica"``) the first of ``replicas`` that answers,
    replicates, and writes what it applies to its own binlog (``log_bin`` and
    ``log_slave_updates``: then its binlog holds the primary's transactions with their GTIDs
    and commit times). None fit: the primary with ``fallback_to_primary``, else ``ReplicaUnfit``
    naming each replica and why. Lag does not disqualify a replica here: the archive's
    ``archived_until`` reports it (``replica_lag``)."""
    config = shard.config
    if config.binlogs_from != "replica":
        return config, None
    problems = []
    for replica in config.replicas:
        on_replica = config.on(replica)
        where = f"replica {replica.describe()}"
        label = f"{shard.label} {where}"
        try:
            conn = connect(on_replica, label=label)
        except ServerError as exc:
            problems.append(f"{where}: {exc.message}")
            continue
        try:
            log_bin, slave_updates = query(conn, "SELECT @@log_bin, @@log_slave_updates", label=label)[0]
            status = ReplicaStatus.read(conn, label=label)
        finally:
            conn.close()
        if str(log_bin) not in ("1", "ON"):
            problems.append(f"{where}: log_bin is off")
        elif str(slave_updates) not in ("1", "ON"):
            problems.append(f"{where}: log_slave_updates is off (its binlog lacks the primary's transactions)")
        elif status is None:
            problems.append(f"{where}: it replicates from nobody")
        else:
            return on_replica, where
    if config.fallback_to_primary:
        log.warning("%s: archiving the primary's binlog: no replica is fit (%s)", shard.label, "; ".join(problems))
        return config, None
    raise ReplicaUnfit(f"{shard.label}: no replica to archive binlogs from: {'; '.join(problems)}",
                       hint="enable log_slave_updates on a replica, or set fallback_to_primary = true")


def replica_lag(conn: pymysql.connections.Connection, *, label: str) -> float | None:
    """How far the replica's applied data is behind its primary, in seconds (None: unknown,
    replication stopped)."""
    status = ReplicaStatus.read(conn, label=label)
    if status is None or not status.sql_running or not status.io_running:
        return None
    return status.lag


@dataclass(frozen=True)
class ReplicaSnapshot:
    """The primary's coordinates applied at a replica's snapshot, and how old its data is."""

    primary_file: str
    primary_pos: int
    primary_server_id: int | None
    lag: timedelta
    data_time_from: Literal["heartbeat", "replication lag"]

    def primary(self, own: Coordinates) -> Coordinates:
        """What the backup records: the primary's file and position, and the GTID position of the
        replica's snapshot (``own``; with ``log_slave_updates`` it holds the primary's GTIDs)."""
        return Coordinates(binlog_file=self.primary_file, binlog_pos=self.primary_pos, gtid=own.gtid,
                           server_id=self.primary_server_id)

    def taken_from(self, replica: str) -> TakenFrom:
        return TakenFrom(replica=replica, data_time_from=self.data_time_from,
                         lag_seconds=round(self.lag.total_seconds(), 3))

    def describe(self) -> str:
        return (f"the primary's {self.primary_file}:{self.primary_pos}, data {self.lag.total_seconds():.1f}s old "
                f"(from the {self.data_time_from})")


def replica_snapshot(control: pymysql.connections.Connection, snapshot: pymysql.connections.Connection,
                     config: ShardConfig, *, now: datetime, label: str) -> ReplicaSnapshot:
    """Read while commits are blocked on the replica (``control`` holds the block, ``snapshot``
    has its consistent snapshot open). Raises ``ReplicaUnfit`` when the replica stopped being
    one, or its data time cannot be known."""
    status = ReplicaStatus.read(control, label=label)
    if status is None or status.primary_file is None or status.primary_pos is None:
        raise ReplicaUnfit(f"{label}: stopped replicating before the snapshot")
    if config.heartbeat_table:
        database, table = config.heartbeat_table.split(".", 1)
        rows = query(snapshot, f"SELECT MAX(`ts`) FROM `{database}`.`{table}`", label=label)
        beat = rows[0][0] if rows else None
        if beat is None:
            raise ReplicaUnfit(f"{label}: heartbeat table {config.heartbeat_table} is empty")
        stamp = beat if isinstance(beat, datetime) else datetime.fromisoformat(str(beat))
        stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp
        return ReplicaSnapshot(status.primary_file, status.primary_pos, status.primary_server_id,
                               max(timedelta(0), now - stamp), "heartbeat")
    if status.lag is None:
        raise ReplicaUnfit(f"{label}: {status.problem(config.max_lag)}: without a heartbeat_table the age of its "
                           "data cannot be known", hint="start replication, or configure heartbeat_table")
    return ReplicaSnapshot(status.primary_file, status.primary_pos, status.primary_server_id,
                           timedelta(seconds=status.lag), "replication lag")
