"""Progress lines and bars, with a fake clock and fake terminals."""

from __future__ import annotations

import io
import logging
import time

from backupd.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bar_on_a_terminal_with_rate_and_eta(caplog):
    caplog.set_level(logging.INFO)
    clock, screen = Clock(), Terminal()
    progress = Progress("shard 7: full backup", 400 * 1024**2, stream=screen, clock=clock, heartbeat=False)
    clock.now += 1.0
    progress.advance(100 * 1024**2)
    assert "[######..................] shard 7: full backup: 100.0 MiB of 400.0 MiB (25%), " \
           "100.0 MiB/s, ETA 3.00s" in screen.getvalue()
    progress.finish()
    assert screen.getvalue().endswith("\r\x1b[K")


def test_log_lines_when_not_a_terminal(caplog):
    caplog.set_level(logging.INFO)
    clock = Clock()
    progress = Progress("sync", None, stream=io.StringIO(), clock=clock, log_every=30, heartbeat=False)
    for _ in range(10):
        clock.now += 10
        progress.advance(1024**2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and lines[0] == "sync: 3.0 MiB, 102.4 KiB/s"  # every 30 s, no ETA without a total


def test_estimates_are_marked_and_quiet_shows_nothing(caplog):
    caplog.set_level(logging.INFO)
    clock = Clock()
    progress = Progress("backup", 1000, estimate=True, stream=io.StringIO(), clock=clock, heartbeat=False)
    assert progress.line(clock.now + 1) == "backup: 0 B of ~1000 B (0%), 0 B/s"
    progress.done = 500
    assert progress.line(clock.now + 1).endswith("ETA ~1.00s")
    caplog.set_level(logging.WARNING)
    quiet = Progress("restore", 10, stream=Terminal(), clock=clock)
    clock.now += 5
    quiet.advance(5)
    assert not quiet._drawn and quiet._beat is None  # no heartbeat either


def test_a_stall_keeps_the_line_moving_and_says_so(caplog):
    """No bytes for a while: the heartbeat still writes, and the line names the stall."""
    caplog.set_level(logging.INFO)
    with Progress("shard 3: full backup", 1000, stream=io.StringIO(), log_every=0.05, stall_after=0.2) as progress:
        progress.advance(100)
        deadline = time.monotonic() + 10  # nothing arrives; a busy machine may be slow to say so
        while not (stalled := [r.getMessage() for r in caplog.records if "no data for" in r.getMessage()]):
            assert time.monotonic() < deadline, "no stall line"
            time.sleep(0.05)
        assert stalled[-1].startswith("shard 3: full backup: 100 B of 1000 B (10%)")
    count = len(caplog.records)
    time.sleep(0.2)
    assert len(caplog.records) == count  # finished: the heartbeat has stopped


def test_no_stall_is_claimed_once_everything_arrived():
    progress = Progress("restore", 10, stream=io.StringIO(), clock=Clock(), heartbeat=False, stall_after=1)
    progress.advance(10)
    assert "no data" not in progress.line(progress.started + 60)
    progress.done = 5
    assert progress.line(progress.started + 60).endswith("no data for 1m00s")


def test_a_board_shows_each_running_operation_on_its_own_line(caplog):
    """A fleet restore: two shards' progress on one terminal, redrawn in place, a finished one
    cleared; off a terminal each would log its own lines, as alone."""
    from backupd.progress import showing_board

    caplog.set_level(logging.INFO)
    clock, screen = Clock(), Terminal()
    with showing_board(screen):
        one = Progress("shard 1: applying", 100, stream=screen, clock=clock, heartbeat=False)
        two = Progress("shard 2: applying", 100, stream=screen, clock=clock, heartbeat=False)
        clock.now += 1.0
        one.advance(50)
        two.advance(25)
        drawn = screen.getvalue()
        assert "shard 1: applying: 50 B of 100 B (50%)" in drawn and "shard 2: applying: 25 B of 100 B (25%)" in drawn
        assert drawn.count("\n") == 3 and "\x1b[1F" in drawn  # one line each; the redraw went back up
        one.finish()
        clock.now += 1.0
        two.advance(25)
        redrawn = screen.getvalue()[len(drawn):]
        assert "shard 1" not in redrawn and "shard 2: applying: 50 B of 100 B (50%)" in redrawn
        two.finish()
