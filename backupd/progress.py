"""Progress of long operations (backup, restore, deep audit, sync): bytes, rate and ETA.

On a terminal (stderr is a TTY) a one-line bar is redrawn at most every ``TTY_EVERY`` seconds
and erased when the operation ends; otherwise (cron, systemd, a pipe) a log line is written every
``LOG_EVERY`` seconds, so long runs show they are alive in the journal. Nothing is shown when
logging is quieter than INFO (``-q``). ``total`` may be an estimate (a backup's previous size) or
unknown (no percentage or ETA then).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, TextIO

from backupd.units import format_duration, format_size

log = logging.getLogger(__name__)

TTY_EVERY = 0.2
LOG_EVERY = 30.0
BAR_WIDTH = 24


class Progress:
    def __init__(self, what: str, total: int | None = None, *, estimate: bool = False,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 log_every: float = LOG_EVERY):
        self.what = what
        self.total = total if total and total > 0 else None
        self.estimate = estimate
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.done = 0
        self.started = clock()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = logging.getLogger().isEnabledFor(logging.INFO)
        self.every = TTY_EVERY if self.tty else log_every
        self._next = self.started + self.every
        self._drawn = False

    def advance(self, n: int) -> None:
        self.done += n
        now = self.clock()
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
        return text

    def _show(self, now: float) -> None:
        if not self.tty:
            log.info("%s", self.line(now))
            return
        bar = ""
        if self.total:
            filled = int(BAR_WIDTH * min(self.done / self.total, 1.0))
            bar = "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "] "
        self.stream.write(f"\r\033[K{bar}{self.line(now)}")
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        """Erase the bar (the operation's own summary follows)."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False
