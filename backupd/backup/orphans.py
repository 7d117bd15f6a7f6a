"""Orphaned parts: objects of a backup that never committed (its run was killed, the host died),
and debris: the parts a store took of a backup it then failed during (DEGRADED).

A backup exists only once its manifest exists, so the parts of a run that died before its
commit are invisible to the catalog but still cost storage. They are found per store: every
backup id under the shard's prefix with no manifest in that store, which is either committed in
no store at all, or committed elsewhere with a manifest that records this store as failed
(``stores.<name>.state = "failed"``: the backup went on without it). ``backupd sync`` copies a
committed backup's parts before its manifest, so a store may hold parts of a backup committed
elsewhere while sync runs; sync holds the shard's lock too, so it never runs during this pass.

Deleting orphans is only safe while no backup of the shard can be running: the caller holds the
shard's lock. If any store cannot be listed, nothing is deleted (what looks orphaned might be
committed in the store that did not answer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from backupd.errors import StoreError
from backupd.repo.catalog import Catalog, CatalogEntry
from backupd.repo.layout import parse_key, shard_prefix
from backupd.stores.base import Store

log = logging.getLogger(__name__)


@dataclass
class Orphans:
    """Per store, the keys of each uncommitted backup id."""

    by_store: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(keys) for backups in self.by_store.values() for keys in backups.values())


def find_orphans(stores: list[Store], shard: str, committed: dict[str, set[str]] | None) -> Orphans | None:
    """The shard's orphaned objects in ``stores``, given the ids ``committed`` in any store, each
    with the stores its manifest records as failed (None when the catalog could not list every
    store); None if nothing can be said."""
    if committed is None:
        return None  # a store that could not be listed may hold the manifest of what looks orphaned
    orphans = Orphans()
    for store in stores:
        try:
            listing = list(store.list(shard_prefix(shard)))
        except StoreError as exc:
            log.warning("shard %s: not looking for orphaned parts: store %s cannot be listed: %s",
                        shard, store.name, exc)
            return None
        backups: dict[str, list[str]] = {}
        manifests: set[str] = set()
        for info in listing:
            parsed = parse_key(info.key)
            if parsed is None:
                continue
            backups.setdefault(parsed.backup_id, []).append(info.key)
            if parsed.kind == "manifest":
                manifests.add(parsed.backup_id)
        stray = {bid: keys for bid, keys in backups.items()
                 if bid not in manifests and (bid not in committed or store.name in committed[bid])}
        if stray:
            orphans.by_store[store.name] = stray
    return orphans


def committed_ids(catalog: Catalog, entries: list[CatalogEntry], shard: str) -> dict[str, set[str]] | None:
    """The ids of ``entries`` (just read from ``catalog``), each with the stores its manifest
    records as failed, or None if a store could not be listed."""
    if any(bad.listing for bad in catalog.unreadable):
        return None
    return {e.manifest.id: {name for name, status in e.manifest.stores.items() if status.state == "failed"}
            for e in entries}


def clean_orphans(stores: list[Store], shard: str, committed: dict[str, set[str]] | None) -> int:
    """Delete the shard's orphaned objects (the caller holds the shard lock); return how many."""
    orphans = find_orphans(stores, shard, committed)
    if orphans is None or not orphans.count:
        return 0
    by_name = {s.name: s for s in stores}
    deleted = 0
    for store_name, backups in orphans.by_store.items():
        for backup_id, keys in sorted(backups.items()):
            what = f"backup {backup_id}, committed without this store" if committed and backup_id in committed \
                else f"uncommitted backup {backup_id}"
            log.warning("shard %s: deleting %d orphaned objects of %s from store %s", shard, len(keys), what,
                        store_name)
            for key in keys:
                try:
                    by_name[store_name].delete(key)
                    deleted += 1
                except StoreError as exc:
                    log.error("shard %s: could not delete orphaned %s from store %s: %s", shard, key,
                              store_name, exc)
    return deleted
