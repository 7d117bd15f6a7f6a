"""Which backups to keep (pure: a list of manifests and a clock in, a verdict per backup out).

Policy (``[retention]``):

* every full whose snapshot is younger than ``full_days`` is kept;
* ``keep_daily = N``: for each of the N most recent days (UTC) that have a full, its newest
  full is kept; ``keep_weekly = N``: the same for ISO weeks (restic's ``--keep-daily`` and
  ``--keep-weekly``);
* the newest full is always kept, so every shard keeps its newest restorable chain whatever the
  policy and however long backups have been failing;
* an incremental lives as long as a kept full it applies to (``backupd.policy.chain``): it is kept if
  it applies to at least one kept full, deleted otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from backupd.policy.chain import applies_to
from backupd.repo.model import Manifest


@dataclass(frozen=True)
class RetentionPolicy:
    full_days: float = 7
    keep_daily: int = 0
    keep_weekly: int = 0


@dataclass(frozen=True)
class Verdict:
    manifest: Manifest
    keep: bool
    reasons: list[str] = field(default_factory=list)


def apply_retention(backups: list[Manifest], now: datetime, policy: RetentionPolicy) -> list[Verdict]:
    """A verdict for every backup of every shard in ``backups``, oldest first per shard."""
    verdicts: list[Verdict] = []
    for shard in sorted({m.shard for m in backups}):
        verdicts += _shard_verdicts([m for m in backups if m.shard == shard], now, policy)
    return verdicts


def _shard_verdicts(backups: list[Manifest], now: datetime, policy: RetentionPolicy) -> list[Verdict]:
    ordered = sorted(backups, key=lambda m: (m.snapshot_at, m.id))
    fulls = [m for m in ordered if m.kind == "full"]
    reasons: dict[str, list[str]] = {m.id: [] for m in ordered}
    horizon = now - timedelta(days=policy.full_days)
    for full in fulls:
        if full.snapshot_at > horizon:
            reasons[full.id].append(f"within full_days ({policy.full_days:g} days)")
    _keep_newest_per_period(fulls, policy.keep_daily, lambda m: m.snapshot_at.date().isoformat(),
                            "keep_daily", reasons)
    _keep_newest_per_period(fulls, policy.keep_weekly,
                            _iso_week, "keep_weekly", reasons)
    if fulls:
        reasons[fulls[-1].id].append("newest full")
    kept_fulls = [f for f in fulls if reasons[f.id]]
    for incremental in (m for m in ordered if m.kind == "incremental"):
        bases = [f.id for f in kept_fulls if applies_to(incremental, f)]
        if bases:
            reasons[incremental.id].append(f"applies to kept full {bases[-1]}")
    verdicts = []
    for manifest in ordered:
        why = reasons[manifest.id]
        if not why:
            why = ([f"full older than {policy.full_days:g} days and not kept by keep_daily/keep_weekly"]
                   if manifest.kind == "full" else ["applies to no kept full"])
            verdicts.append(Verdict(manifest, False, why))
        else:
            verdicts.append(Verdict(manifest, True, why))
    return verdicts


def _iso_week(manifest: Manifest) -> str:
    year, week, _ = manifest.snapshot_at.isocalendar()
    return f"{year}-W{week:02d}"


def _keep_newest_per_period(fulls: list[Manifest], count: int, period: Callable[[Manifest], str], rule: str,
                            reasons: dict[str, list[str]]) -> None:
    if count <= 0:
        return
    newest: dict[str, Manifest] = {}
    for full in fulls:  # oldest first: the last one seen in a period is its newest
        newest[period(full)] = full
    for key in sorted(newest, reverse=True)[:count]:
        reasons[newest[key].id].append(f"{rule} {key}")
