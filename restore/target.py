"""Checks and preparation of a restore target before anything is written to it."""

from __future__ import annotations

import logging

from backupd.errors import TargetNotEmpty
from backupd.mysql.connection import connect, query, quote_identifier
from backupd.repo.model import Manifest
from backupd.repo.repository import Target

log = logging.getLogger(__name__)


def occupied_databases(target: Target, databases: list[str]) -> dict[str, int]:
    """Which of ``databases`` exist on the target with any table, view or routine in them,
    mapped to how many such objects they hold."""
    label = target.label
    conn = connect(target.config, label=label)
    try:
        found: dict[str, int] = {}
        for database in databases:
            rows = query(conn, """
                SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s)
                     + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s)
                     + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s)""",
                         (database, database, database), label=label)
            if rows[0][0]:
                found[database] = int(rows[0][0])
        return found
    finally:
        conn.close()


def prepare_target(target: Target, databases: list[str], *, force: bool) -> None:
    """Refuse a target holding any of ``databases`` (unless ``force``, which drops them)."""
    occupied = occupied_databases(target, databases)
    if not occupied:
        return
    label = target.label
    if not force:
        database, count = next(iter(occupied.items()))
        raise TargetNotEmpty(f"{label} already holds database '{database}' ({count} objects); "
                             "refusing to overwrite it", hint="restore elsewhere, or pass --force to replace it")
    conn = connect(target.config, label=label)
    try:
        if not target.config.write_binlog:
            query(conn, "SET SESSION sql_log_bin = 0", label=label)
        for database in occupied:
            log.warning("%s: --force: dropping database %s before the restore", label, database)
            query(conn, f"DROP DATABASE {quote_identifier(database)}", label=label)
    finally:
        conn.close()


def reconcile_for_incremental(target: Target, full: Manifest, incremental: Manifest) -> None:
    """Make a target restored from ``full`` ready for ``incremental``'s stream.

    The stream re-creates every view, trigger, routine and event of its snapshot, so all of them
    are dropped first (no trigger fires while its rows are applied); tables and databases that
    no longer exist at the incremental's snapshot are dropped too.
    """
    databases = sorted(set(full.databases) | set(incremental.databases))
    keep_tables = {(t.database, t.table) for t in incremental.reference.tables}
    label = target.label
    conn = connect(target.config, label=label)
    try:
        if not target.config.write_binlog:
            query(conn, "SET SESSION sql_log_bin = 0", label=label)
        for database in sorted(set(full.databases) - set(incremental.databases)):
            log.info("%s: dropping database %s (gone at the incremental's snapshot)", label, database)
            query(conn, f"DROP DATABASE IF EXISTS {quote_identifier(database)}", label=label)
        marks = ", ".join(["%s"] * len(databases))
        statements = []
        for sql in _SCHEMA_OBJECTS:
            for schema, name, kind in query(conn, sql.format(marks=marks), databases, label=label):
                if kind == "BASE TABLE" and (schema, name) in keep_tables:
                    continue
                if kind == "BASE TABLE":
                    log.info("%s: dropping table %s.%s (gone at the incremental's snapshot)", label, schema, name)
                statements.append(f"DROP {kind.replace('BASE ', '')} IF EXISTS {_qualified(schema, name)}")
        for statement in statements:
            query(conn, statement, label=label)
    finally:
        conn.close()


# Every schema object of the databases, as (schema, name, kind for DROP <kind>).
_SCHEMA_OBJECTS = (
    "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, 'TRIGGER' FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA IN ({marks})",
    "SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES "
    "WHERE ROUTINE_SCHEMA IN ({marks})",
    "SELECT EVENT_SCHEMA, EVENT_NAME, 'EVENT' FROM information_schema.EVENTS WHERE EVENT_SCHEMA IN ({marks})",
    "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({marks})",
)


def _qualified(schema: str, name: str) -> str:
    return f"{quote_identifier(schema)}.{quote_identifier(name)}"
