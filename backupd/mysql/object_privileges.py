"""Whether a logical backup's account sees every trigger and routine it must dump.

A server hides what an account may not see instead of refusing: without ``TRIGGER`` on a
database, ``SHOW TRIGGERS`` and ``information_schema.TRIGGERS`` list none of its triggers;
without ``SELECT`` on ``mysql.proc`` (MariaDB < 11.3; ``SHOW CREATE ROUTINE`` from 11.3, MySQL
``SHOW_ROUTINE`` or global ``SELECT``) routines are left out. mysqldump then dumps none of them
and the per-table reference, which lists objects the same way, agrees: the backup would restore
"verified" without them. So a logical backup first checks the account's privileges
(``information_schema`` privilege tables, the server's own account of them) and refuses,
naming what is missing. Privileges held through roles are not listed there: an account with an
enabled role is not checked (said in the debug log).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import pymysql

from backupd.errors import ServerError, SourceError
from backupd.mysql import grants
from backupd.mysql.connection import query
from backupd.mysql.grants import routines_privilege
from backupd.repo.model import ServerInfo

log = logging.getLogger(__name__)


class HiddenObjects(SourceError):
    """The backup account may not see some triggers or routines: a backup would silently lack them."""


def _like(pattern: str, name: str) -> bool:
    """Whether a grant's database pattern (SQL LIKE: ``%``, ``_``, ``\\_`` escaped) names ``name``."""
    regex = "".join(".*" if part == "%" else "." if part == "_" else re.escape(part[-1])
                    for part in re.findall(r"\\.|%|_|[^\\%_]", pattern))
    return re.fullmatch(regex, name) is not None


def missing_privileges(server: ServerInfo, databases: Iterable[str], global_privileges: set[str],
                       schema_privileges: list[tuple[str, str]], table_privileges: set[tuple[str, str, str]]
                       ) -> list[str]:
    """What the account lacks to see every trigger and routine of ``databases`` (pure):
    ``schema_privileges`` are (database pattern, privilege), ``table_privileges`` (database,
    table, privilege)."""

    def holds(privilege: str, database: str) -> bool:
        return privilege in global_privileges or any(p == privilege and _like(pattern, database)
                                                     for pattern, p in schema_privileges)

    privilege, scope = routines_privilege(grants.server(server.vendor, server.version))
    need = "SELECT on `mysql`.`proc`" if scope == "mysql.proc" else privilege
    missing = []
    for database in databases:
        if not holds("TRIGGER", database):
            missing.append(f"TRIGGER on `{database}` (its triggers would be left out)")
        routines = "SELECT" in global_privileges or (
            holds(privilege, database) if scope == "database" else
            privilege in global_privileges if scope == "global" else
            ("mysql", "proc", "SELECT") in table_privileges or holds("SELECT", "mysql"))
        if not routines:
            missing.append(f"{need} for `{database}` (its procedures and functions would be left out)")
    return missing


def check_sees_every_object(conn: pymysql.connections.Connection, server: ServerInfo, databases: list[str], *,
                            label: str) -> None:
    """Raise ``HiddenObjects`` naming each privilege the account lacks (module docstring)."""
    try:
        if query(conn, "SELECT COUNT(ROLE_NAME) FROM information_schema.ENABLED_ROLES", label=label)[0][0]:
            log.debug("%s: the account holds privileges through roles: not checked", label)
            return
    except ServerError:
        pass  # no roles on this server
    grantee = query(conn, "SELECT CONCAT(\"'\", SUBSTRING_INDEX(CURRENT_USER(), '@', 1), \"'@'\", "
                          "SUBSTRING_INDEX(CURRENT_USER(), '@', -1), \"'\")", label=label)[0][0]
    global_privileges = {str(r[0]) for r in query(
        conn, "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = %s", (grantee,),
        label=label)}
    schema_privileges = [(str(r[0]), str(r[1])) for r in query(
        conn, "SELECT TABLE_SCHEMA, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = %s",
        (grantee,), label=label)]
    table_privileges = {(str(r[0]), str(r[1]), str(r[2])) for r in query(
        conn, "SELECT TABLE_SCHEMA, TABLE_NAME, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES "
              "WHERE GRANTEE = %s", (grantee,), label=label)}
    missing = missing_privileges(server, databases, global_privileges, schema_privileges, table_privileges)
    if missing:
        raise HiddenObjects(f"{label}: the backup account {grantee} lacks {'; '.join(missing)}: the server hides "
                            "those objects instead of refusing, so the backup would silently lack them",
                            hint="grant what `backupd grants --shard ID` prints")
