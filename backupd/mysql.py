"""Connections to MySQL/MariaDB servers and the 0600 option files handed to client tools."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pymysql

from backupd.config import EndpointConfig
from backupd.errors import ServerError
from backupd.model import ServerInfo
from backupd.processes import pid_alive

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


def _option_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


_OPTION_DIR = re.compile(r"^backupd-(\d+)-")


def remove_stale_option_dirs(work_dir: str | None = None) -> None:
    """Remove option-file folders left by backupd processes that were killed (SIGKILL, a
    crash) before they could clean up: their names carry the pid that made them."""
    root = Path(work_dir or tempfile.gettempdir())
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        match = _OPTION_DIR.match(name)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(root / name, ignore_errors=True)  # not ours to read: rmtree fails quietly


@contextmanager
def option_file(endpoint: EndpointConfig, work_dir: str | None = None) -> Iterator[Path]:
    """Write a ``[client]`` option file readable only by us (0600, in a 0700 folder).

    This is how passwords reach mysqldump and mysql: never argv, never the environment. The
    file and its folder are removed when the context exits; folders left by killed processes
    are removed by the next one (``remove_stale_option_dirs``).
    """
    remove_stale_option_dirs(work_dir)
    folder = Path(tempfile.mkdtemp(prefix=f"backupd-{os.getpid()}-", dir=work_dir))
    path = folder / "client.cnf"
    lines = ["[client]", f"user={_option_value(endpoint.user)}"]
    if endpoint.password is not None:
        lines.append(f"password={_option_value(endpoint.password.reveal())}")
    if endpoint.socket:
        lines.append(f"socket={_option_value(endpoint.socket)}")
    else:
        lines += [f"host={_option_value(endpoint.host)}", f"port={endpoint.port}", "protocol=TCP"]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
