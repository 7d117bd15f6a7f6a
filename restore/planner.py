"""Which backups restore shard S to time T (pure: no I/O, tested on lists of manifests)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from backupd.errors import NoBackupFound
from backupd.model import Manifest


@dataclass(frozen=True)
class RestorePlan:
    """The backups to apply, in order (a full first)."""

    shard: str
    steps: list[Manifest]

    @property
    def final(self) -> Manifest:
        return self.steps[-1]


def plan_restore(backups: list[Manifest], shard: str, *, at: datetime | None = None,
                 backup_id: str | None = None) -> RestorePlan:
    """Choose the backups that restore ``shard``.

    With ``backup_id``: exactly that backup. Otherwise the newest full backup whose snapshot is
    at or before ``at`` (default: the newest). Raises NoBackupFound saying what is missing.
    """
    candidates = sorted((m for m in backups if m.shard == shard), key=lambda m: m.snapshot_at)
    if backup_id is not None:
        for manifest in candidates:
            if manifest.id == backup_id:
                if manifest.kind != "full":
                    raise NoBackupFound(f"shard {shard}: backup {backup_id} is {manifest.kind}; "
                                        "only full backups can be restored by this version")
                return RestorePlan(shard, [manifest])
        raise NoBackupFound(f"shard {shard}: no committed backup with id {backup_id}")
    fulls = [m for m in candidates if m.kind == "full"]
    if not fulls:
        raise NoBackupFound(f"shard {shard}: no committed full backup in the target's stores")
    eligible = [m for m in fulls if at is None or m.snapshot_at <= at]
    if not eligible:
        raise NoBackupFound(f"shard {shard}: no full backup at or before {at.isoformat()} "
                            f"(the oldest, {fulls[0].id}, is from {fulls[0].snapshot_at.isoformat()})")
    return RestorePlan(shard, [eligible[-1]])
