from datetime import timedelta

import pytest

from backupd.errors import NoBackupFound
from restore.planner import plan_restore
from tests.unit.test_layout_and_manifest import NOW, make_manifest


def backup(hours: int, kind: str = "full", shard: str = "7"):
    moment = NOW + timedelta(hours=hours)
    return make_manifest(id=f"{moment:%Y%m%dT%H%M%SZ}-{kind}-00000{hours % 10}", shard=shard,
                         kind=kind, started_at=moment, finished_at=moment, snapshot_at=moment)


def test_newest_full_by_default():
    backups = [backup(0), backup(8), backup(16), backup(3, shard="2")]
    assert plan_restore(backups, "7").final.id == backups[2].id
    assert plan_restore(backups, "2").final.id == backups[3].id


def test_newest_at_or_before_time():
    backups = [backup(0), backup(8), backup(16)]
    assert plan_restore(backups, "7", at=NOW + timedelta(hours=8)).final.id == backups[1].id
    assert plan_restore(backups, "7", at=NOW + timedelta(hours=15, minutes=59)).final.id == backups[1].id
    with pytest.raises(NoBackupFound, match=r"no full backup at or before .* \(the oldest"):
        plan_restore(backups, "7", at=NOW - timedelta(seconds=1))


def test_by_id_and_missing():
    backups = [backup(0), backup(8)]
    assert plan_restore(backups, "7", backup_id=backups[0].id).steps == [backups[0]]
    with pytest.raises(NoBackupFound, match="no committed backup with id nope"):
        plan_restore(backups, "7", backup_id="nope")
    with pytest.raises(NoBackupFound, match="shard 9: no committed full backup"):
        plan_restore(backups, "9")
