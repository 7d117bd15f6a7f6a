"""Rebuilding redundancy: attach a restored target as a replica and wait until it has caught up.

The replica starts exactly where the restored backup's snapshot sits (its manifest's
coordinates): with GTIDs when the backup recorded one (MariaDB: ``gtid_slave_pos`` +
``MASTER_USE_GTID=slave_pos``; MySQL: ``gtid_purged`` + auto-position), by binlog file and
position otherwise. It has caught up when the replication threads run without error,
``Seconds_Behind_Master`` is 0 and the replica's position has reached the source's position
read at that check.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pymysql

from backupd.config import Config, EndpointConfig
from backupd.errors import ReplicationFailed, ServerError, UsageError
from backupd.mysql.connection import connect, query, server_info
from backupd.repo.model import Coordinates, Manifest
from backupd.repo.repository import Target
from backupd.secrets import Secret

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5
PROGRESS_EVERY = 5.0


@dataclass(frozen=True)
class ReplicationSource:
    """The server the replica follows, and the account it connects with."""

    description: str
    host: str
    port: int
    user: str
    password: Secret
    endpoint: EndpointConfig  # how backupd reads the source's position


@dataclass(frozen=True)
class CatchUp:
    mode: str                 # "gtid" | "file-pos"
    start: str                # where replication started (GTID or file:pos)
    reached: str              # the source position the replica reached
    seconds: float            # from START SLAVE to caught up


def parse_gtid_list(text: str | None) -> dict[int, int]:
    """MariaDB GTID list ``"0-1-100,1-2-7"`` -> ``{domain: sequence}``."""
    positions: dict[int, int] = {}
    for item in (text or "").replace("\n", "").split(","):
        item = item.strip()
        if not item:
            continue
        domain, _server, sequence = item.split("-")
        positions[int(domain)] = max(int(sequence), positions.get(int(domain), 0))
    return positions


def gtid_reached(replica: str | None, source: str | None) -> bool:
    """True when the replica's MariaDB GTID position is at or past the source's in every domain."""
    ours = parse_gtid_list(replica)
    return all(ours.get(domain, 0) >= sequence for domain, sequence in parse_gtid_list(source).items())


def resolve_source(config: Config, shard_id: str, spec: str) -> ReplicationSource:
    """``--replica-of``: a configured shard id (its primary) or ``host:port``. Credentials come
    from that shard's ``replication_user`` / ``replication_password_env`` (for ``host:port``:
    those of the restored shard ``shard_id``); ``primary`` is shard ``shard_id``'s own primary."""
    if spec == "primary":
        spec = shard_id
    match = None
    if spec in config.shards:
        owner, shard = spec, config.shards[spec]
    else:
        match = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d{1,5})", spec)
        if not match or not 0 < int(match.group(2)) < 65536:
            known = ", ".join(sorted(config.shards)) or "none"
            raise UsageError(f"--replica-of: '{spec}' is neither a configured shard ({known}) nor host:port")
        owner, shard = shard_id, config.shard(shard_id)
    if not shard.replication_user or not shard.replication_password_env:
        raise UsageError(f"--replica-of {spec}: shards.{owner}.replication_user and "
                         "replication_password_env are not set (the account the replica connects with)")
    if shard.replication_password_env not in os.environ:
        raise UsageError(f"--replica-of {spec}: shards.{owner}.replication_password_env: environment "
                         f"variable {shard.replication_password_env} is not set")
    password = Secret(os.environ[shard.replication_password_env])
    if spec in config.shards:
        host, port = shard.host, shard.port
        if shard.socket:  # reached by socket here: replicate from loopback, on the port it listens on
            conn = connect(shard, label=f"shard {spec}")
            try:
                port = int(query(conn, "SELECT @@port", label=f"shard {spec}")[0][0])
            finally:
                conn.close()
        return ReplicationSource(f"shard {spec} ({host}:{port})", host, port, shard.replication_user,
                                 password, shard)
    assert match is not None  # not a configured shard, so a host:port (checked above)
    host, port = match.group(1), int(match.group(2))
    endpoint = EndpointConfig(host=host, port=port, user=shard.replication_user)
    endpoint._password = password
    return ReplicationSource(f"{host}:{port}", host, port, shard.replication_user, password, endpoint)


def attach_replica(target: Target, source: ReplicationSource, manifest: Manifest, *, timeout: float,
                   coordinates: Coordinates | None = None, clock: Callable[[], float] = time.monotonic) -> CatchUp:
    """Make the target a replica of ``source`` from ``manifest``'s coordinates (or
    ``coordinates``: where a point-in-time restore's replay left it), start it, and wait until it
    has caught up (progress is logged every few seconds)."""
    label = target.label
    conn = connect(target.config, label=label)
    try:
        vendor = server_info(conn, label=label).vendor
        mode, start = _configure(conn, vendor, source, manifest, coordinates or manifest.coordinates, label=label)
        query(conn, "START SLAVE", label=label)
        log.info("%s: replicating from %s, starting at %s", label, source.description, start)
        started = clock()
        reached = _wait(conn, vendor, mode, source, label=label, deadline=started + timeout, clock=clock)
        return CatchUp(mode, start, reached, clock() - started)
    finally:
        conn.close()


