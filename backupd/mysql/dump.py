"""mysqldump: its command lines, and one run of it whose output's coordinates and trailer are checked.

Every run gets the same flags (``common_args``): one consistent snapshot (``--single-transaction``),
rows streamed (``--quick``), binary values as hex, and the snapshot's binlog coordinates printed
as a comment (``--master-data=2 --gtid`` on MariaDB, ``--source-data=2`` on MySQL 8.0.26+). The
password reaches it through a 0600 option file (``backupd.mysql.options``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pymysql

from backupd.errors import SourceError
from backupd.mysql.connection import major_minor, query, quote_identifier
from backupd.mysql.tools import ToolProcess, version_output
from backupd.repo.model import Coordinates

log = logging.getLogger(__name__)

HEADER_LIMIT = 4 * 1024 * 1024
TAIL_KEEP = 64 * 1024
_HEADER_COORDS = re.compile(
    rb"^-- CHANGE (?:MASTER|REPLICATION SOURCE) TO (?:MASTER|SOURCE)_LOG_FILE='([^']+)', "
    rb"(?:MASTER|SOURCE)_LOG_POS=(\d+);", re.M)
_TRAILER = re.compile(rb"^-- Dump completed", re.M)
_TRAILER_GTID = re.compile(rb"^-- SET GLOBAL gtid_slave_pos='([^']*)';", re.M)

# Lines of mysqldump's output that the restore and the sources read (values never hold raw
# newlines in it, so these whole lines are mysqldump's own, except inside trigger and routine
# bodies, which sit between DELIMITER lines).
USE_LINE = re.compile(rb"^USE `((?:[^`]|``)+)`;$", re.M)
DELIMITER_LINE = re.compile(rb"^DELIMITER (;;|;)$", re.M)


def find_line(body: bytes, text: bytes, start: int) -> int:
    """Index of the next line of ``body``, from ``start``, that starts with ``text``, or -1."""
    if body.startswith(text, start) and (start == 0 or body[start - 1:start] == b"\n"):
        return start
    at = body.find(b"\n" + text, start)
    return at + 1 if at >= 0 else -1


def unquote_name(raw: bytes) -> str:
    """A name as mysqldump writes it between backquotes (doubled backquotes undone)."""
    return raw.decode("utf-8").replace("``", "`")


def client_version(binary: str) -> tuple[str, str]:
    """``(flavour, version)`` of a mysqldump binary: ``("mariadb", "10.11.19")`` or ``("mysql", "8.0.36")``."""
    out = version_output(binary, "mysqldump", error=SourceError,
                         hint="install mariadb-client or set [backupd] mysqldump")
    flavour = "mariadb" if "mariadb" in out.lower() else "mysql"
    match = re.search(r"Distrib (\d+\.\d+\.\d+)", out) or re.search(r"Ver (\d+\.\d+\.\d+)", out)
    return flavour, match.group(1) if match else "unknown"


def coordinate_args(flavour: str, version: str) -> list[str]:
    """The flags that make mysqldump print its snapshot's binlog coordinates (commented)."""
    if flavour == "mariadb":
        return ["--master-data=2", "--gtid"]
    if major_minor(version) >= (8, 0) and tuple(map(int, version.split(".")[:3])) >= (8, 0, 26):
        return ["--source-data=2", "--set-gtid-purged=COMMENTED"]
    return ["--master-data=2", "--set-gtid-purged=COMMENTED"]


def common_args(binary: str, option_path: str, flavour: str, version: str) -> list[str]:
    """Flags every mysqldump run of backupd gets (the option file must come first)."""
    return [binary, f"--defaults-file={option_path}", "--single-transaction", "--quick",
            "--hex-blob", "--default-character-set=utf8mb4", "--max-allowed-packet=1G",
            "--no-tablespaces", *coordinate_args(flavour, version)]


