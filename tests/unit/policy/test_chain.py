"""Which full an incremental applies to (backupd.policy.chain), physical chains included."""

from __future__ import annotations

from datetime import timedelta

from backupd.policy.chain import applies_to, why_not_applicable
from backupd.policy.planner import plan_restore
from tests.unit.manifests import full, incremental, physical_full, physical_incremental


def test_physical_incremental_applies_only_to_its_own_full():
    first, second = physical_full(timedelta(0)), physical_full(timedelta(hours=8), to_lsn=2000)
    inc = physical_incremental(timedelta(hours=9), second)
    assert applies_to(inc, second)
    assert "applies only to its base full" in why_not_applicable(inc, first)
    assert "starts at LSN" in why_not_applicable(physical_incremental(timedelta(hours=9), second, 7), second)
    logical = full(timedelta(hours=8, minutes=30))
    assert "not both physical" in why_not_applicable(inc, logical)
    assert "not both physical" in why_not_applicable(incremental(timedelta(hours=9), logical), second)
    plan = plan_restore([first, second, logical, inc], "7")
    assert [m.id for m in plan.steps] == [second.id, inc.id]
