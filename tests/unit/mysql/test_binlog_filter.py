"""The row-event filter of a single table's point-in-time restore, on events made by hand:
what it keeps, how it re-addresses and re-checksums them, and what it refuses."""

from __future__ import annotations

import struct
import zlib

import pytest

from backupd.mysql.binlog_events import MAGIC, MARIADB_GTID_EVENT, QUERY_EVENT, XID_EVENT, read_events
from backupd.mysql.binlog_filter import (
    STMT_END_F,
    TABLE_MAP_EVENT,
    UnreplayableChange,
    filter_binlog,
    statement_verb,
    table_map_names,
)
from tests.unit.binlog_fakes import Binlog, event, query_body

WRITE_ROWS, UPDATE_ROWS = 23, 24
SCRATCH = ("backupd_restore_1", "bucket_05")


def table_map(table_id: int, database: str, table: str) -> bytes:
    return (table_id.to_bytes(6, "little") + b"\x00\x00" + bytes([len(database)]) + database.encode() + b"\0"
            + bytes([len(table)]) + table.encode() + b"\0" + b"\x02\x03\x08\x00")  # 2 columns: INT, BIGINT...


def rows(table_id: int, flags: int = 0, payload: bytes = b"\x02\xff\x00\x01\x00\x00\x00") -> bytes:
    return table_id.to_bytes(6, "little") + struct.pack("<H", flags) + payload


def transaction(seq: int, *body: tuple[int, bytes], standalone: bool = False) -> list[bytes]:
    events = [event(MARIADB_GTID_EVENT, 0, struct.pack("<QIB", seq, 0, 1 if standalone else 0) + bytes(6))]
    if not standalone:
        events.append(event(QUERY_EVENT, 0, query_body(b"BEGIN")))
    events += [event(kind, 0, data) for kind, data in body]
    if not standalone:
        events.append(event(XID_EVENT, 0, struct.pack("<Q", seq)))
    return [e.raw for e in events]


def binlog(*transactions: list[bytes]) -> list[bytes]:
    """The chunks a replay feeds: the magic number, the format description, then whole events."""
    return [MAGIC, Binlog().fde().event.raw, b"".join(b"".join(t) for t in transactions)]


def run(*transactions: list[bytes], tables=None):
    return filter_binlog(binlog(*transactions), tables or {("app", "bucket_05"): SCRATCH})


def test_only_the_tables_rows_events_are_kept_renamed_ended_and_checksummed():
    out, report = run(
        transaction(1, (TABLE_MAP_EVENT, table_map(7, "app", "bucket_05")), (WRITE_ROWS, rows(7)),
                    (TABLE_MAP_EVENT, table_map(8, "app", "bucket_06")), (UPDATE_ROWS, rows(8, STMT_END_F))),
        transaction(2, (TABLE_MAP_EVENT, table_map(9, "app", "bucket_06")), (WRITE_ROWS, rows(9, STMT_END_F))))
    events = list(read_events(out))
    assert [e.type for e in events] == [15, TABLE_MAP_EVENT, WRITE_ROWS]  # no GTID, BEGIN, XID, other tables
    assert table_map_names(events[1].body[:-4]) == (7, *SCRATCH)
    assert struct.unpack_from("<H", events[2].body, 6)[0] & STMT_END_F  # applied (and released) on its own
    position = 4
    for e in events:
        position += len(e.raw)
        assert e.end_pos == position and struct.unpack("<I", e.raw[-4:])[0] == zlib.crc32(e.raw[:-4])
    assert (report.transactions, report.rows_events, report.last_gtid) == (1, 1, "0-1-1")
    assert report.per_table == {"app.bucket_05": 1}


def test_ddl_naming_the_table_or_dropping_its_database_is_refused_other_ddl_is_not():
    other = transaction(1, (QUERY_EVENT, query_body(b"ALTER TABLE bucket_050 ADD COLUMN x INT")), standalone=True)
    assert run(other)[1].transactions == 0  # bucket_050 is not bucket_05
    for statement in (b"/* a comment */ ALTER TABLE `bucket_05` ADD COLUMN x INT", b"TRUNCATE app.BUCKET_05",
                      b"RENAME TABLE bucket_04 TO bucket_05", b"DROP DATABASE IF EXISTS `app`"):
        with pytest.raises(UnreplayableChange, match="changed the table's definition") as caught:
            run(other, transaction(2, (QUERY_EVENT, query_body(statement)), standalone=True))
        assert caught.value.gtid == "0-1-2"


def test_statement_logged_data_and_savepoint_rollbacks_are_refused():
    with pytest.raises(UnreplayableChange, match=r"by a statement \(UPDATE\).*binlog_format is not ROW"):
        run(transaction(3, (QUERY_EVENT, query_body(b"UPDATE bucket_01 SET data = '{}'"))))
    with pytest.raises(UnreplayableChange, match="savepoint"):
        run(transaction(4, (QUERY_EVENT, query_body(b"ROLLBACK TO SAVEPOINT s1"))))
    with pytest.raises(UnreplayableChange, match="no table map"):
        run(transaction(5, (WRITE_ROWS, rows(11))))


def test_statement_verbs_skip_comments():
    assert statement_verb(b"  /* x */ -- y\n insert into t") == "INSERT"
    assert statement_verb(b"# a\nXA END 'x'") == "XA" and statement_verb(b"") == ""