def table_run_args(common: list[str], database: str, tables: list[str], *, rows: bool = True) -> list[str]:
    """One run of a table-addressed full (``common``: ``common_args``): ``tables`` of ``database``
    in that order with their triggers; no routines or events (dumped after the data); with
    ``rows=False``, no rows (backupd writes those tables' rows itself; ``--where`` because
    ``--no-data`` would drop the triggers and ``--ignore-table-data`` is ignored for tables named
    on the command line)."""
    return [*common, "--skip-routines", "--skip-events", "--triggers", *([] if rows else ["--where=1=0"]),
            database, *tables]


def create_database_sql(conn: pymysql.connections.Connection, database: str, *, label: str) -> bytes:
    """``CREATE DATABASE IF NOT EXISTS`` with the database's options, as the server shows them."""
    statement = str(query(conn, f"SHOW CREATE DATABASE {quote_identifier(database)}", label=label)[0][1])
    if "IF NOT EXISTS" not in statement:
        statement = statement.replace("CREATE DATABASE ", "CREATE DATABASE IF NOT EXISTS ", 1)
    return f"{statement};\n".encode()


class DumpProcess:
    """One running mysqldump: its stdout as chunks, its header coordinates, exit status and
    trailer checked (stderr is kept and quoted by the tool runner when it fails)."""

    def __init__(self, label: str, args: list[str], *, work_dir: str | None):
        self.label = label
        self.tool = ToolProcess(label, "mysqldump", args, error=SourceError, work_dir=work_dir,
                                missing_hint="install mariadb-client or set [backupd] mysqldump").start()
        self._pending: list[bytes] = []
        self._tail = b""
        self._header_coords: tuple[str, int] | None = None

    def read_header(self) -> None:
        """Read until mysqldump has printed its binlog coordinates (it has its snapshot then)."""
        header = b""
        while len(header) < HEADER_LIMIT:
            chunk = self.tool.read_chunk()
            if not chunk:
                self.tool.check()  # raises with mysqldump's stderr if it failed
                break
            self._pending.append(chunk)
            header += chunk
            match = _HEADER_COORDS.search(header)
            if match:
                self._header_coords = (match.group(1).decode(), int(match.group(2)))
                return
        raise SourceError(f"{self.label}: mysqldump printed no binlog coordinates in its "
                          f"first {len(header)} bytes", detail=self.tool.stderr_tail())

    def check_coordinates(self, coordinates: Coordinates) -> None:
        assert self._header_coords is not None
        ours = (coordinates.binlog_file, coordinates.binlog_pos)
        if self._header_coords != ours:
            raise SourceError(f"{self.label}: mysqldump's snapshot is at "
                              f"{self._header_coords[0]}:{self._header_coords[1]} but the "
                              f"reference snapshot is at {ours[0]}:{ours[1]}; refusing a backup "
                              "whose reference may not match its data")

    def chunks(self) -> Iterator[bytes]:
        """The whole output; at its end, mysqldump's exit status and trailer are checked."""
        pending, self._pending = self._pending, []
        for chunk in pending:
            self._keep_tail(chunk)
            yield chunk
        for chunk in self.tool.chunks():
            self._keep_tail(chunk)
            yield chunk
        log.debug("%s: mysqldump finished", self.label)
        if not _TRAILER.search(self._tail):
            raise SourceError(f"{self.label}: mysqldump exited 0 but its output has no "
                              "'Dump completed' trailer (truncated dump)", detail=self.tool.stderr_tail())

    def check_trailer_gtid(self, coordinates: Coordinates) -> None:
        """The GTID in mysqldump's trailer (MariaDB) must be the reference snapshot's."""
        trailer_gtid = _TRAILER_GTID.search(self._tail)
        if trailer_gtid and coordinates.gtid and trailer_gtid.group(1).decode() != coordinates.gtid:
            raise SourceError(f"{self.label}: mysqldump recorded GTID "
                              f"{trailer_gtid.group(1).decode()!r} but the reference snapshot is at "
                              f"{coordinates.gtid!r}")

    def _keep_tail(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk[-TAIL_KEEP:])[-TAIL_KEEP:]

    def reap(self) -> None:
        """Make sure mysqldump (and its process group) is gone."""
        self.tool.reap()
