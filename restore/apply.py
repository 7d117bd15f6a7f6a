"""Applying a logical stream to a target through the mysql client.

The client reads SQL on stdin; the password reaches it through a 0600 option file. Unless the
target says ``write_binlog = true``, the session runs with ``sql_log_bin=0`` so the restored
server does not mint GTIDs of its own for the restore. ``abort()`` kills the client before its
stdin is closed, so a statement cut at a part boundary is never executed. The client runs
unbuffered and its output lines are handed to ``on_output`` as they come (the restore uses them
to learn which tables are loaded, see ``restore.markers``).
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from contextlib import ExitStack
from typing import IO, Callable

from backupd.config import TargetConfig
from backupd.errors import RestoreFailed
from backupd.mysql import option_file


class MysqlClientApplier:
    def __init__(self, target: TargetConfig, *, label: str, mysql: str = "mysql",
                 work_dir: str | None = None, on_output: Callable[[bytes], None] | None = None):
        self.target = target
        self.on_output = on_output
        self._reader: threading.Thread | None = None
        self.label = label
        self.binary = mysql
        self.work_dir = work_dir
        self._stack = ExitStack()
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def __enter__(self) -> "MysqlClientApplier":
        option_path = self._stack.enter_context(option_file(self.target, self.work_dir))
        self._stderr = self._stack.enter_context(tempfile.TemporaryFile(dir=self.work_dir))
        args = [self.binary, f"--defaults-file={option_path}", "--binary-mode",
                "--default-character-set=utf8mb4", "--max-allowed-packet=1G", "--batch",
                "--skip-column-names", "--unbuffered"]
        if not self.target.write_binlog:
            args.append("--init-command=SET SESSION sql_log_bin=0")
        try:
            self._process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=self._stderr, bufsize=0)
        except FileNotFoundError:
            self._stack.close()
            raise RestoreFailed(f"mysql client '{self.binary}' not found",
                                hint="install mariadb-client or set [backupd] mysql") from None
        self._reader = threading.Thread(target=self._read_output, name="mysql-output", daemon=True)
        self._reader.start()
        return self

    def _read_output(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            if self.on_output is not None:
                self.on_output(line)

    def write(self, data: bytes) -> None:
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.write(data)
        except BrokenPipeError:
            self._process.wait()
            raise self._failure() from None

    def finish(self) -> None:
        """Close stdin and wait; raise RestoreFailed with the client's error if it failed."""
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.close()
        except BrokenPipeError:
            pass
        if self._process.wait() != 0:
            raise self._failure()
        if self._reader is not None:
            self._reader.join()

    def abort(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def _failure(self) -> RestoreFailed:
        assert self._stderr is not None and self._process is not None
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace").strip()
        last = text.splitlines()[-1] if text else "no message"
        return RestoreFailed(f"{self.label}: mysql client failed with exit status "
                             f"{self._process.returncode}: {last}", detail=text[-4000:])

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()
        if self._process and self._process.stdin and not self._process.stdin.closed:
            try:
                self._process.stdin.close()
            except BrokenPipeError:
                pass
        if self._process and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self._process and self._process.stdout:
            self._process.stdout.close()
        self._stack.close()
