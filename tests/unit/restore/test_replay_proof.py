"""The replay's proof and the GTID arithmetic a point-in-time restore relies on."""

from __future__ import annotations

from backupd.mysql.binlog_events import gtid_position
from restore.replay import holds_gtid, unproven


def test_the_proof_fails_when_the_target_is_not_at_the_archives_last_gtid():
    assert unproven("0-1-57", {"0": "0-1-57"}) == []
    assert unproven("0-1-57,1-3-9", {"0": "0-1-57", "1": "1-3-9"}) == []
    assert unproven("0-1-56", {"0": "0-1-57"}) == [
        "domain 0: the target is at 0-1-56, the archive's last at the point is 0-1-57"]
    assert unproven("0-2-57", {"0": "0-1-57"})  # same number, another server: not the same transaction
    assert unproven("", {"0": "0-1-1"}) == ["domain 0: the target is at nothing, the archive's last at the point is 0-1-1"]


def test_gtid_positions():
    assert holds_gtid("0-1-57,1-1-3", "0-1-57") and holds_gtid("0-1-58", "0-1-57")
    assert not holds_gtid("0-1-56", "0-1-57") and not holds_gtid("1-1-99", "0-1-57") and not holds_gtid(None, "0-1-1")
    assert gtid_position("0-1-5,1-1-2", ["0-1-9", "2-4-1"]) == "0-1-9,1-1-2,2-4-1"
    assert gtid_position(None, []) is None
