"""Reading a server's binary log as it is written, over the replication protocol.

``BinlogStream`` connects as a replica would (``COM_BINLOG_DUMP`` from a file and position,
with the server's checksums and heartbeats) and yields every event byte for byte, with the file
it belongs to. It never writes to the server and never purges anything. The account needs
``REPLICATION SLAVE`` (MariaDB: ``BINLOG MONITOR`` as well, which backups already need).

Measured against ``mariadb-binlog --read-from-remote-server --raw --stop-never`` (see
``scripts/bench binlogs``): the protocol is read here directly so the archiver sees events as
they arrive, cuts segments at transaction boundaries, and never spools a whole binlog file to
disk (``--raw`` writes each file whole).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pymysql
from pymysql.constants import COMMAND

from backupd.config import EndpointConfig
from backupd.errors import SourceError
from backupd.mysql.binlog_events import (
    FORMAT_DESCRIPTION_EVENT,
    HEARTBEAT_EVENT,
    ROTATE_EVENT,
    Event,
    event_at,
)
from backupd.mysql.connection import connect, query, server_info

ER_MASTER_FATAL_ERROR_READING_BINLOG = 1236
BINLOG_SEND_ANNOTATE_ROWS_EVENT = 2


class BinlogGone(SourceError):
    """The server no longer has the binlog file (or position) asked for: it was purged (or
    never existed). What was between is not in the archive: a gap."""


@dataclass(frozen=True)
class StreamEvent:
    """An event and the binlog file it belongs to."""

    file: str
    event: Event


def replica_server_id(label: str) -> int:
    """A server id for the archiver's connection that no real replica is likely to use."""
    return 0x40000000 + (zlib.crc32(label.encode()) & 0x3FFFFFFF)


class BinlogStream:
    """One connection reading the binary log from ``file``:``pos`` onwards (module docstring)."""

    def __init__(self, endpoint: EndpointConfig, *, label: str, server_id: int, heartbeat: float = 1.0,
                 read_timeout: float = 30.0):
        self.endpoint = endpoint
        self.label = label
        self.server_id = server_id
        self.heartbeat = heartbeat
        self.read_timeout = read_timeout
        self._conn: pymysql.connections.Connection | None = None

    def events(self, file: str, pos: int) -> Iterator[StreamEvent]:
        """Every event from ``file``:``pos`` (the position of the first event to read), then on
        through rotations, until the connection breaks (``ServerError``/``SourceError``) or
        ``close()``. Heartbeats are passed on (they tell the archiver the server is alive and
        has nothing more)."""
        conn = self._conn = connect(self.endpoint, label=self.label, read_timeout=self.read_timeout)
        wire: Any = conn  # the replication protocol sits below PyMySQL's public API
        vendor = server_info(conn, label=self.label).vendor
        rows = query(conn, "SELECT @@global.binlog_checksum", label=self.label)
        checksum = bool(rows) and str(rows[0][0]).upper() != "NONE"  # the dump's events carry it too
        query(conn, "SET @master_binlog_checksum = @@global.binlog_checksum", label=self.label)
        query(conn, "SET @source_binlog_checksum = @@global.binlog_checksum", label=self.label)
        query(conn, f"SET @master_heartbeat_period = {int(self.heartbeat * 1e9)}", label=self.label)
        if vendor == "mariadb":
            query(conn, "SET @mariadb_slave_capability = 4", label=self.label)  # GTID events
        # flag 2 (BINLOG_SEND_ANNOTATE_ROWS_EVENT): MariaDB leaves them out otherwise, and the
        # archive must hold every byte of the file
        payload = struct.pack("<IHI", pos, BINLOG_SEND_ANNOTATE_ROWS_EVENT, self.server_id) + file.encode()
        try:
            wire._execute_command(COMMAND.COM_BINLOG_DUMP, payload)
        except pymysql.MySQLError as exc:
            raise SourceError(f"{self.label}: cannot read the binary log from {file}:{pos}: {exc}") from None
        current = file
        while True:
            try:
                packet = wire._read_packet()
            except pymysql.MySQLError as exc:
                code = exc.args[0] if exc.args else 0
                if code == ER_MASTER_FATAL_ERROR_READING_BINLOG:
                    raise BinlogGone(f"{self.label}: the server cannot send its binary log from {file}:{pos}: "
                                     f"{exc.args[1] if len(exc.args) > 1 else exc}") from None
                raise SourceError(f"{self.label}: reading the binary log stopped at {current}: {exc}") from None
            data = packet.get_all_data()
            if data[:1] == b"\xfe" and len(data) < 9:
                return  # the server ended the dump
            event, _ = event_at(data, 1)
            if event.type == FORMAT_DESCRIPTION_EVENT:
                checksum = event.checksum()
            if event.type == ROTATE_EVENT and event.artificial:
                current = event.rotate_to(checksum)  # the dump names the file it streams now
                continue
            yield StreamEvent(current, event)
            if event.type == ROTATE_EVENT:  # the file's last event: the next ones are in the next file
                current = event.rotate_to(checksum)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


def is_heartbeat(event: Event) -> bool:
    return event.type == HEARTBEAT_EVENT
