from datetime import timedelta

import pytest

from backupd.errors import NoBackupFound
from backupd.policy.planner import plan_restore
from tests.unit.manifests import NOW, full, incremental, make_manifest


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


H = timedelta(hours=1)


def test_full_plus_newest_incremental_that_applies():
    f0, f8 = full(0 * H), full(8 * H)
    i9, i10 = incremental(9 * H, f8), incremental(10 * H, f8)
    backups = [f0, f8, i9, i10, incremental(5 * H, f0)]
    plan = plan_restore(backups, "7")
    assert [m.id for m in plan.steps] == [f8.id, i10.id] and plan.final is i10
    assert [m.id for m in plan_restore(backups, "7", at=NOW + 9.5 * H).steps] == [f8.id, i9.id]
    # between a full and its first incremental: the full alone
    assert [m.id for m in plan_restore(backups, "7", at=NOW + 8.5 * H).steps] == [f8.id]
    # an incremental older than the newest full is not used with it
    assert [m.id for m in plan_restore(backups, "7", at=NOW + 6 * H).steps] == [f0.id, backups[4].id]


def test_incremental_whose_window_misses_the_full_is_passed_over_with_a_note():
    f0 = full(0 * H)
    short = incremental(30 * H, f0, window=2 * H)     # since 28h: after the full's snapshot
    reaching = incremental(20 * H, f0, window=24 * H)
    plan = plan_restore([f0, reaching, short], "7")
    assert [m.id for m in plan.steps] == [f0.id, reaching.id]
    assert len(plan.notes) == 1 and short.id in plan.notes[0] and "window" in plan.notes[0]


def test_incremental_is_not_applied_to_a_full_with_other_table_definitions():
    old = full(0 * H, tables=[("app", "bucket_0007", "s0"), ("app", "bucket_0015", "s1")])
    new = full(8 * H)
    inc = incremental(9 * H, new)
    # restoring the incremental by id picks the newest full it applies to
    assert plan_restore([old, new, inc], "7", backup_id=inc.id).steps == [new, inc]
    # with only the old full (bucket_0007 defined differently) no chain exists
    with pytest.raises(NoBackupFound, match=r"needs a full backup taken between .*its base .* is not "
                                            r"in the target's stores"):
        plan_restore([old, inc], "7", backup_id=inc.id)
    # a table the incremental copies whole does not need the same definition
    whole = incremental(9 * H, new, modes={"bucket_0007": "whole"})
    assert plan_restore([old, whole], "7", backup_id=whole.id).steps == [old, whole]


def test_incremental_by_id_says_what_is_missing():
    f0 = full(0 * H)
    inc = incremental(30 * H, f0, window=2 * H)
    with pytest.raises(NoBackupFound, match=rf"incremental {inc.id} needs a full backup taken between "
                                            rf".*its base {f0.id}: the window of"):
        plan_restore([f0, inc], "7", backup_id=inc.id)
