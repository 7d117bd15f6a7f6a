"""Cutting one mysqldump run's output into sections: a preamble, then one section per table.

A run dumps the tables of one database in a known order (``mysqldump ... db t1 t2``). Its
output is: the preamble (session settings: character set, time zone, SQL mode, checks off, and
the snapshot's coordinates as a comment), then for each table its structure (``-- Table structure
for table `t``` line, ``DROP TABLE``, ``CREATE TABLE``), its data (``LOCK TABLES``, inserts,
``UNLOCK TABLES;``) and its triggers, then the trailer (which restores the session settings,
from ``SET TIME_ZONE=@OLD_TIME_ZONE`` on, and says ``Dump completed``).

``DumpSplitter`` turns that output into events: ``SectionStart`` where a section begins, the
bytes, ``DataStart`` where a table's rows begin (its structure ends) and ``DataEnd`` where they
end and its triggers begin. It cuts only at the
structure line of the table expected next and at the lines above, which are whole lines of
mysqldump's own: values never contain raw newlines in its output, and a line inside a trigger
body (between mysqldump's ``DELIMITER ;;`` and ``DELIMITER ;`` lines) is never taken for one, so
neither a value nor a trigger body can be mistaken for a boundary. The trailer is dropped (the run's trailer is still
checked by ``DumpProcess``); ``finish()`` fails if a table never appeared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from backupd.errors import SourceError
from backupd.mysql.dump import DELIMITER_LINE, find_line
from backupd.sources.exact_splice import ExactDataSplicer

SectionKind = Literal["preamble", "database", "table", "objects"]
_UNLOCK = b"UNLOCK TABLES;\n"
_TRAILER = b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n"


@dataclass(frozen=True)
class SectionStart:
    """A new section begins with the bytes that follow."""

    kind: SectionKind
    database: str | None = None
    table: str | None = None


@dataclass(frozen=True)
class DataStart:
    """The current table's rows start here (what came before is its structure)."""


@dataclass(frozen=True)
class DataEnd:
    """The current table's data ends here; its triggers (if any) follow."""


Event = SectionStart | DataStart | DataEnd | bytes


def structure_line(table: str) -> bytes:
    """The line that starts a table in a run that writes its structure."""
    return b"-- Table structure for table `" + table.replace("`", "``").encode("utf-8") + b"`\n"


def data_line(table: str) -> bytes:
    """The line that starts a table in a run without structure (``--no-create-info``)."""
    return b"-- Dumping data for table `" + table.replace("`", "``").encode("utf-8") + b"`\n"


class DumpSplitter:
    """See the module docstring. ``preamble``: whether this run's preamble is kept (one run's
    is enough: every run has the same settings)."""

    def __init__(self, database: str, tables: list[str], *, preamble: bool, label: str,
                 boundary: Callable[[str], bytes] = structure_line):
        """``boundary(table)``: the line a table starts at (``data_line`` for a run without structure)."""
        self.database = database
        self.boundary = boundary
        self.tables = tables
        self.label = label
        self._carry = b""
        self._next = 0  # index of the next table to find
        self._in_data = False  # inside a table, before its DataEnd
        self._data_started = False  # inside a table, after its DataStart
        self._state: Literal["preamble", "table", "trailer"] = "preamble"
        self._keep_preamble = preamble
        self._preamble_started = False
        self._in_body = False  # between DELIMITER ;; and DELIMITER ; (a trigger's body)

    def feed(self, chunk: bytes) -> Iterator[Event]:
        """Events for ``chunk`` (whole lines; a partial last line waits for the next chunk)."""
        data = self._carry + chunk if self._carry else chunk
        cut = data.rfind(b"\n") + 1
        self._carry = data[cut:]
        if cut:
            yield from self._scan(data[:cut] if cut < len(data) else data)

    def finish(self) -> Iterator[Event]:
        rest, self._carry = self._carry, b""
        if rest:
            yield from self._scan(rest)
        if self._next < len(self.tables):
            raise SourceError(f"{self.label}: mysqldump's output has no table "
                              f"{self.database}.{self.tables[self._next]} (truncated or reordered dump)")
        if self._in_data:
            raise SourceError(f"{self.label}: mysqldump's output ends inside the data of "
                              f"{self.database}.{self.tables[-1]}")

    def _scan(self, body: bytes) -> Iterator[Event]:
        position = 0
        while position < len(body):
            if self._state == "trailer":
                return
            boundary = self._next_boundary(body, position)
            unlock = find_line(body, _UNLOCK, position) if self._in_data else -1
            if self._in_data and not self._data_started:
                table = self.tables[self._next - 1]
                rows = find_line(body, b"-- Dumping data for table `" + table.replace("`", "``").encode() + b"`",
                                  position)
                limits = [limit for limit in (unlock, boundary[0] if boundary else -1) if limit >= 0]
                if rows >= 0 and all(rows <= limit for limit in limits):
                    yield from self._emit(body[position:rows])
                    yield DataStart()
                    self._data_started = True
                    position = rows
                    continue
            if unlock >= 0 and (boundary is None or unlock < boundary[0]):
                end = unlock + len(_UNLOCK)
                yield from self._emit(body[position:end])
                if not self._data_started:
                    yield DataStart()
                yield DataEnd()
                self._in_data = False
                position = end
                continue
            if boundary is None:
                yield from self._emit(body[position:])
                return
            at, what = boundary
            yield from self._emit(body[position:at])
            if self._in_data:  # no UNLOCK TABLES (a table mysqldump wrote no data for)
                if not self._data_started:
                    yield DataStart()
                yield DataEnd()
                self._in_data = False
            if what == "trailer":
                self._state = "trailer"
                return
            self._state = "table"
            table = self.tables[self._next]
            self._next += 1
            self._in_data, self._data_started = True, False
            yield SectionStart("table", self.database, table)
            position = at

    def _next_boundary(self, body: bytes, start: int) -> tuple[int, str] | None:
        """Where the next table's structure line (or, after the last table, the trailer) starts,
        outside trigger bodies. After a table's data (triggers come there), the lines from
        ``start`` are consumed: call it once per position there."""
        if self._next < len(self.tables):
            line, what = self.boundary(self.tables[self._next]), "table"
        elif self._state == "table":
            line, what = _TRAILER, "trailer"
        else:
            return None
        while True:
            at = find_line(body, line, start)
            if not self._in_data:  # triggers may follow: skip what lies inside their bodies
                for match in DELIMITER_LINE.finditer(body, start, at if at >= 0 else len(body)):
                    self._in_body = match.group(1) == b";;"
            if at < 0:
                return None
            if not self._in_body:
                return at, what
            start = at + len(line)

    def _emit(self, data: bytes) -> Iterator[Event]:
        if not data:
            return
        if self._state == "preamble":
            if not self._keep_preamble:
                return
            if not self._preamble_started:
                self._preamble_started = True
                yield SectionStart("preamble")
        yield data


def run_events(chunks: Iterable[bytes], splitter: DumpSplitter,
               splicer: ExactDataSplicer | None = None) -> Iterator[Event]:
    """One mysqldump run's output as events: its chunks through ``splicer`` (exact FLOAT rows
    put in), then cut by ``splitter``."""
    for chunk in chunks:
        for piece in (splicer.feed(chunk) if splicer else (chunk,)):
            yield from splitter.feed(piece)
    if splicer is not None:
        for piece in splicer.finish():
            yield from splitter.feed(piece)
    yield from splitter.finish()
