"""Sending a table-addressed backup's SQL to the server directly, statement by statement.

The sections hold SQL written by mysqldump and by backupd (``INSERT`` of about 1 MiB each,
``CREATE TABLE``, triggers between ``DELIMITER ;;`` and ``DELIMITER ;``). Sent through the mysql
client, every byte is parsed twice (by the client, to find statement ends, then by the server);
measured on the 1 GiB bench shard, the clients used ~4 of the restore's 6.7 CPU seconds on a
2-core machine the server needed; without them the restore took 11.8 s instead of 13.0 s.
``SqlStatements`` finds the statement ends itself, the way the client does for this SQL: a
statement ends at a line that ends with the delimiter (values
never contain raw newlines in these dumps, so a line end inside a statement is never a value's);
``DELIMITER x`` lines change the delimiter; what holds only comments or blanks is not sent (the
server would answer "Query was empty"). ``ServerApplier`` sends each statement over one
connection and reports an error as the server's code and message, never the statement (rows).
"""

from __future__ import annotations

import queue
import re
import threading

import pymysql

from backupd.config import TargetConfig
from backupd.errors import RestoreFailed
from backupd.mysql.connection import connect
from restore.server_messages import OUT_OF_SPACE_HINT, OUT_OF_SPACE_WORDS, out_of_space, withhold_values

_DELIMITER = re.compile(rb"^DELIMITER[ \t]+(\S+)[ \t]*$")
_OUT_OF_SPACE_CODES = frozenset({1114, 1021, 3})
_OUT_OF_SPACE = re.compile(OUT_OF_SPACE_WORDS, re.I)


