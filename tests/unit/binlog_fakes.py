"""Binary log events made by hand, for unit tests of the archive's pure logic."""

from __future__ import annotations

import struct
import zlib

from backupd.mysql.binlog_events import (
    FORMAT_DESCRIPTION_EVENT,
    HEADER,
    HEARTBEAT_EVENT,
    MARIADB_GTID_EVENT,
    QUERY_EVENT,
    ROTATE_EVENT,
    XID_EVENT,
    Event,
)
from backupd.mysql.binlog_stream import StreamEvent

SERVER_ID = 1


def event(kind: int, end_pos: int, body: bytes, *, timestamp: int = 1_800_000_000, flags: int = 0) -> Event:
    """An event with a CRC32 like the server's (``end_pos``: the position after it)."""
    size = HEADER.size + len(body) + 4
    head = HEADER.pack(timestamp, kind, SERVER_ID, size, end_pos, flags)
    raw = head + body
    return Event(timestamp, kind, SERVER_ID, end_pos, flags, raw + struct.pack("<I", zlib.crc32(raw)))


class Binlog:
    """Writes a plausible binlog file event by event, tracking positions."""

    def __init__(self, name: str = "bin.000001", pos: int = 4, seq: int = 0):
        self.name = name
        self.pos = pos
        self.seq = seq

    def _next(self, kind: int, body: bytes, **kw: int) -> StreamEvent:
        size = HEADER.size + len(body) + 4
        self.pos += size
        return StreamEvent(self.name, event(kind, self.pos, body, **kw))

    def fde(self) -> StreamEvent:
        body = struct.pack("<H", 4) + b"10.11.0-MariaDB".ljust(50, b"\0") + struct.pack("<I", 0) + bytes([19]) \
            + bytes(40) + b"\x01"  # checksum alg: CRC32
        return self._next(FORMAT_DESCRIPTION_EVENT, body)

    def transaction(self, *, timestamp: int = 1_800_000_000, rows: int = 1) -> list[StreamEvent]:
        """GTID, BEGIN (query), ``rows`` row-ish query events, XID."""
        self.seq += 1
        events = [self._next(MARIADB_GTID_EVENT, struct.pack("<QIB", self.seq, 0, 0) + bytes(6), timestamp=timestamp),
                  self._next(QUERY_EVENT, query_body(b"BEGIN"), timestamp=timestamp)]
        events += [self._next(QUERY_EVENT, query_body(b"INSERT INTO t VALUES (1)"), timestamp=timestamp)
                   for _ in range(rows)]
        events.append(self._next(XID_EVENT, struct.pack("<Q", self.seq), timestamp=timestamp))
        return events

    def ddl(self, *, timestamp: int = 1_800_000_000) -> list[StreamEvent]:
        """A standalone statement: GTID (flag standalone) then the query."""
        self.seq += 1
        return [self._next(MARIADB_GTID_EVENT, struct.pack("<QIB", self.seq, 0, 1) + bytes(6), timestamp=timestamp),
                self._next(QUERY_EVENT, query_body(b"CREATE TABLE t (id INT)"), timestamp=timestamp)]

    def rotate(self, to: str) -> StreamEvent:
        return self._next(ROTATE_EVENT, struct.pack("<Q", 4) + to.encode())

    def gtid(self) -> str:
        return f"0-{SERVER_ID}-{self.seq}"


def query_body(statement: bytes) -> bytes:
    return struct.pack("<IIBHH", 7, 0, 3, 0, 0) + b"app\0" + statement


def heartbeat(file: str) -> StreamEvent:
    return StreamEvent(file, event(HEARTBEAT_EVENT, 0, file.encode()))
