"""The deletes of an incremental: SQL removing every row whose primary key is no longer live.

The live keys are read in the incremental's snapshot and sent as the gaps between runs of
consecutive integer keys (a handful of statements for a bucket table), or, for other keys, as a
list in a temporary table beside the table, joined against it. Statements name the table
without its database: they run after ``USE`` (a table restored alone is loaded into a scratch
database).
"""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
import pymysql.cursors

from backupd.errors import SourceError
from backupd.mysql.connection import query, quote_identifier
from backupd.mysql.reference import TableInfo

INTEGER_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint"})
DELETE_BATCH = 1000
KEY_BATCH = 1000


def delete_statements(conn: pymysql.connections.Connection, table: TableInfo, *,
                      label: str) -> Iterator[str]:
    """SQL deleting every row of ``table`` whose primary key is not live in ``conn``'s snapshot.
    The statements name the table without its database (they run after ``USE``: a table
    restored alone is loaded into a scratch database)."""
    source = f"{quote_identifier(table.database)}.{quote_identifier(table.table)}"
    key = table.primary_key
    columns = {c.name: c for c in table.columns}
    if len(key) == 1 and columns[key[0]].data_type in INTEGER_TYPES:
        yield from _integer_key_deletes(conn, source, quote_identifier(table.table), quote_identifier(key[0]),
                                        label=label)
    else:
        yield from _listed_key_deletes(conn, source, quote_identifier(table.table), [quote_identifier(k) for k in key],
                                       label=label)


def _integer_key_deletes(conn: pymysql.connections.Connection, source: str, target: str, pk: str, *,
                         label: str) -> Iterator[str]:
    """Live keys as runs of consecutive integers: delete outside [min, max] and in every gap."""
    low, high = query(conn, f"SELECT MIN({pk}), MAX({pk}) FROM {source}", label=label)[0]
    if low is None:
        yield f"DELETE FROM {target};\n"
        return
    yield f"DELETE FROM {target} WHERE {pk} < {int(low)} OR {pk} > {int(high)};\n"
    gaps = f"SELECT prev, k FROM (SELECT {pk} AS k, LAG({pk}) OVER (ORDER BY {pk}) AS prev " \
           f"FROM {source}) g WHERE k > prev + 1"
    batch: list[str] = []
    for prev, current in _stream(conn, gaps, label=label):
        batch.append(f"({pk} > {int(str(prev))} AND {pk} < {int(str(current))})")
        if len(batch) == DELETE_BATCH:
            yield f"DELETE FROM {target} WHERE {' OR '.join(batch)};\n"
            batch = []
    if batch:
        yield f"DELETE FROM {target} WHERE {' OR '.join(batch)};\n"


def _listed_key_deletes(conn: pymysql.connections.Connection, source: str, target: str,
                        key: list[str], *, label: str) -> Iterator[str]:
    """Live keys listed in a temporary table (beside the table); delete every row without a match."""
    columns = ", ".join(key)
    keys = "backupd_live_keys"
    yield (f"DROP TEMPORARY TABLE IF EXISTS {keys};\n"
           f"CREATE TEMPORARY TABLE {keys} ENGINE=InnoDB AS SELECT {columns} FROM {target} LIMIT 0;\n"
           f"ALTER TABLE {keys} ADD PRIMARY KEY ({columns});\n")
    batch: list[str] = []
    for row in _stream(conn, f"SELECT {columns} FROM {source}", label=label):
        batch.append("(" + ",".join(conn.escape(value) for value in row) + ")")
        if len(batch) == KEY_BATCH:
            yield f"INSERT INTO {keys} VALUES {','.join(batch)};\n"
            batch = []
    if batch:
        yield f"INSERT INTO {keys} VALUES {','.join(batch)};\n"
    match = " AND ".join(f"t.{k} = k.{k}" for k in key)
    yield (f"DELETE t FROM {target} t LEFT JOIN {keys} k ON {match} WHERE k.{key[0]} IS NULL;\n"
           f"DROP TEMPORARY TABLE {keys};\n")


def _stream(conn: pymysql.connections.Connection, sql: str, *, label: str) -> Iterator[tuple[object, ...]]:
    """Rows of ``sql`` read unbuffered (memory stays small whatever the table's size)."""
    cursor = pymysql.cursors.SSCursor(conn)
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(10_000):
            yield from rows
    except pymysql.MySQLError as exc:
        raise SourceError(f"{label}: reading live keys failed: {exc} (while running: {sql[:120]})") from None
    finally:
        cursor.close()


def batched(statements: Iterator[str], size: int = 1024 * 1024) -> Iterator[bytes]:
    """Join small statements into chunks of about ``size`` bytes."""
    pending: list[str] = []
    length = 0
    for statement in statements:
        pending.append(statement)
        length += len(statement)
        if length >= size:
            yield "".join(pending).encode("utf-8")
            pending, length = [], 0
    if pending:
        yield "".join(pending).encode("utf-8")