def _configure(conn: pymysql.connections.Connection, vendor: str, source: ReplicationSource,
               manifest: Manifest, coords: Coordinates, *, label: str) -> tuple[str, str]:
    if coords.gtid is None and not coords.binlog_file:
        raise ReplicationFailed(f"backup {manifest.id} recorded no binlog coordinates to replicate from")
    query(conn, "STOP SLAVE", label=label)
    query(conn, "RESET SLAVE ALL", label=label)
    connection = "MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, MASTER_PASSWORD=%s"
    args: list[Any] = [source.host, source.port, source.user, source.password.reveal()]
    if coords.gtid is not None and vendor == "mariadb":
        query(conn, "SET GLOBAL gtid_slave_pos = %s", (coords.gtid,), label=label)
        query(conn, f"CHANGE MASTER TO {connection}, MASTER_USE_GTID=slave_pos", args, label=label)
        return "gtid", coords.gtid
    if coords.gtid is not None:  # MySQL
        query(conn, "RESET MASTER", label=label)
        query(conn, "SET GLOBAL gtid_purged = %s", (coords.gtid,), label=label)
        query(conn, f"CHANGE MASTER TO {connection}, MASTER_AUTO_POSITION=1", args, label=label)
        return "gtid", coords.gtid
    query(conn, f"CHANGE MASTER TO {connection}, MASTER_LOG_FILE=%s, MASTER_LOG_POS=%s",
          [*args, coords.binlog_file, coords.binlog_pos], label=label)
    if vendor == "mariadb":
        query(conn, "CHANGE MASTER TO MASTER_USE_GTID=no", label=label)
    return "file-pos", f"{coords.binlog_file}:{coords.binlog_pos}"


def _wait(conn: pymysql.connections.Connection, vendor: str, mode: str, source: ReplicationSource,
          *, label: str, deadline: float, clock: Callable[[], float]) -> str:
    next_progress = clock() + PROGRESS_EVERY
    while True:
        wanted = _source_position(source, vendor, mode)
        status = _slave_status(conn, label=label)
        error = status.get("Last_IO_Error") or status.get("Last_SQL_Error")
        if error:
            raise ReplicationFailed(f"{label}: replication from {source.description} failed: {error}")
        if status.get("Slave_SQL_Running") == "No":
            raise ReplicationFailed(f"{label}: replication from {source.description} stopped (SQL thread not running)")
        behind = status.get("Seconds_Behind_Master")
        at = _replica_position(conn, vendor, mode, status, label=label)
        if behind == 0 and status.get("Slave_IO_Running") == "Yes" and _reached(at, wanted, vendor, mode, conn, label):
            log.info("%s: caught up with %s at %s", label, source.description, wanted)
            return wanted
        now = clock()
        if now >= next_progress:
            log.info("%s: catching up with %s: %s s behind, at %s, source at %s", label,
                     source.description, "?" if behind is None else behind, at or "-", wanted)
            next_progress = now + PROGRESS_EVERY
        if now > deadline:
            raise ReplicationFailed(f"{label}: did not catch up with {source.description} in time "
                                    f"(at {at or '-'}, source at {wanted}, {behind} s behind)",
                                    hint="raise --catchup-timeout, or look at SHOW SLAVE STATUS")
        time.sleep(POLL_INTERVAL)


def _source_position(source: ReplicationSource, vendor: str, mode: str) -> str:
    label = f"replication source {source.description}"
    try:
        conn = connect(source.endpoint, label=label)
    except ServerError as exc:
        raise ReplicationFailed(str(exc)) from None
    try:
        if mode == "gtid":
            variable = "@@GLOBAL.gtid_binlog_pos" if vendor == "mariadb" else "@@GLOBAL.gtid_executed"
            return str(query(conn, f"SELECT {variable}", label=label)[0][0] or "")
        rows = query(conn, "SHOW MASTER STATUS", label=label)
        return f"{rows[0][0]}:{rows[0][1]}" if rows else ""
    finally:
        conn.close()


def _slave_status(conn: pymysql.connections.Connection, *, label: str) -> dict[str, Any]:
    with conn.cursor(pymysql.cursors.DictCursor) as cursor:
        try:
            cursor.execute("SHOW SLAVE STATUS")
            row = cursor.fetchone()
        except pymysql.MySQLError as exc:
            raise ReplicationFailed(f"{label}: SHOW SLAVE STATUS failed: {exc}") from None
    if not row:
        raise ReplicationFailed(f"{label}: replication is not configured after CHANGE MASTER")
    return dict(row)


def _replica_position(conn: pymysql.connections.Connection, vendor: str, mode: str,
                      status: dict[str, Any], *, label: str) -> str:
    if mode == "gtid":
        variable = "@@GLOBAL.gtid_slave_pos" if vendor == "mariadb" else "@@GLOBAL.gtid_executed"
        return str(query(conn, f"SELECT {variable}", label=label)[0][0] or "")
    return f"{status.get('Relay_Master_Log_File')}:{status.get('Exec_Master_Log_Pos')}"


def _reached(at: str, wanted: str, vendor: str, mode: str, conn: pymysql.connections.Connection,
             label: str) -> bool:
    if mode == "gtid" and vendor == "mariadb":
        return gtid_reached(at, wanted)
    if mode == "gtid":
        return bool(query(conn, "SELECT GTID_SUBSET(%s, @@GLOBAL.gtid_executed)", (wanted,), label=label)[0][0])
    if not wanted:
        return True
    (file_at, _, pos_at), (file_want, _, pos_want) = at.rpartition(":"), wanted.rpartition(":")
    return (file_at, int(pos_at or 0)) >= (file_want, int(pos_want or 0))
