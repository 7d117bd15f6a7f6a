"""The catalog: what backups exist, read from the manifests in the stores.

A backup exists exactly when its manifest exists (WAL-G's sentinel). Manifests are committed
last and deleted first. A manifest that cannot be read is collected in ``unreadable`` and
reported, never fatal to a listing (barman's ``unreadable_backups``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from backupd.errors import BackupFailed, CatalogError, StoreError
from backupd.layout import manifest_key, parse_key, shard_prefix
from backupd.model import Manifest
from backupd.stores.base import Payload, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unreadable:
    store: str
    key: str
    error: str


@dataclass
class CatalogEntry:
    """A committed backup and the stores where its manifest was found."""

    manifest: Manifest
    found_in: list[str] = field(default_factory=list)


class Catalog:
    """The committed backups in ``stores``. Manifests are immutable, so one Catalog reads each
    manifest once: calling ``entries`` again re-lists the stores but only reads new manifests."""

    def __init__(self, stores: list[Store]):
        self.stores = stores
        self.unreadable: list[Unreadable] = []
        self._manifests: dict[tuple[str, str], Manifest] = {}

    def entries(self, shard: str | None = None) -> list[CatalogEntry]:
        """Every committed backup (of ``shard``, or all), oldest first, merged across stores."""
        merged: dict[tuple[str, str], CatalogEntry] = {}
        self.unreadable = []
        for store in self.stores:
            try:
                listing = list(store.list(shard_prefix(shard) if shard else ""))
            except StoreError as exc:
                self.unreadable.append(Unreadable(store.name, shard_prefix(shard) if shard else "", str(exc)))
                continue
            for info in listing:
                parsed = parse_key(info.key)
                if parsed is None or parsed.kind != "manifest":
                    continue
                entry = merged.get((parsed.shard, parsed.backup_id))
                if entry is None:
                    manifest = self._manifests.get((parsed.shard, parsed.backup_id))
                    if manifest is None:
                        try:
                            manifest = self.read(store, parsed.shard, parsed.backup_id)
                        except (CatalogError, StoreError) as exc:
                            self.unreadable.append(Unreadable(store.name, info.key, str(exc)))
                            continue
                        self._manifests[(parsed.shard, parsed.backup_id)] = manifest
                    entry = merged[(parsed.shard, parsed.backup_id)] = CatalogEntry(manifest)
                entry.found_in.append(store.name)
        return sorted(merged.values(), key=lambda e: (e.manifest.started_at, e.manifest.id))

    def backups(self, shard: str | None = None) -> list[Manifest]:
        return [e.manifest for e in self.entries(shard)]

    def read(self, store: Store, shard: str, backup_id: str) -> Manifest:
        """Read and validate one manifest; the manifest must describe the key it was found at."""
        key = manifest_key(shard, backup_id)
        manifest = Manifest.from_json(store.get(key), origin=f"{store.name}:{key}")
        if manifest.shard != shard or manifest.id != backup_id:
            raise CatalogError(f"manifest {store.name}:{key} describes {manifest.shard}/{manifest.id}")
        return manifest


def commit_manifest(manifest: Manifest, stores: list[Store]) -> list[Store]:
    """Write the manifest to each store (the commit point); return the stores that took it.

    Raises BackupFailed when no store took it.
    """
    payload = Payload.from_bytes(manifest.to_json())
    key = manifest_key(manifest.shard, manifest.id)
    committed, errors = [], []
    for store in stores:
        try:
            store.put(key, payload)
            committed.append(store)
        except StoreError as exc:
            errors.append(str(exc))
            log.error("store %s: manifest of %s not committed: %s", store.name, manifest.id, exc)
    if not committed:
        raise BackupFailed(f"shard {manifest.shard}: manifest of {manifest.id} could not be "
                           f"committed to any store: {'; '.join(errors)}")
    return committed