class SqlStatements:
    """Splits a stream of SQL text into statements (see the module docstring); pure."""

    def __init__(self) -> None:
        self.delimiter = b";"
        self._pending: list[bytes] = []  # the lines of the statement being read
        self._carry = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The statements completed by ``chunk`` (without their delimiter)."""
        data = self._carry + chunk if self._carry else chunk
        statements: list[bytes] = []
        start = 0
        while True:
            if self.delimiter == b";":  # the common case: find statement ends with one search
                end = data.find(b";\n", start)
                if end < 0:
                    break
                body = data[start:end + 1]
                start = end + 2
                lines = body.rsplit(b"\n", 1)
                last = lines[-1]
                match = _DELIMITER.match(last)
                if match:  # "DELIMITER ;;" ends with ";" and a newline too
                    self._pending.append(lines[0] if len(lines) > 1 else b"")
                    self._flush_comments_only()
                    self.delimiter = match.group(1)
                    continue
                self._pending.append(body[:-1])
                statements += self._take()
            else:  # inside DELIMITER ;; (triggers, routines): line by line
                newline = data.find(b"\n", start)
                if newline < 0:
                    break
                line = data[start:newline]
                start = newline + 1
                match = _DELIMITER.match(line)
                if match:
                    self._flush_comments_only()
                    self.delimiter = match.group(1)
                elif line.rstrip().endswith(self.delimiter):
                    self._pending.append(line.rstrip()[:-len(self.delimiter)])
                    statements += self._take()
                else:
                    self._pending.append(line)
        self._carry = data[start:]
        if self.delimiter == b";" and self._carry and b"\n" in self._carry:
            # whole lines that end no statement yet: keep them aside (a long INSERT's rows)
            cut = self._carry.rfind(b"\n") + 1
            self._pending.append(self._carry[:cut - 1])
            self._carry = self._carry[cut:]
        return statements

    def finish(self) -> list[bytes]:
        """What is left: a last statement without its newline or delimiter is sent too (as the
        client does)."""
        if self._carry:
            last = self._carry.rstrip()
            self._pending.append(last[:-len(self.delimiter)] if last.endswith(self.delimiter) else last)
            self._carry = b""
        return self._take()

    def _take(self) -> list[bytes]:
        statement = b"\n".join(self._pending)
        self._pending = []
        return [statement] if has_sql(statement) else []

    def _flush_comments_only(self) -> None:
        if has_sql(b"\n".join(self._pending)):
            raise RestoreFailed("the backup's SQL has a statement cut short by a DELIMITER line")
        self._pending = []


def has_sql(statement: bytes) -> bool:
    """Whether ``statement`` holds more than blanks and ``--`` comment lines (reads only up to
    its first line of SQL: an INSERT's megabyte is not split)."""
    start = 0
    while start < len(statement):
        end = statement.find(b"\n", start)
        end = len(statement) if end < 0 else end
        line = statement[start:end].strip()
        if line and not line.startswith(b"--"):
            return True
        start = end + 1
    return False


def describe_error(exc: pymysql.MySQLError) -> tuple[int | None, str]:
    """The server's code and message, quoted values withheld."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    message = str(exc.args[1]) if len(exc.args) >= 2 else str(exc)
    return code, withhold_values(message)


class ServerApplier:
    """Statements of a SQL stream executed on one connection to the target (see the module docstring).

    Statements are executed by a sender thread of their own, at most ``QUEUE`` statements behind
    the caller, so reading, checking, decompressing and splitting the next ones overlaps the
    server's work on the current one (the mysql client gave the same overlap through its pipe).
    ``flush`` waits until every statement given so far is executed. An error is raised by the
    next call: RestoreFailed with the server's code and message; a full disk or tablespace is
    said to be one. ``sql_log_bin=0`` unless the target writes its binlog.
    """

    QUEUE = 4

    def __init__(self, target: TargetConfig, *, label: str):
        self.label = label
        self.statements = SqlStatements()
        self.conn = connect(target, label=label, read_timeout=None, max_allowed_packet=1024**3)
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=self.QUEUE)
        self._error: BaseException | None = None
        self._sender = threading.Thread(target=self._send, name=f"sql-{label}", daemon=True)
        self._sender.start()
        if not target.write_binlog:
            self.execute(b"SET SESSION sql_log_bin = 0")

    def __enter__(self) -> ServerApplier:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def write(self, data: bytes) -> None:
        for statement in self.statements.feed(data):
            self.execute(statement)

    def finish(self) -> None:
        """Send what is left of the stream and wait until everything is executed."""
        for statement in self.statements.finish():
            self.execute(statement)
        self.flush()

    def execute(self, statement: bytes) -> None:
        self._raise_if_failed()
        self._queue.put(statement)

    def flush(self) -> None:
        self._queue.join()
        self._raise_if_failed()

    def close(self) -> None:
        """Stop the sender (statements not executed yet are dropped) and close the connection:
        an open transaction rolls back."""
        self._error = self._error or _Closed()
        self._queue.put(None)
        self._sender.join()
        try:
            self.conn.close()
        except Exception:  # already gone
            pass

    def _raise_if_failed(self) -> None:
        if self._error is not None and not isinstance(self._error, _Closed):
            raise self._error

    def _send(self) -> None:
        while True:
            statement = self._queue.get()
            try:
                if statement is None:
                    return
                if self._error is None:
                    self._execute_now(statement)
            except BaseException as exc:  # raised to the caller by its next call
                self._error = exc
            finally:
                self._queue.task_done()

    def _execute_now(self, statement: bytes) -> None:
        try:
            self.conn.query(statement)  # bytes are sent as they are
        except pymysql.MySQLError as exc:
            code, message = describe_error(exc)
            text = f"ERROR {code}: {message}" if code is not None else message
            if code in _OUT_OF_SPACE_CODES or _OUT_OF_SPACE.search(message):
                raise RestoreFailed(out_of_space(self.label, text), hint=OUT_OF_SPACE_HINT) from None
            raise RestoreFailed(f"{self.label}: the server refused a statement: {text}") from None


class _Closed(Exception):
    """The applier was closed: statements still queued are dropped."""
