"""Binary log events, as far as archiving and replaying them needs: headers, transactions, GTIDs.

A binlog file is ``MAGIC`` followed by events; every event starts with a 19-byte header
(timestamp, type, server id, size, the position just after the event, flags). backupd keeps
events byte for byte (checksums included) and reads only what it needs to cut the log into
whole transactions and to name them: each transaction starts with a GTID event and ends with its
commit (an XID event, a ``COMMIT``/``ROLLBACK`` query, or, for a statement logged on its own such
as DDL, that one query). MariaDB's GTID event (162) and MySQL's (33) are both understood.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

MAGIC = b"\xfebin"
HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server_id, event_size, log_pos (end), flags
HEADER_SIZE = HEADER.size  # 19

QUERY_EVENT = 2
STOP_EVENT = 3
ROTATE_EVENT = 4
FORMAT_DESCRIPTION_EVENT = 15
XID_EVENT = 16
HEARTBEAT_EVENT = 27
MYSQL_GTID_EVENT = 33
MYSQL_ANONYMOUS_GTID_EVENT = 34
MARIADB_GTID_EVENT = 162
MARIADB_GTID_LIST_EVENT = 163
ARTIFICIAL = 0x20  # LOG_EVENT_ARTIFICIAL_F: made up by the dump (a fake rotate), not in the file

_GTID_EVENTS = (MARIADB_GTID_EVENT, MYSQL_GTID_EVENT, MYSQL_ANONYMOUS_GTID_EVENT)
_QUERY_FIXED = 13  # thread id, exec time, db length, error code, status vars length


class BinlogFormatError(Exception):
    """Bytes that are not binary log events (a damaged or cut segment)."""


@dataclass(frozen=True)
class Event:
    """One event: its header fields and its bytes, exactly as the server wrote them."""

    timestamp: int
    type: int
    server_id: int
    end_pos: int       # the position just after this event in its binlog file (0: artificial)
    flags: int
    raw: bytes

    @classmethod
    def from_raw(cls, raw: bytes) -> Event:
        """The event whose bytes are ``raw`` (exactly one event)."""
        event, end = event_at(raw, 0)
        if end != len(raw):
            raise BinlogFormatError(f"{len(raw) - end} bytes after the event")
        return event

    @property
    def artificial(self) -> bool:
        return bool(self.flags & ARTIFICIAL) or self.end_pos == 0

    @property
    def body(self) -> bytes:
        return self.raw[HEADER_SIZE:]

    def rotate_to(self, checksum: bool) -> str:
        """The file a ROTATE event points at (``checksum``: the events carry a CRC32 to strip)."""
        name = self.body[8:-4] if checksum else self.body[8:]
        return name.split(b"\x00")[0].decode("utf-8", "replace")

    def checksum(self) -> bool:
        """Whether a FORMAT_DESCRIPTION event says the file's events end in a CRC32."""
        return len(self.body) > 5 and self.body[-5] == 1

    def gtid(self) -> str | None:
        """The GTID a GTID event opens (``domain-server-seq`` on MariaDB, ``uuid:n`` on MySQL)."""
        if self.type == MARIADB_GTID_EVENT:
            seq, domain = struct.unpack_from("<QI", self.body)
            return f"{domain}-{self.server_id}-{seq}"
        if self.type == MYSQL_GTID_EVENT:
            sid, gno = self.body[1:17], struct.unpack_from("<q", self.body, 17)[0]
            h = sid.hex()
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}:{gno}"
        return None

    def standalone(self) -> bool:
        """A MariaDB GTID event whose group is one statement (DDL) with no BEGIN/COMMIT."""
        return self.type == MARIADB_GTID_EVENT and bool(self.body[12] & 1)

    def query(self) -> bytes:
        """The statement of a QUERY event (for BEGIN/COMMIT/ROLLBACK detection)."""
        body = self.body
        if len(body) < _QUERY_FIXED:
            return b""
        db_len = body[8]
        status_len = struct.unpack_from("<H", body, 11)[0]
        start = _QUERY_FIXED + status_len + db_len + 1
        return body[start:start + 64]


