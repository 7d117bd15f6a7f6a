"""Deleting what the retention policy no longer keeps, in an order that is always safe.

For each backup to delete: first its manifest, from every store that holds it (the backup
disappears from the catalog at once, atomically per store), then its parts and annotations.
If a manifest cannot be deleted from a store, that store keeps the whole backup (its parts are
not touched there), so no store is ever left with a manifest whose parts are gone; the problem
is reported and the next prune retries.

Then each shard's binlog segments that end at or before the oldest kept backup's coordinates
are deleted (nothing kept can replay them): the record first, then the object (an object left
behind is an orphan the archiver deletes). The segment holding the coordinates is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from backupd.config import Config
from backupd.errors import NoBackupFound, ObjectNotFound, StoreError
from backupd.policy.retention import RetentionPolicy, Verdict, apply_retention
from backupd.repo.binlogs import BinlogArchive
from backupd.repo.keys import binlog_key_object_key
from backupd.repo.layout import backup_prefix, manifest_key
from backupd.repo.model import utc_now
from backupd.repo.repository import Repository

log = logging.getLogger(__name__)


@dataclass
class PruneReport:
    verdicts: list[Verdict] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    objects_deleted: int = 0
    bytes_freed: int = 0
    problems: list[str] = field(default_factory=list)
    segments: dict[str, int] = field(default_factory=dict)  # shard: binlog segments deleted (or to delete)

    @property
    def to_delete(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.keep]


def policy_of(config: Config) -> RetentionPolicy:
    r = config.retention
    return RetentionPolicy(full_days=r.full_days, keep_daily=r.keep_daily, keep_weekly=r.keep_weekly)


def prune(repo: Repository, shard: str | None = None, *, dry_run: bool = False,
          clock: Callable[[], datetime] = utc_now) -> PruneReport:
    """Apply the retention policy to ``shard`` (or every shard); ``dry_run`` only reports."""
    catalog = repo.catalog()
    entries = catalog.entries(shard)
    report = PruneReport()
    catalog.require_a_listing()
    for bad in catalog.unreadable:
        report.problems.append(bad.describe())
    report.verdicts = apply_retention([e.manifest for e in entries], clock(), policy_of(repo.config))
    shards = [shard] if shard else sorted(repo.config.shards)
    if dry_run:
        for shard_id in shards:
            _prune_segments(repo, shard_id, report, dry_run=True)
        return report
    found_in = {e.manifest.id: e.found_in for e in entries}
    for verdict in report.to_delete:
        manifest = verdict.manifest
        key = manifest_key(manifest.shard, manifest.id)
        emptied = []
        for name in found_in[manifest.id]:
            try:
                repo.store(name).delete(key)
                emptied.append(name)
            except StoreError as exc:
                report.problems.append(f"backup {manifest.id}: manifest not deleted from store {name}: {exc}")
        for name in emptied:
            store = repo.store(name)
            try:
                for info in list(store.list(backup_prefix(manifest.shard, manifest.id))):
                    store.delete(info.key)
                    report.objects_deleted += 1
                    report.bytes_freed += info.size
            except StoreError as exc:
                report.problems.append(f"backup {manifest.id}: parts left in store {name} "
                                       f"(orphans, cleaned by the next backup of the shard): {exc}")
        if emptied:
            report.deleted.append(manifest.id)
            log.info("prune: deleted %s %s of shard %s from %s (%s)", manifest.kind, manifest.id,
                     manifest.shard, ", ".join(emptied), "; ".join(verdict.reasons))
    for shard_id in shards:
        _prune_segments(repo, shard_id, report, dry_run=False)
    return report


def _prune_segments(repo: Repository, shard: str, report: PruneReport, *, dry_run: bool) -> None:
    """Delete the shard's segments before its oldest kept backup's coordinates (module docstring)."""
    kept = [v.manifest for v in report.verdicts if v.keep and v.manifest.shard == shard
            and v.manifest.coordinates.binlog_file and v.manifest.coordinates.binlog_pos]
    if not kept:
        return  # nothing kept: keep the archive (it may be all there is)
    oldest = min(kept, key=lambda m: m.snapshot_at).coordinates
    assert oldest.binlog_file is not None and oldest.binlog_pos is not None
    stores = repo.stores(repo.config.shard_stores(shard))
    archive = BinlogArchive(stores, shard).load()
    report.problems += [f"shard {shard}: binlog archive: {problem}" for problem in archive.unreadable]
    try:  # in the archive's binlog (another server's: matched by GTID)
        start = archive.start_of(oldest, what=f"shard {shard}: the oldest kept backup")
    except NoBackupFound as exc:
        report.problems.append(f"{exc.message}: no binlog segment deleted")
        return
    old = [r for r in archive.records if (r.file, r.end_pos) <= start]
    if not old:
        return
    report.segments[shard] = len(old)
    if dry_run:
        return
    for record in old:
        for store in stores:
            if store.name not in archive.found_in.get(record.record_key, []) and \
                    record.object_key not in archive.objects.get(store.name, set()):
                continue
            try:
                store.delete(record.record_key)
                store.delete(record.object_key)
                report.objects_deleted += 2
                report.bytes_freed += record.size
            except StoreError as exc:
                report.problems.append(f"shard {shard}: binlog segment {record.object_key} not deleted from "
                                       f"store {store.name}: {exc}")
    kept_runs = {r.key_run for r in archive.records if r not in old}
    for run in sorted({r.key_run for r in old if r.key_run and r.key_run not in kept_runs}):
        for store in stores:  # the data key of encrypted runs none of whose segments is left
            try:
                store.delete(binlog_key_object_key(shard, run))
                report.objects_deleted += 1
            except ObjectNotFound:
                pass
            except StoreError as exc:
                report.problems.append(f"shard {shard}: key object of binlog run {run} not deleted from "
                                       f"store {store.name}: {exc}")
    log.info("prune: deleted %d binlog segments of shard %s before %s:%d (the oldest kept backup's coordinates)",
             len(old), shard, oldest.binlog_file, oldest.binlog_pos)
