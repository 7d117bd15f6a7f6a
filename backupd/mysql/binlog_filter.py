"""One table's changes out of a row-based binary log, re-addressed to another name.

A single table restored to a point in time (``restore --table ... --at``) replays only that
table's changes, and only into its scratch copy: ``RowEventFilter`` takes a file's events (the
magic number and format description first, then whole transactions) and gives back a binlog that
``mysqlbinlog`` turns into ``BINLOG`` statements touching nothing else:

* every rows event (write, update, delete; v1, v2 and MariaDB's compressed ones) of a chosen
  table is kept, preceded by its table map, whose database and table names are rewritten to the
  scratch copy's, and marked as the end of its statement (so each is applied, and its tables
  released, on its own);
* everything else is dropped: other tables' events, GTID events (the live server's GTID state is
  never moved by a restore of a copy), commits, annotations;
* header sizes, positions and CRC32 checksums are recomputed for the new bytes.

What rows events cannot show is refused rather than missed (``UnreplayableChange``, naming the
transaction): a statement-logged data change anywhere in the range (``binlog_format`` STATEMENT
or MIXED: a trigger or a procedure could have reached the table without naming it), a DDL
statement naming a chosen table or dropping its database, a ``ROLLBACK TO SAVEPOINT``, and a
compressed query event (its text cannot be checked). Row-based logging (MySQL's default, and
what point-in-time recovery tools assume) logs every data change as rows events, triggers'
included.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from backupd.mysql.binlog_events import (
    FORMAT_DESCRIPTION_EVENT,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    QUERY_EVENT,
    Event,
    Transaction,
    TransactionReader,
    event_at,
)

TABLE_MAP_EVENT = 19
ROWS_EVENTS = frozenset({23, 24, 25,        # write, update, delete (v1)
                         30, 31, 32,        # the same, v2 (MySQL)
                         166, 167, 168,     # MariaDB's compressed v1
                         169, 170, 171})    # MariaDB's compressed v2
QUERY_COMPRESSED_EVENT = 165
STMT_END_F = 0x0001
_TABLE_ID = 6  # bytes of a table id in a table map or rows event (every server since MySQL 5.1)

_STRUCTURE = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "XA", "SAVEPOINT", "RELEASE", "SET"})
_DDL = frozenset({"CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE", "GRANT", "REVOKE", "ANALYZE", "OPTIMIZE",
                  "REPAIR", "FLUSH", "INSTALL", "UNINSTALL", "CHECK", "CHECKSUM"})
_LEADING_COMMENTS = re.compile(rb"\A(?:\s+|/\*.*?\*/|--[^\n]*\n|#[^\n]*\n)*", re.S)


class UnreplayableChange(Exception):
    """A transaction in the range changed (or may have changed) a chosen table in a way rows
    events do not show; ``gtid`` names it, ``committed_at`` says when."""

    def __init__(self, gtid: str | None, committed_at: datetime, what: str):
        super().__init__(f"transaction {gtid or '(no GTID)'} committed at "
                         f"{committed_at.isoformat().replace('+00:00', 'Z')} {what}")
        self.gtid = gtid
        self.committed_at = committed_at


@dataclass
class FilterReport:
    """What the filter kept: transactions and rows events of the chosen tables, the last one's
    GTID and commit time, and per chosen table how many rows events."""

    transactions: int = 0
    rows_events: int = 0
    last_gtid: str | None = None
    last_committed_at: datetime | None = None
    per_table: dict[str, int] = field(default_factory=dict)


def table_map_names(body: bytes) -> tuple[int, str, str]:
    """The table id, database and table of a TABLE_MAP event's body."""
    table_id = int.from_bytes(body[:_TABLE_ID], "little")
    offset = _TABLE_ID + 2
    db_len = body[offset]
    database = body[offset + 1:offset + 1 + db_len].decode("utf-8")
    offset += 1 + db_len + 1
    table_len = body[offset]
    table = body[offset + 1:offset + 1 + table_len].decode("utf-8")
    return table_id, database, table


def rename_table_map(body: bytes, database: str, table: str) -> bytes:
    """A TABLE_MAP body (checksum excluded) naming ``database.table`` instead."""
    offset = _TABLE_ID + 2
    db_len = body[offset]
    offset += 1 + db_len + 1
    table_len = body[offset]
    rest = body[offset + 1 + table_len + 1:]
    new_db, new_table = database.encode("utf-8"), table.encode("utf-8")
    if len(new_db) > 255 or len(new_table) > 255:
        raise ValueError(f"{database}.{table}: a name longer than a table map can hold")
    return (body[:_TABLE_ID + 2] + bytes([len(new_db)]) + new_db + b"\x00" + bytes([len(new_table)]) + new_table
            + b"\x00" + rest)


def query_text(event: Event, checksum: bool) -> bytes:
    """The whole statement of a QUERY event."""
    body = event.body[:-4] if checksum else event.body
    db_len = body[8]
    status_len = struct.unpack_from("<H", body, 11)[0]
    return body[13 + status_len + db_len + 1:]


def statement_verb(text: bytes) -> str:
    """The first keyword of a statement, comments skipped, upper-cased."""
    rest = text[_LEADING_COMMENTS.match(text).end():]  # type: ignore[union-attr]
    match = re.match(rb"[A-Za-z_]+", rest)
    return match.group(0).decode().upper() if match else ""


