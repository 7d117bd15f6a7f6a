"""The retention policy, on lists of manifests (pure)."""

from datetime import timedelta

from backupd.policy.retention import RetentionPolicy, apply_retention
from tests.unit.manifests import NOW, full, incremental

H = timedelta(hours=1)
D = timedelta(days=1)


def kept(verdicts):
    return {v.manifest.id for v in verdicts if v.keep}


def fleet(days: int, shard: str = "7"):
    """Fulls every 8 h and hourly incrementals (24 h windows) for ``days`` days from NOW."""
    backups, base = [], None
    for hour in range(days * 24):
        if hour % 8 == 0:
            base = full(hour * H, shard)
            backups.append(base)
        else:
            backups.append(incremental(hour * H, base))
    return backups


def test_fulls_within_full_days_and_their_incrementals_are_kept():
    backups = fleet(10)
    now = NOW + 10 * D
    verdicts = apply_retention(backups, now, RetentionPolicy(full_days=7))
    fulls = [m for m in backups if m.kind == "full"]
    keep = kept(verdicts)
    assert {f.id for f in fulls if f.snapshot_at > now - 7 * D} == {f.id for f in fulls if f.id in keep}
    # an incremental is kept exactly while a kept full it applies to exists
    oldest_kept = min(f.snapshot_at for f in fulls if f.id in keep)
    for m in backups:
        if m.kind == "incremental":
            assert (m.id in keep) == (m.snapshot_at >= oldest_kept)
    reasons = {v.manifest.id: v.reasons for v in verdicts}
    assert any("older than 7 days" in r for f in fulls if f.id not in keep for r in reasons[f.id])


def test_newest_chain_survives_when_backups_stopped_long_ago():
    backups = fleet(2)
    verdicts = apply_retention(backups, NOW + 30 * D, RetentionPolicy(full_days=7))
    newest_full = max((m for m in backups if m.kind == "full"), key=lambda m: m.snapshot_at)
    newest = max(backups, key=lambda m: m.snapshot_at)
    assert newest_full.id in kept(verdicts) and newest.id in kept(verdicts)
    assert "newest full" in next(v.reasons for v in verdicts if v.manifest is newest_full)
    assert len(kept(verdicts)) == 8  # the newest full and the 7 incrementals on it


def test_keep_daily_and_weekly_keep_the_newest_full_of_each_period():
    backups = fleet(21)
    now = NOW + 21 * D
    verdicts = apply_retention(backups, now, RetentionPolicy(full_days=1, keep_daily=5, keep_weekly=3))
    keep = kept(verdicts)
    fulls = [m for m in backups if m.kind == "full"]
    last_of_day = {}
    for f in fulls:
        last_of_day[f.snapshot_at.date()] = f
    for day in sorted(last_of_day)[-5:]:
        assert last_of_day[day].id in keep
    last_of_week = {}
    for f in fulls:
        last_of_week[f.snapshot_at.isocalendar()[:2]] = f
    for week in sorted(last_of_week)[-3:]:
        assert last_of_week[week].id in keep
    kept_fulls = [f for f in fulls if f.id in keep]
    # within full_days (1 day: 3 fulls) + 5 daily (overlapping today's) + 3 weekly (overlapping)
    assert 6 <= len(kept_fulls) <= 9
    assert fulls[0].id not in keep


def test_shards_are_judged_separately_and_the_policy_is_deterministic():
    backups = fleet(9, "1") + fleet(3, "2")
    now = NOW + 9 * D
    first = apply_retention(backups, now, RetentionPolicy())
    assert first == apply_retention(list(reversed(backups)), now, RetentionPolicy())
    for v in first:
        if v.manifest.shard == "2" and v.manifest.kind == "full":
            assert v.keep == (v.manifest.snapshot_at > now - 7 * D)
    newest_2 = max((m for m in backups if m.shard == "2" and m.kind == "full"), key=lambda m: m.snapshot_at)
    assert newest_2.id in kept(first)
    assert not any(v.keep for v in first if v.manifest.shard == "1" and v.manifest.snapshot_at < now - 8 * D)
