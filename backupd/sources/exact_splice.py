"""Putting exactly written rows where mysqldump left a table's data out.

mysqldump runs with ``--ignore-table-data`` for the tables whose rows it cannot write exactly
(``backupd.mysql.exact_rows``): it still writes their structure, and their triggers after it.
``ExactDataSplicer`` passes mysqldump's output through unchanged and, right after such a table's
``CREATE TABLE`` statement (the ``SET character_set_client = @saved_cs_client`` line mysqldump
writes after it), inserts the table's data section, so the data is loaded before its triggers
exist, exactly where mysqldump would have written it. Tables are recognised by mysqldump's
``USE `db`;`` and ``-- Table structure for table `t``` lines; values never contain raw newlines
in mysqldump's output, so these lines cannot occur inside data. ``finish()`` fails if a table
was never found: its rows would be missing from the backup.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

import pymysql

from backupd.errors import SourceError
from backupd.mysql.dump import DELIMITER_LINE, USE_LINE, find_line, unquote_name
from backupd.mysql.exact_rows import data_section
from backupd.mysql.reference import TableInfo

_STRUCTURE = re.compile(rb"^-- Table structure for table `((?:[^`]|``)+)`$", re.M)
_CREATE_END = b"/*!40101 SET character_set_client = @saved_cs_client */;\n"

DataSection = Callable[[str, str], Iterable[bytes]]


class ExactDataSplicer:
    """See the module docstring; ``tables`` are ``(database, table)`` pairs, ``section(db, t)``
    yields a table's data."""

    def __init__(self, tables: Iterable[tuple[str, str]], section: DataSection, *, label: str,
                 database: str | None = None):
        """``database``: the database of a run without ``USE`` lines (``mysqldump db t1 t2``)."""
        self.waiting = set(tables)
        self.section = section
        self.label = label
        self._carry = b""
        self._database: str | None = database
        self._pending: tuple[str, str] | None = None
        self._in_body = False

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """The pieces to pass on for ``chunk`` (whole lines; a partial last line waits)."""
        data = self._carry + chunk if self._carry else chunk
        cut = data.rfind(b"\n") + 1
        self._carry = data[cut:]
        if cut:
            yield from self._scan(data[:cut])

    def finish(self) -> Iterator[bytes]:
        """The rest of the stream; raises SourceError if a table's data was never inserted."""
        rest, self._carry = self._carry, b""
        if rest:
            yield from self._scan(rest)
        if self.waiting or self._pending:
            missing = sorted(self.waiting | ({self._pending} if self._pending else set()))
            names = ", ".join(f"{d}.{t}" for d, t in missing)
            raise SourceError(f"{self.label}: mysqldump wrote no structure for {names}, whose rows "
                              "backupd writes itself; refusing a backup without them")

    def _scan(self, body: bytes) -> Iterator[bytes]:
        emitted = search = 0  # body[:emitted] is passed on; lines before ``search`` are tracked
        while True:
            if self._pending is None:
                found = self._next_table(body, search)
                if found is None:
                    break
                search = found
                continue
            end = find_line(body, _CREATE_END, search)
            if end < 0:
                break
            end += len(_CREATE_END)
            yield body[emitted:end]
            emitted = search = end
            database, table = self._pending
            self._pending = None
            yield from self.section(database, table)
        if emitted < len(body):
            yield body[emitted:] if emitted else body

    def _next_table(self, body: bytes, start: int) -> int | None:
        """Track ``USE`` and structure lines from ``start``; at the structure line of a waiting
        table, set it pending and return where its line ends (None when there is none)."""
        position = start
        while True:
            match = _STRUCTURE.search(body, position)
            if match is None:
                self._track(body, position, len(body))
                return None
            self._track(body, position, match.start())
            key = (self._database or "", unquote_name(match.group(1)))
            position = match.end()
            if key in self.waiting and not self._in_body:
                self.waiting.discard(key)
                self._pending = key
                return position

    def _track(self, body: bytes, start: int, end: int) -> None:
        """Follow ``USE`` lines, and whether we are inside a trigger's body (between mysqldump's
        ``DELIMITER ;;`` and ``DELIMITER ;`` lines), where no line is one of mysqldump's own."""
        if body.find(b"DELIMITER ;", start, end) >= 0:
            for delimiter in DELIMITER_LINE.finditer(body, start, end):
                self._in_body = delimiter.group(1) == b";;"
        if body.find(b"USE `", start, end) >= 0:
            for match in USE_LINE.finditer(body, start, end):
                self._database = unquote_name(match.group(1))


def exact_splicer(conn: pymysql.connections.Connection, tables: Iterable[TableInfo], *, label: str,
                  database: str) -> ExactDataSplicer:
    """The splice of ``tables``' exact rows into a run of ``database`` (``mysqldump ... db t1 t2``),
    the rows read on ``conn`` (a connection of the run's snapshot)."""
    by_key = {(t.database, t.table): t for t in tables}
    return ExactDataSplicer(by_key, lambda d, t: data_section(conn, by_key[(d, t)], label=label),
                            label=label, database=database)
