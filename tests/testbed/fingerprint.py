"""A table fingerprint oracle, independent of backupd (:func:`table_fingerprint`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pymysql
import pymysql.cursors

from tests.testbed.mariadb import MariaDBServer

__all__ = ["table_fingerprint"]

def _normalise(value: Any) -> Any:
    """Make a fetched value's repr() order-independent (SET columns may come back as sets)."""
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(value))
    return value


def _iter_rows(cur: pymysql.cursors.Cursor, batch: int = 1000) -> Iterator[tuple[Any, ...]]:
    while True:
        rows = cur.fetchmany(batch)
        if not rows:
            return
        yield from rows


def table_fingerprint(server: MariaDBServer, database: str) -> dict[str, tuple[int, str]]:
    """Return ``{table: (row_count, sha256_hex)}`` for every base table of ``database``.

    Independent of backupd: rows are read with every column (FLOAT as ``CAST(... AS DOUBLE)``,
    which shows the stored value's every bit: the plain text has 6 digits) ordered by the primary key (or
    by all columns when there is none; ``max_sort_length`` is raised so long values sort
    by their full content) and hashed as ``repr(row)`` lines. Views are skipped. Two servers
    holding identical data give identical fingerprints.
    """
    with closing(server.connect(cursorclass=pymysql.cursors.SSCursor)) as conn:
        with conn.cursor() as cur:
            cur.execute("SET SESSION max_sort_length = 8388608")
            cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA=%s"
                        " AND TABLE_TYPE='BASE TABLE' ORDER BY TABLE_NAME", (database,))
            tables = [row[0] for row in cur.fetchall()]
        return {table: _fingerprint_one(conn, database, table) for table in tables}


def _order_columns(conn: pymysql.connections.Connection, database: str, table: str) -> list[str]:
    """Primary key columns in key order, else all columns in ordinal order."""
    with conn.cursor() as cur:
        cur.execute("SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE "
                    "TABLE_SCHEMA=%s AND TABLE_NAME=%s AND INDEX_NAME='PRIMARY' "
                    "ORDER BY SEQ_IN_INDEX", (database, table))
        pk = [row[0] for row in cur.fetchall()]
        if pk:
            return pk
        cur.execute("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE "
                    "TABLE_SCHEMA=%s AND TABLE_NAME=%s ORDER BY ORDINAL_POSITION",
                    (database, table))
        return [row[0] for row in cur.fetchall()]


def _fingerprint_one(conn: pymysql.connections.Connection, database: str,
                     table: str) -> tuple[int, str]:
    order = ", ".join(f"`{c}`" for c in _order_columns(conn, database, table))
    digest = hashlib.sha256()
    count = 0
    with conn.cursor() as cur:
        cur.execute("SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=%s "
                    "AND TABLE_NAME=%s ORDER BY ORDINAL_POSITION", (database, table))
        columns = ", ".join(f"CAST(`{name}` AS DOUBLE)" if kind.lower() == "float" else f"`{name}`"
                            for name, kind in cur.fetchall())
        cur.execute(f"SELECT {columns} FROM `{database}`.`{table}` ORDER BY {order}")
        for row in _iter_rows(cur):
            digest.update(repr(tuple(_normalise(v) for v in row)).encode("utf-8",
                                                                         "surrogatepass"))
            digest.update(b"\n")
            count += 1
    return count, digest.hexdigest()
