"""Rebuilding redundancy: make every store hold every committed backup.

For each committed backup (found in at least one store), each store the backup belongs on
(the shard's ``stores``, default all) gets every part it lacks or holds at the wrong size,
copied from a store that has a good copy (size and sha256 verified on the way), and then, last,
the manifest, byte for byte as committed. Nothing else is changed: manifests are immutable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from backupd.errors import StoreError, VerificationError
from backupd.progress import Progress
from backupd.repo.fetch import PartFetcher
from backupd.repo.layout import backup_prefix, manifest_key
from backupd.repo.model import Manifest
from backupd.repo.repository import Repository
from backupd.stores.base import Payload, Store

log = logging.getLogger(__name__)


@dataclass
class SyncReport:
    backups: int = 0
    parts_copied: int = 0
    bytes_copied: int = 0
    manifests_copied: int = 0
    problems: list[str] = field(default_factory=list)
    corrupt: bool = False


def sync_stores(repo: Repository, shard: str | None = None) -> SyncReport:
    """Copy to every store what it lacks of the committed backups (of ``shard``, or all)."""
    config = repo.config
    catalog = repo.catalog()
    report = SyncReport()
    entries = catalog.entries(shard)
    catalog.require_a_listing()
    for bad in catalog.unreadable:  # a store that cannot be listed cannot be synced either: said
        report.problems.append(bad.describe())
    for entry in entries:
        manifest = entry.manifest
        report.backups += 1
        wanted = config.shard_stores(manifest.shard) if manifest.shard in config.shards else list(config.stores)
        sources = repo.stores(entry.found_in)
        fetcher = PartFetcher.of(sources, manifest)
        for name in wanted:
            try:
                _sync_one(repo.store(name), manifest, name in entry.found_in, fetcher, sources, report)
            except VerificationError as exc:
                report.corrupt = True
                report.problems.append(str(exc))
            except StoreError as exc:
                report.problems.append(f"backup {manifest.id} to store {name}: {exc}")
    return report


def _sync_one(target: Store, manifest: Manifest, has_manifest: bool, fetcher: PartFetcher,
              sources: list[Store], report: SyncReport) -> None:
    present = {info.key: info.size for info in target.list(backup_prefix(manifest.shard, manifest.id))}
    missing = [part for part in manifest.parts if present.get(part.key) != part.size]
    if not missing and has_manifest:
        return
    with Progress(f"sync: {manifest.id} -> store {target.name}", sum(p.size for p in missing)) as progress:
        for part, data in fetcher.verified_parts(missing):  # the next part is read while this one uploads
            progress.advance(len(data))
            target.put(part.key, Payload.from_bytes(data))
            report.parts_copied += 1
            report.bytes_copied += len(data)
            log.info("sync: %s -> store %s", part.key, target.name)
    if not has_manifest:
        key = manifest_key(manifest.shard, manifest.id)
        for source in sources:
            try:
                raw = source.get(key)
                break
            except StoreError as exc:
                log.warning("sync: cannot read %s from store %s: %s", key, source.name, exc)
        else:
            raise StoreError(f"manifest {key} is readable in no store", store=target.name, key=key)
        target.put(key, Payload.from_bytes(raw))
        report.manifests_copied += 1
        log.info("sync: backup %s of shard %s is now complete in store %s", manifest.id,
                 manifest.shard, target.name)
