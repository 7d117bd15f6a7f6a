"""Applying a logical stream to a target through the mysql client.

The client reads SQL on stdin; the password reaches it through a 0600 option file. Unless the
target says ``write_binlog = true``, the session runs with ``sql_log_bin=0`` so the restored
server does not mint GTIDs of its own for the restore. ``abort()`` kills the client before its
stdin is closed, so a statement cut at a part boundary is never executed. The client runs
unbuffered and its output lines are handed to ``on_output`` as they come (the restore uses them
to learn which tables are loaded, see ``restore.markers``). The client runs under the tool runner
(``backupd.mysql.tools``): its stderr goes to a file and is quoted if it fails.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from contextlib import ExitStack

from backupd.errors import RestoreFailed
from backupd.mysql.options import option_file
from backupd.mysql.tools import ToolProcess
from backupd.repo.repository import Target


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
                           missing_hint="install mariadb-client or set [backupd] mysql")
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
        self.tool.write(data)

    def finish(self) -> None:
        """Close stdin and wait; raise RestoreFailed with the client's error if it failed."""
        self.tool.close_stdin()
        self.tool.check()

    def abort(self) -> None:
        """Kill the client before its stdin is closed: a statement cut short is never run."""
        self.tool.reap()

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None and self._tool is not None:
            self.abort()
        self._stack.close()  # a client still running is killed before its stdin closes
