"""The one runner of child tools, on small shell commands (no server needed)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from backupd.errors import RestoreFailed, SourceError
from backupd.mysql.tools import ToolProcess, last_line, run_tool
from tests.servers._process import group_members


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def test_a_failed_tool_is_quoted_by_its_last_line_and_tail():
    with ToolProcess("shard 7", "mysqldump", sh("echo out; echo first >&2; echo 'Got error: 1045' >&2; exit 2"),
                     error=SourceError).start() as tool:
        with pytest.raises(SourceError) as error:
            list(tool.chunks())
    assert error.value.message == "shard 7: mysqldump failed with exit status 2: Got error: 1045"
    assert error.value.detail is not None and "first" in error.value.detail


def test_output_streams_and_success_is_checked_at_its_end():
    with ToolProcess("t", "cat", sh("printf 'a%.0s' $(seq 1 3000)"), error=SourceError).start() as tool:
        assert b"".join(tool.chunks()) == b"a" * 3000


def test_a_tool_must_say_it_completed_when_asked_to():
    with ToolProcess("t", "mariabackup", sh("echo copying >&2"), error=SourceError).start() as tool:
        with pytest.raises(SourceError, match="exited 0 without 'completed OK!'"):
            tool.check(completed="completed OK!")


def test_log_lines_reach_the_watcher_and_are_kept():
    seen: list[str] = []
    with ToolProcess("t", "tool", sh("echo one >&2; echo two >&2; exit 1"), error=SourceError,
                     on_stderr_line=seen.append).start() as tool:
        with pytest.raises(SourceError, match="exit status 1: two"):
            tool.check()
    assert seen == ["one\n", "two\n"]


def test_a_missing_binary_is_named_with_a_hint():
    tool = ToolProcess("target dr", "mysql client", ["/nonexistent/mysql"], error=RestoreFailed,
                       missing_hint="install mariadb-client")
    with pytest.raises(RestoreFailed) as error:
        tool.start()
    assert error.value.message == "target dr: mysql client binary '/nonexistent/mysql' not found"
    assert error.value.hint == "install mariadb-client"
    tool.reap()  # safe on a tool that never started


def test_stdin_pipes_and_a_tool_that_died_reports_itself():
    with ToolProcess("t", "mysql client", sh("head -c 1 >/dev/null; echo 'ERROR 1064' >&2; exit 1"),
                     error=RestoreFailed, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL).start() as tool:
        with pytest.raises(RestoreFailed, match="exit status 1: ERROR 1064"):
            for _ in range(200):
                tool.write(b"x" * 65536)  # the pipe breaks once the client is gone
            tool.close_stdin()
            tool.check()


def test_reap_kills_the_whole_process_group_even_when_paused():
    tool = ToolProcess("t", "tool", sh("sleep 60 & sleep 60"), error=SourceError).start()
    time.sleep(0.2)
    assert len(group_members(tool.pid)) == 3  # sh and its two sleeps
    os.kill(tool.pid, signal.SIGSTOP)  # a paused tool must not survive its job either
    tool.reap()
    deadline = time.monotonic() + 5
    while group_members(tool.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(tool.pid) == []


def test_run_tool_quotes_failures_and_bounds_time():
    assert run_tool("t", "echo", ["sh", "-c", "echo completed OK!"], error=RestoreFailed,
                    completed="completed OK!").strip() == "completed OK!"
    with pytest.raises(RestoreFailed, match=r"^t: prepare failed with exit status 4: broken$"):
        run_tool("t", "prepare", sh("echo fine; echo broken; exit 4"), error=RestoreFailed)
    with pytest.raises(RestoreFailed, match="did not return within 1s"):
        run_tool("t", "stop command", ["sleep", "5"], error=RestoreFailed, timeout=1)
    assert last_line("") == "no message" and last_line("a\nb\n") == "b"
    mariabackup = ("[00] 2026-12-06 missing required privilege RELOAD on *.*\n[00] Current privileges:\n"
                   "GRANT USAGE ON *.* TO `backupd`@`%`")
    assert last_line(mariabackup) == "[00] 2026-12-06 missing required privilege RELOAD on *.*"
