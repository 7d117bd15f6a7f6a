"""The one runner for every client tool backupd drives: mysqldump, mariabackup/xtrabackup,
mbstream/xbstream, the mysql client, zstd and a target's start/stop commands.

twindb-backup's habits, kept in one place: a tool's exit status is checked after its stream is
consumed, its stderr goes to a file (never an unread pipe that could fill up and stall it), and
when it fails the error quotes the last line as the message and the tail as the detail.

Every tool gets a minimal environment (``child_environment``): what finds binaries and sets the
locale and time zone, never the variables that hold credentials (``password_env``, ``key_env``,
``api_key_env``, the AWS keys): a child's ``/proc/PID/environ`` is readable by every process of
its user, and each tool gets its password through a 0600 option file anyway.

``ToolProcess`` runs one tool in its own process group: stdout is read as chunks from an
enlarged pipe (or goes where the caller says: another tool's stdin, /dev/null), stdin is
/dev/null or a pipe the caller writes to. Lines of stderr (a backup tool's log) or of stdout
(the mysql client's answers) can be handed to a callback as they come; stderr lines are kept in
the file too. ``reap()`` (also on leaving the ``with`` block) kills the whole group, resuming it
first in case it was paused, so no tool outlives its job. ``run_tool`` runs one to completion.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import IO

from backupd.errors import BackupdError

log = logging.getLogger(__name__)

READ_CHUNK = 1024 * 1024
PIPE_SIZE = 1024 * 1024
# What a child tool sees of backupd's environment (``LC_*`` too); nothing else is passed on.
CHILD_ENVIRONMENT = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM"})
TAIL_BYTES = 4096
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

Redirect = int | IO[bytes] | None  # subprocess.PIPE, subprocess.DEVNULL, or an open file


def child_environment() -> dict[str, str]:
    """The environment every child tool runs with: ``CHILD_ENVIRONMENT`` and ``LC_*`` only."""
    return {k: v for k, v in os.environ.items() if k in CHILD_ENVIRONMENT or k.startswith("LC_")}


def enlarge_pipe(fd: int) -> None:
    """Grow a pipe to ``PIPE_SIZE`` (fewer wake-ups of a fast producer); a smaller pipe only
    costs speed, so failure is ignored."""
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass


def file_tail(handle: IO[bytes], limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a (stderr) file, as stripped text."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - limit))
    return handle.read().decode("utf-8", "replace").strip()


_ERROR_WORDS = re.compile(r"\b(error|missing required privilege|denied|failed|fatal)\b", re.IGNORECASE)


def last_line(text: str) -> str:
    """The one-line message of a failed tool's error: the last line that says error, failed,
    denied, fatal or "missing required privilege" (mariabackup prints the account's grants after
    that), else its last line, or "no message"."""
    lines = text.strip().splitlines()
    return next((line for line in reversed(lines) if _ERROR_WORDS.search(line)), lines[-1] if lines else "no message")


def failure(error: type[BackupdError], what: str, code: int, output: str) -> BackupdError:
    """The error for a tool that exited ``code``: its last line as the message, its tail as the detail."""
    return error(f"{what} failed with exit status {code}: {last_line(output)}", detail=output[-TAIL_BYTES:])


class ToolProcess:
    """One run of a client tool (see the module docstring). Build it, then ``start()`` it."""

    def __init__(self, label: str, name: str, args: Sequence[str], *, error: type[BackupdError],
                 stdin: Redirect = subprocess.DEVNULL, stdout: Redirect = subprocess.PIPE,
                 work_dir: str | None = None, on_stderr_line: Callable[[str], None] | None = None,
                 on_stdout_line: Callable[[bytes], None] | None = None, die_with_parent: bool = False,
                 missing_hint: str | None = None, redact: Callable[[str], str] | None = None):
        """``redact``: applied to what the tool said before it is quoted anywhere (the mysql
        client echoes a failing statement, row data included)."""
        self.label = label
        self.name = name
        self.args = list(args)
        self.error = error
        self._stdin = stdin
        self._stdout = stdout
        self._work_dir = work_dir
        self._on_stderr_line = on_stderr_line
        self._on_stdout_line = on_stdout_line
        self._die_with_parent = die_with_parent
        self._missing_hint = missing_hint
        self._redact = redact
        self._readers: list[threading.Thread] = []
        self._stderr_file: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> ToolProcess:
        """Launch the tool; raise ``error`` naming the binary if it is not installed."""
        if shutil.which(self.args[0]) is None:
            raise self.error(f"{self.label}: {self.name} binary '{self.args[0]}' not found",
                             hint=self._missing_hint)
        argv = self.args
        setpriv = shutil.which("setpriv") if self._die_with_parent else None
        if setpriv:  # killed with us: a tool we paused must never outlive us holding commits blocked
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        self._stderr_file = tempfile.TemporaryFile(dir=self._work_dir)
        self._process = subprocess.Popen(
            argv, stdin=self._stdin, stdout=self._stdout,
            stderr=subprocess.PIPE if self._on_stderr_line else self._stderr_file,
            bufsize=0, start_new_session=True,  # its own group: reap() kills wrappers' children too
            env=child_environment())
        if self._stdout == subprocess.PIPE:
            enlarge_pipe(self.stdout.fileno())
            if self._on_stdout_line is not None:
                self._read_lines(self.stdout, self._stdout_lines)
        if self._on_stderr_line is not None:
            assert self._process.stderr is not None
            self._read_lines(self._process.stderr, self._stderr_lines)
        return self

    # ------------------------------------------------------------------ streams
    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self._process is not None, "start() the tool first"
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdout(self) -> IO[bytes]:
        assert self.process.stdout is not None, "the tool's stdout is not a pipe"
        return self.process.stdout

    @property
    def stdin(self) -> IO[bytes]:
        assert self.process.stdin is not None, "the tool's stdin is not a pipe"
        return self.process.stdin

    def read_chunk(self) -> bytes:
        """The next chunk of stdout (empty at its end)."""
        return os.read(self.stdout.fileno(), READ_CHUNK)

    def chunks(self) -> Iterator[bytes]:
        """The rest of stdout, in chunks; at its end the exit status is checked (``check``)."""
        while chunk := self.read_chunk():
            yield chunk
        self.check()

    def write(self, data: bytes) -> None:
        """Write to the tool's stdin; if it has gone, raise its failure (its own words)."""
        try:
            self.stdin.write(data)
        except BrokenPipeError:
            self.wait()
            raise self.failure() from None

    def close_stdin(self) -> None:
        try:
            self.stdin.close()
        except BrokenPipeError:
            pass

    def _read_lines(self, stream: IO[bytes], handle: Callable[[bytes], None]) -> None:
        def run() -> None:
            for raw in stream:
                handle(raw)

        thread = threading.Thread(target=run, name=f"{self.name}-output", daemon=True)
        thread.start()
        self._readers.append(thread)

    def _stderr_lines(self, raw: bytes) -> None:
        assert self._stderr_file is not None and self._on_stderr_line is not None
        self._stderr_file.write(raw)
        try:
            self._on_stderr_line(raw.decode("utf-8", "replace"))
        except Exception:  # never let a watcher stop the log from draining
            log.exception("%s: watching %s's log failed", self.label, self.name)

    def _stdout_lines(self, raw: bytes) -> None:
        assert self._on_stdout_line is not None
        self._on_stdout_line(raw)

    # ------------------------------------------------------------------ outcome
    def wait(self) -> int:
        """Wait for the tool (and for its output to be read); its exit status."""
        code = self.process.wait()
        for reader in self._readers:
            reader.join()
        return code

    def stderr_tail(self) -> str:
        if self._stderr_file is None:
            return ""
        tail = file_tail(self._stderr_file)
        return self._redact(tail) if self._redact is not None else tail

    def failure(self) -> BackupdError:
        """The error for this tool's exit status, quoting what it said."""
        return failure(self.error, f"{self.label}: {self.name}", self.process.returncode, self.stderr_tail())

    def check(self, *, completed: str | None = None) -> None:
        """Wait; raise ``error`` unless the tool exited 0 (and, if given, its log says ``completed``)."""
        if self.wait() != 0:
            raise self.failure()
        if completed is not None and completed not in self.stderr_tail():
            raise self.error(f"{self.label}: {self.name} exited 0 without '{completed}'",
                             detail=self.stderr_tail())

    def reap(self) -> None:
        """Make sure the tool (and its process group) is gone, and release its files."""
        process = self._process
        if process is not None:
            if process.returncode is None:  # not reaped yet, so its group id cannot have been reused
                for sig in (signal.SIGCONT, signal.SIGKILL):  # a paused tool must not stay stopped
                    try:
                        os.killpg(process.pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
            process.wait()
            for reader in self._readers:
                reader.join(timeout=10)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    try:
                        stream.close()
                    except BrokenPipeError:
                        pass
        if self._stderr_file is not None:
            self._stderr_file.close()

    def __enter__(self) -> ToolProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.reap()


def run_tool(label: str, name: str, args: Sequence[str], *, error: type[BackupdError],
             completed: str | None = None, timeout: float | None = None) -> str:
    """Run a tool to completion (stdout and stderr to one file); return its output.

    Raises ``error`` if the binary is missing, the tool exits non-zero, does not finish within
    ``timeout`` seconds (it is killed), or its output lacks ``completed``.
    """
    what = f"{label}: {name}"
    with tempfile.TemporaryFile() as output:
        try:
            done = subprocess.run(list(args), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False, env=child_environment())
        except FileNotFoundError:
            raise error(f"{what}: '{args[0]}' not found") from None
        except subprocess.TimeoutExpired:
            raise error(f"{what} did not return within {timeout:.0f}s: {' '.join(args)}") from None
        text = file_tail(output, 64 * 1024)
    if done.returncode != 0:
        raise failure(error, what, done.returncode, text)
    if completed is not None and completed not in text:
        raise error(f"{what} exited 0 without '{completed}'", detail=text[-TAIL_BYTES:])
    return text


@functools.lru_cache(maxsize=16)
def version_output(binary: str, what: str, *, error: type[BackupdError], hint: str | None = None) -> str:
    """What ``binary --version`` prints (stdout and stderr). Raises ``error`` naming the binary
    if it is not installed or does not answer within 30 s. Cached: a tool's version does not
    change while backupd runs."""
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False,
                              env=child_environment())
    except (FileNotFoundError, PermissionError):
        raise error(f"{what} binary '{binary}' not found", hint=hint) from None
    except subprocess.TimeoutExpired:
        raise error(f"{what} binary '{binary}' did not answer --version within 30s") from None
    return done.stdout + done.stderr