class RowEventFilter:
    """Feed it a replay's bytes in order (``feed``: the magic number, format description events
    and whole events; a new magic number starts a new file); it returns the filtered binlog
    bytes for ``mysqlbinlog`` (module docstring). ``tables`` maps each chosen ``(db, table)`` to
    the ``(db, table)`` its events are to be applied to."""

    def __init__(self, tables: Mapping[tuple[str, str], tuple[str, str]]):
        self.tables = dict(tables)
        self.report = FilterReport()
        self._checksum = False
        self._position = 0
        self._reader = TransactionReader()
        names = "|".join(re.escape(t.encode("utf-8")).decode("latin-1") for _, t in self.tables)
        self._mentions_table = re.compile(rf"(?<![\w$]){'(?:' + names + ')'}(?![\w$])".encode("latin-1"), re.I)
        databases = "|".join(re.escape(d.encode("utf-8")).decode("latin-1") for d, _ in self.tables)
        self._drops_database = re.compile(
            rf"\A\s*DROP\s+(?:DATABASE|SCHEMA)\s+(?:IF\s+EXISTS\s+)?`?(?:{databases})`?\s*\Z".encode("latin-1"),
            re.I | re.S)

    def feed(self, data: bytes) -> bytes:
        if data == MAGIC:
            self._position = len(MAGIC)
            self._reader = TransactionReader()
            return MAGIC
        out = bytearray()
        offset = 0
        while offset < len(data):
            event, offset = event_at(data, offset)
            if event.type == FORMAT_DESCRIPTION_EVENT:
                self._checksum = event.checksum()
                self._position += len(event.raw)  # the first event of the file: kept as it is
                out += event.raw
                continue
            done = self._reader.feed(event)
            if done is not None and done.gtid is not None:
                out += self._transaction(done)
        return bytes(out)

    def _transaction(self, transaction: Transaction) -> bytes:
        maps: dict[int, tuple[str, str, bytes]] = {}
        kept: list[bytes] = []
        kept_tables: list[str] = []
        for event in transaction.events:
            body = event.body[:-4] if self._checksum else event.body
            if event.type == TABLE_MAP_EVENT:
                table_id, database, table = table_map_names(body)
                maps[table_id] = (database, table, event.raw)
            elif event.type in ROWS_EVENTS:
                table_id = int.from_bytes(body[:_TABLE_ID], "little")
                if table_id not in maps:
                    raise UnreplayableChange(transaction.gtid, transaction.committed_at,
                                             f"has a rows event for table id {table_id} with no table map before it")
                database, table, map_raw = maps[table_id]
                destination = self.tables.get((database, table))
                if destination is None:
                    continue
                map_header = map_raw[:HEADER_SIZE]
                map_body = map_raw[HEADER_SIZE:-4] if self._checksum else map_raw[HEADER_SIZE:]
                kept.append(self._emit(map_header, rename_table_map(map_body, *destination)))
                flags = struct.unpack_from("<H", body, _TABLE_ID)[0] | STMT_END_F
                kept.append(self._emit(event.raw[:HEADER_SIZE],
                                       body[:_TABLE_ID] + struct.pack("<H", flags) + body[_TABLE_ID + 2:]))
                kept_tables.append(f"{database}.{table}")
            elif event.type == QUERY_EVENT:
                self._check_statement(transaction, query_text(event, self._checksum))
            elif event.type == QUERY_COMPRESSED_EVENT:
                raise UnreplayableChange(transaction.gtid, transaction.committed_at,
                                         "holds a compressed query event (log_bin_compress), whose statement "
                                         "cannot be checked")
        if kept:
            report = self.report
            report.transactions += 1
            report.rows_events += len(kept_tables)
            report.last_gtid = transaction.gtid
            report.last_committed_at = transaction.committed_at
            for name in kept_tables:
                report.per_table[name] = report.per_table.get(name, 0) + 1
        return b"".join(kept)

    def _check_statement(self, transaction: Transaction, text: bytes) -> None:
        verb = statement_verb(text)
        if verb == "ROLLBACK" and re.match(rb"\s*ROLLBACK\s+(WORK\s+)?TO\b", text[_start(text):], re.I):
            raise UnreplayableChange(transaction.gtid, transaction.committed_at,
                                     "rolled back to a savepoint: which of its rows events count cannot be told")
        if verb in _STRUCTURE:
            return
        if verb in _DDL:
            if self._mentions_table.search(text) or self._drops_database.match(text[_start(text):]):
                raise UnreplayableChange(transaction.gtid, transaction.committed_at,
                                         f"changed the table's definition ({verb} statement)")
            return
        raise UnreplayableChange(transaction.gtid, transaction.committed_at,
                                 f"changed data by a statement ({verb or 'unknown'}), not by rows events: "
                                 "the shard's binlog_format is not ROW")

    def _emit(self, header: bytes, body: bytes) -> bytes:
        """One event with a new size and position (and checksum) for ``body``."""
        timestamp, kind, server_id, _, _, flags = HEADER.unpack_from(header)
        size = HEADER_SIZE + len(body) + (4 if self._checksum else 0)
        self._position += size
        raw = HEADER.pack(timestamp, kind, server_id, size, self._position, flags) + body
        if self._checksum:
            raw += struct.pack("<I", zlib.crc32(raw))
        return raw


def _start(text: bytes) -> int:
    return _LEADING_COMMENTS.match(text).end()  # type: ignore[union-attr]


def filter_binlog(chunks: Iterable[bytes],
                  tables: Mapping[tuple[str, str], tuple[str, str]]) -> tuple[bytes, FilterReport]:
    """``RowEventFilter`` over ``chunks`` at once (for tests and small inputs)."""
    row_filter = RowEventFilter(tables)
    out = b"".join(row_filter.feed(chunk) for chunk in chunks)
    return out, row_filter.report
