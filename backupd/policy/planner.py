"""Which backups restore shard S to time T (pure: no I/O, tested on lists of manifests).

A plan is a full backup, optionally followed by one incremental that applies to it (see
``backupd.policy.chain``): a restore needs at most two backups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from backupd.errors import NoBackupFound
from backupd.policy.chain import base_for, why_not_applicable
from backupd.repo.model import Manifest


@dataclass(frozen=True)
class RestorePlan:
    """The backups to apply, in order (a full first), and notes on what was passed over."""

    shard: str
    steps: list[Manifest]
    notes: list[str] = field(default_factory=list)

    @property
    def final(self) -> Manifest:
        """The backup whose snapshot the restored target will equal."""
        return self.steps[-1]

    @property
    def full(self) -> Manifest:
        return self.steps[0]


def plan_restore(backups: list[Manifest], shard: str, *, at: datetime | None = None,
                 backup_id: str | None = None) -> RestorePlan:
    """Choose the backups that restore ``shard``.

    With ``backup_id``: that backup (an incremental is preceded by the newest full it applies
    to). Otherwise the newest restorable point at or before ``at`` (default: now): the newest
    full whose snapshot is at or before ``at``, plus the newest incremental at or before ``at``
    that applies to it (for a shard with logical and physical backups, the newer of the two
    chains). Raises NoBackupFound saying exactly what is missing.
    """
    candidates = sorted((m for m in backups if m.shard == shard), key=lambda m: (m.snapshot_at, m.id))
    fulls = [m for m in candidates if m.kind == "full"]
    if backup_id is not None:
        return _plan_for_id(candidates, fulls, shard, backup_id)
    if not fulls:
        raise NoBackupFound(f"shard {shard}: no committed full backup in the target's stores")
    eligible = [m for m in fulls if at is None or m.snapshot_at <= at]
    if not eligible:
        assert at is not None
        raise NoBackupFound(f"shard {shard}: no full backup at or before {at.isoformat()} "
                            f"(the oldest, {fulls[0].id}, is from {fulls[0].snapshot_at.isoformat()})")
    # A shard that changed method has logical and physical chains: the newest point of either wins.
    plans = [_plan_on(full, candidates, shard, at) for full in
             {m.is_physical: m for m in eligible}.values()]
    return max(plans, key=lambda plan: (plan.final.snapshot_at, plan.final.id))


def _plan_on(full: Manifest, candidates: list[Manifest], shard: str, at: datetime | None) -> RestorePlan:
    """``full`` plus the newest incremental at or before ``at`` that applies to it."""
    later = [m for m in candidates if m.kind == "incremental" and m.snapshot_at >= full.snapshot_at
             and (at is None or m.snapshot_at <= at)]
    notes: list[str] = []
    for incremental in reversed(later):
        reason = why_not_applicable(incremental, full)
        if reason is None:
            return RestorePlan(shard, [full, incremental], notes)
        if incremental.is_physical == full.is_physical:
            notes.append(f"passing over incremental {incremental.id}: {reason}")
    return RestorePlan(shard, [full], notes)


def _plan_for_id(candidates: list[Manifest], fulls: list[Manifest], shard: str,
                 backup_id: str) -> RestorePlan:
    chosen = next((m for m in candidates if m.id == backup_id), None)
    if chosen is None:
        raise NoBackupFound(f"shard {shard}: no committed backup with id {backup_id}")
    if chosen.kind == "full":
        return RestorePlan(shard, [chosen])
    base = base_for(chosen, fulls)
    if base is None:
        parent = next((m for m in fulls if m.id == chosen.parent_id), None)
        why = (f"its base {chosen.parent_id} is not in the target's stores" if parent is None
               else f"its base {chosen.parent_id}: {why_not_applicable(chosen, parent)}")
        window = chosen.window
        if window is None:  # physical: only its own base will do
            raise NoBackupFound(f"shard {shard}: physical incremental {backup_id} applies only to "
                                f"full {chosen.parent_id}; {why}")
        raise NoBackupFound(
            f"shard {shard}: incremental {backup_id} needs a full backup taken between "
            f"{window.since.isoformat()} and {chosen.snapshot_at.isoformat()} that it applies "
            f"to; none found ({why})")
    return RestorePlan(shard, [base, chosen])
