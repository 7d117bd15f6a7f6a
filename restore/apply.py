"""Applying a logical stream to a target through the mysql client.

The client reads SQL on stdin; the password reaches it through a 0600 option file. Unless the
target says ``write_binlog = true``, the session runs with ``sql_log_bin=0`` so the restored
server does not mint GTIDs of its own for the restore. ``abort()`` kills the client before its
stdin is closed, so a statement cut at a part boundary is never executed.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from contextlib import ExitStack
from typing import IO

from backupd.config import TargetConfig
from backupd.errors import RestoreFailed
from backupd.mysql import option_file


class MysqlClientApplier:
    def __init__(self, target: TargetConfig, *, label: str, mysql: str = "mysql",
                 work_dir: str | None = None):
        self.target = target
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
                "--default-character-set=utf8mb4", "--max-allowed-packet=1G", "--batch"]
        if not self.target.write_binlog:
            args.append("--init-command=SET SESSION sql_log_bin=0")
        try:
            self._process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                             stderr=self._stderr, bufsize=0)
        except FileNotFoundError:
            self._stack.close()
            raise RestoreFailed(f"mysql client '{self.binary}' not found",
                                hint="install mariadb-client or set [backupd] mysql") from None
        return self

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
        self._stack.close()
