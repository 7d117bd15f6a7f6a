"""Progress on a real terminal (a pty) and in logs, for a real backup."""

from __future__ import annotations

import os
import pty
import subprocess

import pytest

from tests.integration.support import BIN, slow_mysqldump, write_config
from tests.testbed import seed_shard

pytestmark = pytest.mark.integration


def test_backup_draws_a_bar_on_a_terminal_and_erases_it(mariadb_factory, tmp_path):
    source = mariadb_factory("shard1")
    seed_shard(source, 0, 64, target_bytes=2 * 1024 * 1024)  # more than the wrapper's first 800 kB
    config = write_config(tmp_path / "backupd.toml", shards={"1": source},
                          settings={"mysqldump": str(slow_mysqldump(tmp_path, 2))})
    leader, follower = pty.openpty()
    process = subprocess.Popen([str(BIN / "backupd"), "--config", str(config), "backup", "--shard", "1"],
                               stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the pty closes when the backup exits
            break
        if not chunk:
            break
        screen += chunk
    assert process.wait(timeout=120) == 0
    text = screen.decode(errors="replace")
    assert "shard 1: full backup: " in text and "/s" in text  # bytes and rate while it ran
    assert "\r\x1b[K" in text  # redrawn in place, then erased
    assert "committed" in text
