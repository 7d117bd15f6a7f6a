"""Progress of long operations (backup, restore, deep audit, sync): bytes, rate and ETA.

On a terminal (stderr is a TTY) a one-line bar is redrawn every ``TTY_EVERY`` seconds and erased
when the operation ends; otherwise (cron, systemd, a pipe) a log line is written every
``LOG_EVERY`` seconds, so long runs show they are alive in the journal. A heartbeat thread keeps
redrawing while no bytes arrive, and once none have for ``STALL_AFTER`` seconds the line says so
(``no data for 45s``): a stalled transfer never looks like a frozen one. Nothing is shown when
logging is quieter than INFO (``-q``). ``total`` may be an estimate (a backup's previous size) or
unknown (no percentage or ETA then). Use it as a context manager, or call :meth:`finish`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from backupd.units import format_duration, format_size

log = logging.getLogger(__name__)

TTY_EVERY = 0.2
LOG_EVERY = 30.0
STALL_AFTER = 10.0
BAR_WIDTH = 24


class Progress:
    """Thread-safe: :meth:`advance` may be called from any thread."""

    def __init__(self, what: str, total: int | None = None, *, estimate: bool = False,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 log_every: float = LOG_EVERY, heartbeat: bool = True, stall_after: float = STALL_AFTER):
        self.what = what
        self.total = total if total and total > 0 else None
        self.estimate = estimate
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.stall_after = stall_after
        self.done = 0
        self.started = clock()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = logging.getLogger().isEnabledFor(logging.INFO)
        self.every = TTY_EVERY if self.tty else log_every
        self._next = self.started + self.every
        self._last_data = self.started
        self._drawn = False
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._beat: threading.Thread | None = None
        if self.enabled and heartbeat:
            self._beat = threading.Thread(target=self._heartbeat, name="progress", daemon=True)
            self._beat.start()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()

    def advance(self, n: int) -> None:
        now = self.clock()
        with self._lock:
            self.done += n
            if n:
                self._last_data = now
            self._maybe_show(now)

    def _heartbeat(self) -> None:
        while not self._stopped.wait(self.every):
            with self._lock:
                if not self._stopped.is_set():
                    self._maybe_show(self.clock())

    def _maybe_show(self, now: float) -> None:
        if self.enabled and now >= self._next:
            self._next = now + self.every
            self._show(now)

    def line(self, now: float | None = None) -> str:
        """``what: 1.2 GiB of 2.6 GiB (45%), 120.0 MiB/s, ETA 12.00s``."""
        elapsed = max((now if now is not None else self.clock()) - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.what}: {format_size(self.done)}"
        if self.total:
            share = min(self.done / self.total, 1.0)
            text += f" of {'~' if self.estimate else ''}{format_size(self.total)} ({share:.0%})"
        text += f", {format_size(rate)}/s"
        if self.total and rate > 0:
            remaining = max(self.total - self.done, 0) / rate
            text += f", ETA {'~' if self.estimate else ''}{format_duration(remaining)}"
        idle = (now if now is not None else self.clock()) - self._last_data
        if idle >= self.stall_after and not (self.total and self.done >= self.total):
            text += f", no data for {format_duration(idle)}"
        return text

    def bar_line(self, now: float) -> str:
        """The line drawn on a terminal: a bar (when the total is known) and ``line``."""
        bar = ""
        if self.total:
            filled = int(BAR_WIDTH * min(self.done / self.total, 1.0))
            bar = "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "] "
        return bar + self.line(now)

    def _show(self, now: float) -> None:
        if not self.tty:
            log.info("%s", self.line(now))
            return
        board = _board
        if board is not None:
            board.show(self, self.bar_line(now))
            return
        self.stream.write(f"\r\033[K{self.bar_line(now)}")
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        """Stop the heartbeat and erase the bar (the operation's own summary follows). Idempotent."""
        self._stopped.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join()
        with self._lock:
            if self._drawn:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self._drawn = False
        board = _board
        if board is not None:
            board.remove(self)


class ProgressBoard:
    """Several operations' progress at once (a fleet restore's shards): on a terminal, one line per
    running operation, redrawn together in place; elsewhere (a log) each operation writes its own
    periodic lines, as it does alone. Use ``showing_board()``."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self._lines: dict[int, str] = {}
        self._drawn = 0
        self._lock = threading.Lock()

    def show(self, progress: Progress, line: str) -> None:
        with self._lock:
            self._lines[id(progress)] = line
            self._redraw()

    def remove(self, progress: Progress) -> None:
        with self._lock:
            if self._lines.pop(id(progress), None) is not None:
                self._redraw()

    def _redraw(self) -> None:
        up = f"\033[{self._drawn}F" if self._drawn else "\r"
        lines = list(self._lines.values())
        text = "".join(f"\033[K{line}\n" for line in lines)
        extra = self._drawn - len(lines)  # lines of finished operations: cleared
        text += "\033[K\n" * extra + (f"\033[{extra}F" if extra > 0 else "")
        self.stream.write(up + text)
        self.stream.flush()
        self._drawn = len(lines)


_board: ProgressBoard | None = None


@contextmanager
def showing_board(stream: TextIO | None = None) -> Iterator[ProgressBoard]:
    """Draw every progress line started inside the block on one board (see ``ProgressBoard``)."""
    global _board
    board = ProgressBoard(stream if stream is not None else sys.stderr)
    _board = board
    try:
        yield board
    finally:
        _board = None