def event_at(data: bytes | memoryview, offset: int) -> tuple[Event, int]:
    """The event at ``offset`` of ``data`` and the offset after it."""
    if len(data) - offset < HEADER_SIZE:
        raise BinlogFormatError(f"a cut event header at byte {offset}")
    timestamp, kind, server_id, size, end_pos, flags = HEADER.unpack_from(data, offset)
    if size < HEADER_SIZE or offset + size > len(data):
        raise BinlogFormatError(f"an event of {size} bytes at byte {offset} runs past the end ({len(data)})")
    return Event(timestamp, kind, server_id, end_pos, flags, bytes(data[offset:offset + size])), offset + size


def read_events(data: bytes | memoryview) -> Iterator[Event]:
    """The events of a binlog file image (``MAGIC`` first)."""
    if bytes(data[:4]) != MAGIC:
        raise BinlogFormatError("not a binary log (no magic number)")
    offset = 4
    while offset < len(data):
        event, offset = event_at(data, offset)
        yield event


@dataclass
class Transaction:
    """One transaction (event group): its events, its GTID and when it committed."""

    gtid: str | None
    events: list[Event] = field(default_factory=list)

    @property
    def committed_at(self) -> datetime:
        return datetime.fromtimestamp(self.events[-1].timestamp, UTC)

    @property
    def end_pos(self) -> int:
        return self.events[-1].end_pos

    @property
    def size(self) -> int:
        return sum(len(e.raw) for e in self.events)


class TransactionReader:
    """Groups a file's events into whole transactions, as they come.

    ``feed(event)`` returns the transaction it completes (else None); events outside any
    transaction (GTID lists, checkpoints, stop events) are returned as one-event groups with no
    GTID, so every byte of the log is accounted for. ``open`` is the transaction in progress.
    """

    def __init__(self) -> None:
        self.open: Transaction | None = None
        self._in_begin = False
        self._standalone = False

    def feed(self, event: Event) -> Transaction | None:
        if event.type in _GTID_EVENTS:
            self.open = Transaction(event.gtid(), [event])
            self._in_begin = False
            self._standalone = event.standalone()
            return None
        if self.open is None:
            return Transaction(None, [event])
        self.open.events.append(event)
        if self._ends(event):
            done, self.open = self.open, None
            return done
        return None

    def _ends(self, event: Event) -> bool:
        if event.type == XID_EVENT:
            return True
        if event.type != QUERY_EVENT:
            return False
        text = event.query().lstrip().upper()
        if text.startswith(b"BEGIN") and not self._in_begin and not self._standalone:
            self._in_begin = True
            return False
        if self._in_begin:
            return text.startswith((b"COMMIT", b"ROLLBACK", b"XA COMMIT", b"XA ROLLBACK"))
        return True  # a statement logged on its own (DDL, a statement that commits implicitly)


def transactions(events: Iterable[Event]) -> Iterator[Transaction]:
    """The whole transactions (and standalone events) of ``events``; an unfinished one is dropped."""
    reader = TransactionReader()
    for event in events:
        done = reader.feed(event)
        if done is not None:
            yield done


def gtid_position(start: str | None, gtids: Iterable[str | None]) -> str | None:
    """A MariaDB GTID position (``domain-server-seq`` per domain, comma-separated) moved on by
    ``gtids``: the position a server has after applying them on top of ``start``."""
    domains: dict[str, str] = {}
    for item in (start or "").replace("\n", "").split(","):
        if item.strip():
            domains[item.strip().split("-")[0]] = item.strip()
    for gtid in gtids:
        if gtid and gtid.count("-") == 2:
            domains[gtid.split("-")[0]] = gtid
    return ",".join(domains[d] for d in sorted(domains, key=int)) or None
