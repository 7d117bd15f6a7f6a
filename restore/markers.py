"""Marks, in a mysqldump stream, the point where each table's data is complete.

mysqldump writes every table's rows between ``LOCK TABLES `t` WRITE;`` and ``UNLOCK TABLES;``
lines (empty tables included), after a ``USE `db`;`` line. ``LoadMarkers`` passes the stream
through unchanged except that, after each ``UNLOCK TABLES;`` line, it adds
``SELECT 'backupd-loaded:N';``. The mysql client prints that line when it has executed
everything before it, so the restore learns that table N is fully loaded and can verify it
while later tables are still loading. Values never contain raw newlines in mysqldump output
(they are escaped), so these lines cannot occur inside data.
"""

from __future__ import annotations

import re

from backupd.mysql.dump import USE_LINE, find_line, unquote_name

MARKER_PREFIX = b"backupd-loaded:"
_UNLOCK = b"UNLOCK TABLES;\n"
_LOCK = re.compile(rb"^LOCK TABLES `((?:[^`]|``)+)` WRITE;$", re.M)
_MARKER_LINE = re.compile(rb"^backupd-loaded:(\d+)$")


class LoadMarkers:
    def __init__(self) -> None:
        self._carry = b""
        self._database: str | None = None
        self._table: str | None = None
        self.tables: dict[int, tuple[str, str]] = {}

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the pieces to send for ``chunk`` (whole lines; a partial last line waits)."""
        data = self._carry + chunk if self._carry else chunk
        cut = data.rfind(b"\n") + 1
        self._carry = data[cut:]
        return self._scan(data[:cut]) if cut else []

    def flush(self) -> list[bytes]:
        """The rest of the stream (a last line without a newline is passed through)."""
        rest, self._carry = self._carry, b""
        return [rest] if rest else []

    def _scan(self, body: bytes) -> list[bytes]:
        pieces: list[bytes] = []
        start = 0
        while True:
            at = find_line(body, _UNLOCK, start)
            if at < 0:
                break
            self._track(body, start, at)
            end = at + len(_UNLOCK)
            pieces.append(body[start:end])
            if self._database and self._table:
                number = len(self.tables) + 1
                self.tables[number] = (self._database, self._table)
                pieces.append(b"SELECT '%s%d';\n" % (MARKER_PREFIX, number))
            self._table = None
            start = end
        self._track(body, start, len(body))
        if start < len(body):
            pieces.append(body[start:] if start else body)
        return pieces

    def _track(self, body: bytes, start: int, end: int) -> None:
        """Update the current database and locked table from lines in ``body[start:end]``."""
        if body.find(b"USE `", start, end) >= 0:
            for match in USE_LINE.finditer(body, start, end):
                self._database = unquote_name(match.group(1))
        if body.find(b"LOCK TABLES `", start, end) >= 0:
            for match in _LOCK.finditer(body, start, end):
                self._table = unquote_name(match.group(1))


def parse_marker(line: bytes) -> int | None:
    """The table number of a marker line printed by the mysql client, else None."""
    match = _MARKER_LINE.match(line.strip())
    return int(match.group(1)) if match else None
