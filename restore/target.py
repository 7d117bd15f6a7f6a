"""Checks and preparation of a restore target before anything is written to it."""

from __future__ import annotations

import logging

from backupd.config import TargetConfig
from backupd.errors import TargetNotEmpty
from backupd.mysql import connect, query, quote_identifier

log = logging.getLogger(__name__)


def occupied_databases(target: TargetConfig, databases: list[str], *, label: str) -> dict[str, int]:
    """Which of ``databases`` exist on the target with any table, view or routine in them,
    mapped to how many such objects they hold."""
    conn = connect(target, label=label)
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


def prepare_target(target: TargetConfig, name: str, databases: list[str], *, force: bool,
                   label: str) -> None:
    """Refuse a target holding any of ``databases`` (unless ``force``, which drops them)."""
    occupied = occupied_databases(target, databases, label=label)
    if not occupied:
        return
    if not force:
        database, count = next(iter(occupied.items()))
        raise TargetNotEmpty(f"target {name} already holds database '{database}' ({count} objects); "
                             "refusing to overwrite it", hint="restore elsewhere, or pass --force to replace it")
    conn = connect(target, label=label)
    try:
        if not target.write_binlog:
            query(conn, "SET SESSION sql_log_bin = 0", label=label)
        for database in occupied:
            log.warning("target %s: --force: dropping database %s before the restore", name, database)
            query(conn, f"DROP DATABASE {quote_identifier(database)}", label=label)
    finally:
        conn.close()
