"""Rows of tables that mysqldump cannot write exactly, written as SQL by the server itself.

The server renders a FLOAT with 6 significant digits, so mysqldump writes 1/3 as ``0.333333``
and the restored value is another float. For tables with FLOAT columns the backup leaves the data
out of mysqldump's run (``--ignore-table-data``) and writes it here instead, on a connection
inside the same snapshot: the server turns every value into an SQL literal (``QUOTE`` for text
and dates, hex for binary strings, BIT as a number, FLOAT through ``CAST(... AS DOUBLE)`` with an
``e0`` exponent so it is parsed as a double: a float converts to a double exactly and the double's
text parses back to the same bits, so the restored FLOAT is the stored one), and this module only
joins the literals into ``INSERT`` statements of about 1 MiB. Raw newlines in text are written
``\\n`` (``QUOTE`` leaves them), so, as in mysqldump's output, no value spans lines.

The section has mysqldump's shape (``LOCK TABLES``, ``ALTER TABLE ... DISABLE KEYS``, the
inserts, ``UNLOCK TABLES``), which the restore's load markers recognise.
"""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
import pymysql.cursors

from backupd.errors import SourceError
from backupd.mysql.connection import quote_identifier
from backupd.mysql.reference import Column, TableInfo

STATEMENT_BYTES = 1024 * 1024
BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry",
                          "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
                          "geometrycollection"})
PLAIN_NUMBER_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal",
                                "double", "year"})


def needs_exact_rows(table: TableInfo) -> bool:
    """Whether mysqldump would write some of the table's values inexactly (a FLOAT column)."""
    return any(c.data_type == "float" and not c.generated for c in table.columns)


def literal_sql(column: Column) -> str:
    """The SQL expression that renders ``column``'s value as an SQL literal (``NULL`` for NULL)."""
    name = quote_identifier(column.name)
    kind = column.data_type
    if kind == "float":
        text = f"CONCAT(CAST({name} AS DOUBLE))"
        rendered = f"IF(LOCATE('e', {text}), {text}, CONCAT({text}, 'e0'))"
    elif kind == "bit":
        rendered = f"CONCAT({name} + 0)"
    elif kind in BINARY_TYPES or (column.collation is None and kind in ("char", "varchar", "text")):
        rendered = f"CONCAT('0x', HEX({name}))" if True else ""
        rendered = f"IF({name} = '', '''''', CONCAT('0x', HEX({name})))"
    elif kind in PLAIN_NUMBER_TYPES:
        rendered = f"CONCAT({name})"
    else:  # text, dates and times, ENUM, SET, JSON, UUID, INET6...: a quoted string
        quoted = f"CONVERT(QUOTE({name}) USING utf8mb4)"
        return f"REPLACE(REPLACE({quoted}, '\\n', '\\\\n'), '\\r', '\\\\r')"  # QUOTE(NULL) is NULL's literal
    return f"IFNULL({rendered}, 'NULL')"


def rows_sql(table: TableInfo, where: str | None = None) -> str:
    """The query returning one ``(literal,literal,...)`` tuple per row."""
    columns = [c for c in table.columns if not c.generated]
    literals = ", ".join(literal_sql(c) for c in columns)
    source = f"{quote_identifier(table.database)}.{quote_identifier(table.table)}"
    return f"SELECT CONCAT('(', CONCAT_WS(',', {literals}), ')') FROM {source}" + \
        (f" WHERE {where}" if where else "")


def insert_prefix(table: TableInfo, verb: str) -> bytes:
    """``verb INTO `t` (columns) VALUES``: the table without its database (statements run after
    ``USE``; a table restored alone is loaded into a scratch database)."""
    name = quote_identifier(table.table)
    columns = ",".join(quote_identifier(c.name) for c in table.columns if not c.generated)
    return f"{verb} INTO {name} ({columns}) VALUES ".encode()


def exact_rows(conn: pymysql.connections.Connection, table: TableInfo, *, label: str,
               where: str | None = None, verb: str = "INSERT") -> Iterator[bytes]:
    """``verb`` statements (``INSERT`` or ``REPLACE``) holding every row of ``table`` (matching
    ``where``) as ``conn``'s snapshot sees it, about ``STATEMENT_BYTES`` each; rows are read
    unbuffered, so memory stays at one statement whatever the table's size."""
    prefix = insert_prefix(table, verb)
    sql = rows_sql(table, where)
    cursor = pymysql.cursors.SSCursor(conn)
    pending: list[bytes] = []
    size = 0
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(1000):
            for (row,) in rows:
                encoded = row.encode("utf-8") if isinstance(row, str) else bytes(row)
                pending.append(encoded)
                size += len(encoded) + 1
                if size >= STATEMENT_BYTES:
                    yield prefix + b",".join(pending) + b";\n"
                    pending, size = [], 0
    except pymysql.MySQLError as exc:
        raise SourceError(f"{label}: reading the rows of {table.name} failed: {exc}") from None
    finally:
        cursor.close()
    if pending:
        yield prefix + b",".join(pending) + b";\n"


def data_section(conn: pymysql.connections.Connection, table: TableInfo, *, label: str) -> Iterator[bytes]:
    """The table's data as mysqldump would lay it out (see the module docstring)."""
    name = quote_identifier(table.table)
    yield (f"\n--\n-- Dumping data for table {name} (FLOAT values written exactly by backupd)\n--\n\n"
           f"LOCK TABLES {name} WRITE;\n/*!40000 ALTER TABLE {name} DISABLE KEYS */;\n").encode()
    yield from exact_rows(conn, table, label=label)
    yield f"/*!40000 ALTER TABLE {name} ENABLE KEYS */;\nUNLOCK TABLES;\n".encode()
