"""Applying a logical stream to a target through the mysql client.

The client reads SQL on stdin; the password reaches it through a 0600 option file. Unless the
target says ``write_binlog = true``, the session runs with ``sql_log_bin=0`` so the restored
server does not mint GTIDs of its own for the restore. ``abort()`` kills the client before its
stdin is closed, so a statement cut at a part boundary is never executed. The client runs
unbuffered and its output lines are handed to ``on_output`` as they come (the restore uses them
to learn which tables are loaded, see ``restore.markers``). The client runs under the tool runner
(``backupd.mysql.tools``): its stderr goes to a file and is quoted if it fails, redacted first:
the client echoes the failing statement (row data: kilobytes of a customer's rows in a log), so
only its own message lines are kept, and the values some messages quote are withheld
(``redact_client_output``). A failure the server reports as a full table or disk says that the
target ran out of space (``explain_client_error``).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from contextlib import ExitStack

from backupd.errors import RestoreFailed
from backupd.mysql.options import option_file
from backupd.mysql.tools import ToolProcess
from backupd.repo.repository import Target
from restore.server_messages import OUT_OF_SPACE_HINT, OUT_OF_SPACE_WORDS, out_of_space, redact_client_output

_OUT_OF_SPACE = re.compile(rf"ERROR \d+ .*({OUT_OF_SPACE_WORDS})", re.I)


def explain_client_error(error: RestoreFailed, target: Target) -> RestoreFailed:
    """``error`` with its message saying what the server's words mean, where they are obscure."""
    if _OUT_OF_SPACE.search(error.message):
        error.message = out_of_space(target.label, error.message)
        error.args = (error.message,)
        error.hint = error.hint or OUT_OF_SPACE_HINT
    return error


class MysqlClientApplier:
    def __init__(self, target: Target, *, mysql: str = "mysql", work_dir: str | None = None,
                 on_output: Callable[[bytes], None] | None = None):
        self.target = target
        self.on_output = on_output
        self.binary = mysql
        self.work_dir = work_dir
        self._stack = ExitStack()
        self._tool: ToolProcess | None = None

    def __enter__(self) -> MysqlClientApplier:
        option_path = self._stack.enter_context(option_file(self.target.config, self.work_dir))
        args = [self.binary, f"--defaults-file={option_path}", "--binary-mode",
                "--default-character-set=utf8mb4", "--max-allowed-packet=1G", "--batch",
                "--skip-column-names", "--unbuffered"]
        if not self.target.config.write_binlog:
            args.append("--init-command=SET SESSION sql_log_bin=0")
        tool = ToolProcess(self.target.label, "mysql client", args, error=RestoreFailed, stdin=subprocess.PIPE,
                           work_dir=self.work_dir, on_stdout_line=self.on_output or (lambda _: None),
                           missing_hint="install mariadb-client or set [backupd] mysql",
                           redact=redact_client_output)
        self._stack.callback(tool.reap)
        try:
            self._tool = tool.start()
        except BaseException:
            self._stack.close()
            raise
        return self

    @property
    def tool(self) -> ToolProcess:
        assert self._tool is not None, "use the applier as a context manager"
        return self._tool

    def write(self, data: bytes) -> None:
        try:
            self.tool.write(data)
        except RestoreFailed as exc:
            raise explain_client_error(exc, self.target) from None

    def finish(self) -> None:
        """Close stdin and wait; raise RestoreFailed with the client's error if it failed."""
        self.tool.close_stdin()
        try:
            self.tool.check()
        except RestoreFailed as exc:
            raise explain_client_error(exc, self.target) from None

    def abort(self) -> None:
        """Kill the client before its stdin is closed: a statement cut short is never run."""
        self.tool.reap()

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None and self._tool is not None:
            self.abort()
        self._stack.close()  # a client still running is killed before its stdin closes
