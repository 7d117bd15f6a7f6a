"""The catalog: what backups exist, read from the manifests in the stores.

A backup exists exactly when its manifest exists (WAL-G's sentinel). Manifests are committed
last and deleted first. A manifest that cannot be read is collected in ``unreadable`` and
reported, never fatal to a listing (barman's ``unreadable_backups``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from backupd.errors import BackupFailed, CatalogError, StoreError, StoreUnreachable
from backupd.repo.keys import KeyObject
from backupd.repo.layout import manifest_key, parse_key, shard_prefix
from backupd.repo.model import Manifest
from backupd.stores.base import ObjectInfo, Payload, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unreadable:
    """A store that could not be listed (``listing``; ``key`` is the prefix) or a manifest
    that could not be read or does not validate."""

    store: str
    key: str
    error: str
    listing: bool = False

    def describe(self) -> str:
        """One line for users: the store that could not be listed (its error names it), or the
        manifest that could not be read."""
        return self.error if self.listing else f"manifest {self.store}:{self.key} is unreadable: {self.error}"


@dataclass
class CatalogEntry:
    """A committed backup and the stores where its manifest was found.

    With ``every_copy``: ``copies`` maps each store whose copy is good to that copy's digest
    (``Manifest.copy_digest``), and ``bad_copies`` each store whose copy is not (unparseable,
    invalid, failing its self-check) to why. ``manifest`` is the first good copy.
    """

    manifest: Manifest
    found_in: list[str] = field(default_factory=list)
    copies: dict[str, str] = field(default_factory=dict)
    bad_copies: dict[str, str] = field(default_factory=dict)

    @property
    def copies_differ(self) -> bool:
        """Whether the stores hold different copies (a bad one, or two good ones that differ)."""
        return bool(self.bad_copies) or len(set(self.copies.values())) > 1


class Catalog:
    """The committed backups in ``stores``.

    Manifests are immutable, so one Catalog reads each manifest once: calling ``entries`` again
    re-lists the stores but only reads new manifests. With ``every_copy`` (audits) each store's
    copy of each manifest is read and validated, so a damaged copy is reported even when
    another store holds a good one, and ``found_in`` names only the stores whose copy is good.
    After ``entries``, ``listings`` holds what each store listed (key: object) and ``unreadable``
    what could not be listed or read.
    """

    def __init__(self, stores: list[Store], *, every_copy: bool = False, shards: Sequence[str] | None = None):
        """``shards``: the shards ``entries()`` lists when asked for all (each its own prefix);
        None lists everything in the stores."""
        self.stores = stores
        self.shards = list(shards) if shards else None  # none configured: list everything
        self.every_copy = every_copy
        self.unreadable: list[Unreadable] = []
        self.listings: dict[str, dict[str, ObjectInfo]] = {}
        self._manifests: dict[tuple[str, str], Manifest] = {}

    def entries(self, shard: str | None = None) -> list[CatalogEntry]:
        """Every committed backup (of ``shard``, or all), oldest first, merged across stores."""
        merged: dict[tuple[str, str], CatalogEntry] = {}
        bad: dict[tuple[str, str], dict[str, str]] = {}  # every_copy: the copies that could not be read
        self.unreadable = []
        self.listings = {}
        prefixes = [shard_prefix(shard)] if shard else \
            [shard_prefix(s) for s in self.shards] if self.shards is not None else [""]
        for store in self.stores:
            try:
                listing = self.listings[store.name] = {info.key: info for prefix in prefixes
                                                       for info in store.list(prefix)}
            except StoreError as exc:
                self.unreadable.append(Unreadable(store.name, prefixes[0] if len(prefixes) == 1 else "",
                                                  str(exc), listing=True))
                continue
            for key in sorted(listing):
                parsed = parse_key(key)
                if parsed is None or parsed.kind != "manifest":
                    continue
                ident = (parsed.shard, parsed.backup_id)
                entry = merged.get(ident)
                digest = None
                if entry is None or self.every_copy:
                    manifest = None if self.every_copy else self._manifests.get(ident)
                    if manifest is None:
                        try:
                            manifest, digest = self.read_copy(store, parsed.shard, parsed.backup_id)
                        except (CatalogError, StoreError) as exc:
                            self.unreadable.append(Unreadable(store.name, key, str(exc)))
                            bad.setdefault(ident, {})[store.name] = str(exc)
                            continue
                        self._manifests.setdefault(ident, manifest)
                    if entry is None:
                        entry = merged[ident] = CatalogEntry(manifest)
                entry.found_in.append(store.name)
                if digest is not None:
                    entry.copies[store.name] = digest
        for ident, copies in bad.items():
            if ident in merged:
                merged[ident].bad_copies = copies
        return sorted(merged.values(), key=lambda e: (e.manifest.started_at, e.manifest.id))

    @property
    def unlisted(self) -> list[Unreadable]:
        """The stores the last ``entries`` could not list (unreachable, refusing access)."""
        return [bad for bad in self.unreadable if bad.listing]

    def require_a_listing(self) -> None:
        """Raise ``StoreUnreachable`` naming every store if the last ``entries`` could list none."""
        failed = self.unlisted
        if self.stores and len(failed) == len(self.stores):
            raise StoreUnreachable(f"no store could be listed: {'; '.join(bad.error for bad in failed)}",
                                   store=",".join(bad.store for bad in failed))

    def backups(self, shard: str | None = None) -> list[Manifest]:
        return [e.manifest for e in self.entries(shard)]

    def read(self, store: Store, shard: str, backup_id: str) -> Manifest:
        """Read and validate one manifest; the manifest must describe the key it was found at."""
        return self.read_copy(store, shard, backup_id)[0]

    def read_copy(self, store: Store, shard: str, backup_id: str) -> tuple[Manifest, str]:
        """One store's copy of a manifest, validated (its self-check too), and its digest."""
        key = manifest_key(shard, backup_id)
        data = store.get(key)
        manifest = Manifest.from_json(data, origin=f"{store.name}:{key}")
        if manifest.shard != shard or manifest.id != backup_id:
            raise CatalogError(f"manifest {store.name}:{key} describes {manifest.shard}/{manifest.id}")
        return manifest, Manifest.copy_digest(data)


def commit_manifest(manifest: Manifest, stores: list[Store], *, key_object: KeyObject | None = None) -> list[Store]:
    """Write the manifest to each store (the commit point); return the stores that took it. An
    encrypted backup's ``key_object`` is written to a store just before its manifest: a store
    that holds the manifest holds the key.

    Raises BackupFailed when no store took it.
    """
    payload = Payload.from_bytes(manifest.to_json())
    key = manifest_key(manifest.shard, manifest.id)
    wrapped = Payload.from_bytes(key_object.to_json()) if key_object is not None else None
    committed, errors = [], []
    for store in stores:
        try:
            if wrapped is not None and key_object is not None:
                store.put(key_object.object_key, wrapped)
            store.put(key, payload)
            committed.append(store)
        except StoreError as exc:
            errors.append(str(exc))
            log.error("store %s: manifest of %s not committed: %s", store.name, manifest.id, exc)
    if not committed:
        raise BackupFailed(f"shard {manifest.shard}: manifest of {manifest.id} could not be "
                           f"committed to any store: {'; '.join(errors)}")
    return committed

