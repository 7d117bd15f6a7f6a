"""The per-table reference: row counts and content digests, computed by the server.

Both sides use the same SQL: the backup computes it on the source inside the dump's snapshot,
the restore on the target after applying, so equal digests prove equal table contents.

The digest of a table: for every row, a hash of every column value (as the server returns it;
cast to binary when the table mixes collations) in column order, joined with ``|`` and followed
by each value's length (``N`` for NULL, so NULLs, empty strings and separators inside values
cannot be confused); the row hashes are summed (an order-independent multiset hash, so
duplicate rows in tables without a primary key count), as 16 hex digits. Two algorithms, named
in every reference so the restore computes the same one:

* ``crc32-crc32c-sum64`` (MariaDB >= 10.8, the default there): the sum of the rows' CRC32 mod
  2^32, then the sum of their CRC32C mod 2^32. Two independent 32-bit checks per row; about 40%
  cheaper for the server than MD5, which matters on every backup and every restore.
* ``md5-sum64`` (everywhere else, and every reference written before): the first 64 bits of each
  row's MD5, summed mod 2^64.

Either covers every column of every row, byte for byte as the server returns it; it does not
cover table options, indexes or AUTO_INCREMENT counters (the schema is covered by the object list
and by mysqldump's DDL).

The server's text of a FLOAT is lossy (6 significant digits: 1/3 and 0.333333 both read
"0.333333"), so the ``-exact`` variants of both (every reference written since format 4) read a
FLOAT column as ``CAST(col AS DOUBLE)``: a float converts to a double exactly, and the server
renders a double with the shortest text that parses back to the same bits, so the digest covers
the stored binary value. DOUBLE, DECIMAL, fractional TIME/DATETIME/TIMESTAMP, BIT and spatial
values already read back exactly (tests/integration/mysql/test_exact_values.py). Exact references
also carry one digest per FLOAT and DOUBLE column (``column_digests``), so a mismatch names the
column that changed. Older references keep their algorithm and verify as before.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pymysql

from backupd.mysql.connection import major_minor, query, quote_identifier, server_info
from backupd.repo.model import EXACT_DIGEST_ALGORITHMS, Reference, SchemaObject, TableReference

MD5_SUM64 = "md5-sum64"
CRC_SUM64 = "crc32-crc32c-sum64"
MD5_SUM64_EXACT = EXACT_DIGEST_ALGORITHMS[0]
CRC_SUM64_EXACT = EXACT_DIGEST_ALGORITHMS[1]
DIGEST_ALGORITHMS = frozenset({MD5_SUM64, CRC_SUM64, *EXACT_DIGEST_ALGORITHMS})
FLOATING_TYPES = frozenset({"float", "double"})  # the columns that get a digest of their own


def digest_algorithm_for(vendor: str, version: str) -> str:
    """The cheapest exact digest the server can compute (CRC32C() arrived in MariaDB 10.8)."""
    return CRC_SUM64_EXACT if vendor == "mariadb" and major_minor(version) >= (10, 8) else MD5_SUM64_EXACT


def is_exact(algorithm: str) -> bool:
    """Whether ``algorithm`` reads FLOAT columns by their binary value (see the module docstring)."""
    return algorithm in EXACT_DIGEST_ALGORITHMS


def _crc_family(algorithm: str) -> bool:
    return algorithm in (CRC_SUM64, CRC_SUM64_EXACT)


@dataclass(frozen=True)
class Column:
    name: str
    collation: str | None  # None for numbers, dates, binary strings
    data_type: str = ""    # information_schema DATA_TYPE, lower case ("bigint", "datetime")
    generated: bool = False  # a VIRTUAL or STORED generated column (never inserted)


@dataclass(frozen=True)
class TableInfo:
    database: str
    table: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    schema_digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.database}.{self.table}"

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)


def list_tables(conn: pymysql.connections.Connection, databases: Iterable[str], *,
                label: str, table: str | None = None) -> list[TableInfo]:
    """Base tables of ``databases`` (or just ``table``) with their columns in ordinal order,
    primary key and definition fingerprint, sorted by name.

    The fingerprint (``schema_digest``) covers every column's name, position, type,
    nullability, default, collation and extra attributes, every index's columns and
    uniqueness, and the table's engine and collation; two tables with equal fingerprints accept
    the same rows. It is what an incremental compares with its base full to decide whether a
    table's changed rows can be applied on top of the full's copy.
    """
    names = list(databases)
    if not names:
        return []
    marks = ", ".join(["%s"] * len(names))
    only = " AND TABLE_NAME = %s" if table is not None else ""
    args = names + ([table] if table is not None else [])
    # Three plain queries joined here: information_schema.TABLES joined in SQL costs ~10x more.
    bases = query(conn, f"""
        SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES
        WHERE TABLE_SCHEMA IN ({marks}) AND TABLE_TYPE = 'BASE TABLE'{only}""", args, label=label)
    shape: dict[tuple[str, str], list[Any]] = {(s, t): [engine, collation] for s, t, engine, collation in bases}
    rows = query(conn, f"""
        SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLLATION_NAME, DATA_TYPE, COLUMN_TYPE,
               IS_NULLABLE, COLUMN_DEFAULT, EXTRA, GENERATION_EXPRESSION
        FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ({marks}){only}
        ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION""", args, label=label)
    indexes = query(conn, f"""
        SELECT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART, INDEX_TYPE
        FROM information_schema.STATISTICS WHERE TABLE_SCHEMA IN ({marks}){only}
        ORDER BY TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX""", args, label=label)
    columns: dict[tuple[str, str], list[Column]] = {}
    for schema, name, column, collation, data_type, *definition in rows:
        key = (schema, name)
        if key in shape:  # a view's columns are listed too
            extra, expression = definition[3], definition[4]
            generated = expression is not None or "GENERATED" in str(extra or "").upper()
            columns.setdefault(key, []).append(Column(column, collation, str(data_type).lower(), generated))
            shape[key].append([column, collation, data_type, *definition])
    primary: dict[tuple[str, str], list[str]] = {}
    for schema, name, index, non_unique, column, sub_part, index_type in indexes:
        key = (schema, name)
        if key in shape:
            shape[key].append(["index", index, int(non_unique), column, sub_part, index_type])
            if index == "PRIMARY":
                primary.setdefault(key, []).append(column)
    return [TableInfo(s, t, tuple(c), tuple(primary.get((s, t), ())), _fingerprint(shape[(s, t)]))
            for (s, t), c in sorted(columns.items())]


def _fingerprint(shape: list[Any]) -> str:
    text = json.dumps(shape, default=str, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def list_objects(conn: pymysql.connections.Connection, databases: Iterable[str], *,
                 label: str) -> list[SchemaObject]:
    """Views, triggers, procedures, functions and events of ``databases``, sorted."""
    names = list(databases)
    if not names:
        return []
    marks = ", ".join(["%s"] * len(names))
    found: list[SchemaObject] = []
    for sql in (
        f"SELECT TABLE_SCHEMA, TABLE_NAME, 'view' FROM information_schema.VIEWS WHERE TABLE_SCHEMA IN ({marks})",
        f"SELECT TRIGGER_SCHEMA, TRIGGER_NAME, 'trigger' FROM information_schema.TRIGGERS "
        f"WHERE TRIGGER_SCHEMA IN ({marks})",
        f"SELECT ROUTINE_SCHEMA, ROUTINE_NAME, LOWER(ROUTINE_TYPE) FROM "
        f"information_schema.ROUTINES WHERE ROUTINE_SCHEMA IN ({marks})",
        f"SELECT EVENT_SCHEMA, EVENT_NAME, 'event' FROM information_schema.EVENTS WHERE EVENT_SCHEMA IN ({marks})",
    ):
        found += [SchemaObject(database=d, kind=k, name=n) for d, n, k in query(conn, sql, names, label=label)]
    return sorted(found, key=lambda o: (o.database, o.kind, o.name))


def digest_sql(table: TableInfo, algorithm: str = MD5_SUM64) -> str:
    """The statement returning ``(row count, digest sum[, second sum], column sums...)`` for one
    table; the column sums (exact algorithms only) follow ``digested_columns(table, algorithm)``.

    Values are concatenated as the server returns them; only when a table's text columns use
    more than one collation are they cast to binary (CONCAT would refuse the mix). The cast
    costs about a third of the digest's time, so it is not applied where it changes nothing.
    """
    if algorithm not in DIGEST_ALGORITHMS:
        raise ValueError(f"unknown digest algorithm {algorithm!r}")
    collations = {c.collation for c in table.columns if c.collation}
    cast = len(collations) > 1
    exact = is_exact(algorithm)

    def value(column: Column) -> str:
        name = quote_identifier(column.name)
        if exact and column.data_type == "float":
            return f"CAST({name} AS DOUBLE)"
        return f"CAST({name} AS BINARY)" if cast and column.collation else name

    values = ", ".join(value(c) for c in table.columns)
    lengths = ", ".join(f"IFNULL(LENGTH({value(c)}), 'N')" for c in table.columns)
    row = f"CONCAT_WS('|', {values}, CONCAT_WS(',', {lengths}))"
    columns = "".join(f", IFNULL(SUM({_row_hash(f'IFNULL(CONCAT({value(c)}), {_NULL})', algorithm)}), 0)"
                      for c in digested_columns(table, algorithm))
    source = f"FROM {quote_identifier(table.database)}.{quote_identifier(table.table)}"
    if _crc_family(algorithm):
        return f"SELECT COUNT(*), IFNULL(SUM(CRC32({row})), 0), IFNULL(SUM(CRC32C({row})), 0){columns} {source}"
    return f"SELECT COUNT(*), IFNULL(SUM({_row_hash(row, algorithm)}), 0){columns} {source}"


_NULL = "'N'"  # a column digest's NULL: no number renders as N


def _row_hash(expression: str, algorithm: str) -> str:
    if _crc_family(algorithm):
        return f"CRC32({expression})"
    return f"CAST(CONV(LEFT(MD5({expression}), 16), 16, 10) AS UNSIGNED)"


def digested_columns(table: TableInfo, algorithm: str) -> list[Column]:
    """The columns that get a digest of their own (FLOAT and DOUBLE, exact algorithms only)."""
    return [c for c in table.columns if c.data_type in FLOATING_TYPES] if is_exact(algorithm) else []


def count_sql(table: TableInfo) -> str:
    return f"SELECT COUNT(*) FROM {quote_identifier(table.database)}.{quote_identifier(table.table)}"


def table_reference(conn: pymysql.connections.Connection, table: TableInfo, mode: str, *,
                    label: str, algorithm: str = MD5_SUM64) -> TableReference:
    """Row count (and digest when ``mode == "digest"``) of one table, in the current snapshot."""
    if mode == "digest":
        count, *sums = query(conn, digest_sql(table, algorithm), label=label)[0]
        if _crc_family(algorithm):
            digest, rest = f"{int(sums[0]) % 2**32:08x}{int(sums[1]) % 2**32:08x}", sums[2:]
            width, modulus = 8, 2**32
        else:
            digest, rest = f"{int(sums[0]) % 2**64:016x}", sums[1:]
            width, modulus = 16, 2**64
        columns = {c.name: f"{int(total) % modulus:0{width}x}"
                   for c, total in zip(digested_columns(table, algorithm), rest, strict=True)}
        return TableReference(database=table.database, table=table.table, rows=int(count),
                              digest=digest, schema_digest=table.schema_digest, column_digests=columns or None)
    (count,) = query(conn, count_sql(table), label=label)[0]
    return TableReference(database=table.database, table=table.table, rows=int(count),
                          schema_digest=table.schema_digest)


def compute_reference(conns: Sequence[pymysql.connections.Connection], databases: Iterable[str],
                      mode: str, *, label: str, tables: list[TableInfo] | None = None,
                      should_stop: Callable[[], bool] = lambda: False,
                      algorithm: str | None = None) -> Reference:
    """The reference of ``databases`` as seen by the connections' snapshot (digests with
    ``algorithm``, default: the cheapest the server can compute).

    ``conns`` must all see the same snapshot; tables are measured on all of them at once (one
    query per connection: the server runs each on its own core). ``should_stop`` lets a caller
    abandon the scan between tables (a partial result that the caller must then discard).
    """
    databases = list(databases)
    if mode == "digest" and algorithm is None:
        server = server_info(conns[0], label=label)
        algorithm = digest_algorithm_for(server.vendor, server.version)
    tables = list_tables(conns[0], databases, label=label) if tables is None else tables
    pending = iter(tables)
    lock = threading.Lock()
    measured: dict[tuple[str, str], TableReference] = {}

    def work(conn: pymysql.connections.Connection) -> None:
        while not should_stop():
            with lock:
                table = next(pending, None)
            if table is None:
                return
            measured[(table.database, table.table)] = table_reference(conn, table, mode, label=label,
                                                                      algorithm=algorithm or MD5_SUM64)

    if len(conns) == 1:
        work(conns[0])
    else:
        with ThreadPoolExecutor(len(conns), thread_name_prefix="reference") as pool:
            for done in [pool.submit(work, conn) for conn in conns]:
                done.result()
    refs = [measured[(t.database, t.table)] for t in tables if (t.database, t.table) in measured]
    return Reference(mode=mode, digest_algorithm=algorithm if mode == "digest" else None,
                     tables=refs, objects=list_objects(conns[0], databases, label=label))
