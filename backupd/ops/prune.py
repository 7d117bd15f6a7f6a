"""Deleting what the retention policy no longer keeps, in an order that is always safe.

For each backup to delete: first its manifest, from every store that holds it (the backup
disappears from the catalog at once, atomically per store), then its parts and annotations.
If a manifest cannot be deleted from a store, that store keeps the whole backup (its parts are
not touched there), so no store is ever left with a manifest whose parts are gone; the problem
is reported and the next prune retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from backupd.config import Config
from backupd.errors import StoreError
from backupd.policy.retention import RetentionPolicy, Verdict, apply_retention
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
    if dry_run:
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
    return report
