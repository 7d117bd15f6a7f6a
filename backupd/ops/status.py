"""``backupd status``: one line of facts per shard, from the catalog and the schedule."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from backupd.config import Config
from backupd.policy.scheduler import NEVER, History, cadence_of, next_job
from backupd.repo.annotations import DEEP_AUDIT_ANNOTATION, DRILL_ANNOTATION, last_annotations, store_verdicts
from backupd.repo.binlogs import read_position
from backupd.repo.catalog import Catalog
from backupd.repo.model import Manifest, utc_now
from backupd.stores.base import Store
from backupd.units import format_duration


def _summary(manifest: Manifest | None, now: datetime) -> dict[str, Any] | None:
    if manifest is None:
        return None
    return {"id": manifest.id, "method": manifest.method,
            "snapshot_at": manifest.snapshot_at.isoformat().replace("+00:00", "Z"),
            "age_seconds": round((now - manifest.snapshot_at).total_seconds(), 1),
            "raw_bytes": manifest.raw_bytes, "stored_bytes": manifest.stored_bytes,
            "compression_ratio": round(manifest.compression_ratio, 2)}


def shard_status(config: Config, catalog: Catalog, shard: str,
                 clock: Callable[[], datetime] = utc_now) -> dict[str, Any]:
    """The shard's newest full and incremental, where the newest backup is complete, degraded
    (a store lacks it) or suspect (the newest audit that looked at a store found something
    there), and the next backup the schedule will take."""
    now = clock()
    entries = catalog.entries(shard)
    manifests = [e.manifest for e in entries]
    fulls = [m for m in manifests if m.kind == "full"]
    incrementals = [m for m in manifests if m.kind == "incremental"]
    newest_full = max(fulls, key=lambda m: m.snapshot_at, default=None)
    newest_incremental = max(incrementals, key=lambda m: m.snapshot_at, default=None)
    newest = max(manifests, key=lambda m: m.snapshot_at, default=None)
    found_in = next((e.found_in for e in entries if newest is not None and e.manifest.id == newest.id), [])
    wanted = config.shard_stores(shard)
    schedule = config.schedule.for_shard(shard)
    shard_stores = [s for s in catalog.stores if s.name in wanted]
    annotations = last_annotations(shard_stores, shard, [DRILL_ANNOTATION, DEEP_AUDIT_ANNOTATION])
    verdicts = store_verdicts(shard_stores, shard)
    suspect = {name: v.describe() for name, v in verdicts.items() if name in wanted and v.checks}
    if schedule.enabled:
        job = next_job(shard, cadence_of(config, shard), History.of(manifests), now)
        if job.due_at <= now or job.due_at == NEVER:
            next_due = f"{job.kind} now ({job.reason})"
        else:
            next_due = f"{job.kind} in {format_duration((job.due_at - now).total_seconds())}"
    else:
        next_due = "disabled"
    return {
        "shard": shard, "method": config.shard(shard).method, "backups": len(manifests),
        "newest_full": _summary(newest_full, now), "newest_incremental": _summary(newest_incremental, now),
        "stores_complete": [s for s in wanted if s in found_in and s not in suspect],
        "stores_suspect": {s: suspect[s] for s in wanted if s in found_in and s in suspect},
        "stores_degraded": [s for s in wanted if newest is not None and s not in found_in],
        "next_due": next_due,
        "last_drill": annotations[DRILL_ANNOTATION],
        "last_deep_audit": annotations[DEEP_AUDIT_ANNOTATION],
        "binlogs": binlog_status(config, [s for s in catalog.stores if s.name in wanted], shard, now),
    }


def binlog_status(config: Config, stores: list[Store], shard: str, now: datetime) -> dict[str, Any] | None:
    """The shard's binlog archive as its archiver last recorded it (``position.json``): where it
    ends, ``archived_until`` and ``rpo_seconds``; None if the shard is not archived and never was."""
    position = read_position(stores, shard)
    enabled = config.archives_binlogs(shard)
    if position is None and not enabled:
        return None
    until = position.archived_until if position is not None else None
    return {"enabled": enabled, "position": f"{position.file}:{position.pos}" if position else None,
            "archived_until": until.isoformat().replace("+00:00", "Z") if until else None,
            "rpo_seconds": round((now - until).total_seconds(), 1) if until else None}


def restorable_until(rows: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """The newest instant the whole fleet can be restored to (the oldest ``archived_until`` of
    the archived shards) and the shard that holds it back; (None, None) if no shard is archived,
    (None, shard) if an archived shard has archived nothing yet."""
    archived = [(row["binlogs"]["archived_until"], row["shard"]) for row in rows
                if row.get("binlogs") and row["binlogs"]["enabled"]]
    if not archived:
        return None, None
    missing = [shard for until, shard in archived if until is None]
    if missing:
        return None, missing[0]
    until, shard = min(archived)
    return until, shard
