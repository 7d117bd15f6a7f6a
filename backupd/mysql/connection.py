"""Connections to MySQL/MariaDB servers: connect, run a statement, what the server is."""

from __future__ import annotations

import re
from typing import Any

import pymysql

from backupd.config import EndpointConfig
from backupd.errors import ServerError
from backupd.repo.model import ServerInfo

SYSTEM_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})


def connect(endpoint: EndpointConfig, *, label: str, database: str | None = None,
            **options: Any) -> pymysql.connections.Connection:
    """Open a PyMySQL connection (utf8mb4, autocommit) or raise ServerError naming ``label``."""
    password = endpoint.password.reveal() if endpoint.password else ""
    where = {"unix_socket": endpoint.socket} if endpoint.socket else \
        {"host": endpoint.host, "port": endpoint.port}
    try:
        return pymysql.connect(user=endpoint.user, password=password, database=database,
                               charset="utf8mb4", autocommit=True,
                               connect_timeout=int(endpoint.connect_timeout), **where, **options)
    except pymysql.MySQLError as exc:
        raise ServerError(f"{label}: cannot connect to {endpoint.describe()}: {_message(exc)}") from None


def query(conn: pymysql.connections.Connection, sql: str, args: Any = None, *,
          label: str) -> list[tuple[Any, ...]]:
    """Run one statement and return its rows; errors become ServerError naming ``label``."""
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, args)
            return list(cursor.fetchall())
    except pymysql.MySQLError as exc:
        raise ServerError(f"{label}: {_message(exc)} (while running: {sql[:120]})") from None


def _message(exc: pymysql.MySQLError) -> str:
    if len(exc.args) >= 2:
        return f"{exc.args[1]} (error {exc.args[0]})"
    return str(exc)


def server_info(conn: pymysql.connections.Connection, *, label: str) -> ServerInfo:
    """Detect the server's vendor (mariadb or mysql) and version."""
    version, comment = query(conn, "SELECT VERSION(), @@version_comment", label=label)[0]
    vendor = "mariadb" if "mariadb" in f"{version} {comment}".lower() else "mysql"
    return ServerInfo(vendor=vendor, version=str(version))


def major_minor(version: str) -> tuple[int, int]:
    """``"10.11.19-MariaDB-0+deb12u1"`` -> ``(10, 11)``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def user_databases(conn: pymysql.connections.Connection, *, label: str) -> list[str]:
    """Every database except the system ones, sorted."""
    rows = query(conn, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA", label=label)
    return sorted(r[0] for r in rows if r[0].lower() not in SYSTEM_DATABASES)


def quote_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
