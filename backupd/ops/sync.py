"""Making every store whole: copy what a store lacks, replace what is bad.

``sync_stores`` works shard by shard with the shard's lock held (the lease backups take), so it
never races a backup's orphan pass: a store may hold some parts of a backup it failed during
(DEGRADED) and a backup deletes those as debris; sync completes them instead (the rest of the
parts, then the manifest), and the two never run at once. For each committed backup and each
store it belongs on (the shard's ``stores``, default all):

1. **The manifest.** Every store's copy is read. The good copy passes its self-check
   (``backupd.repo.sealed``); when good copies disagree (a backup from before self-checks, or a
   bug), the one whose parts the stores list at the recorded sizes and MD5s wins. A store whose
   copy is missing or bad gets the good copy's bytes, written after its parts.
2. **Parts.** A part a store lacks, or holds at the wrong size, is copied from a good copy
   (``backupd.repo.fetch.PartFetcher``: size and sha256 checked on the way, the next store's copy
   tried when one is bad).
3. **With ``verify``**, every copy a store holds is checked too: by the provider's checksum (one
   HEAD, ``backupd.ops.checksums``) where the provider keeps one, else by downloading it and
   checking its sha256. A bad copy is replaced from a good one.

Everything done is a ``Repair``. The result is whole when nothing failed; a part or manifest
with no good copy in any store is ``no_good_copy`` (the CLI's exit 3); a store that could not be
listed or written, or a shard whose lock is held, is a ``problem`` (exit 1).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from backupd.backup.job import shard_lock
from backupd.errors import (
    BackupdError,
    CorruptPart,
    LockHeld,
    ObjectNotFound,
    StoreError,
    VerificationError,
)
from backupd.ops.checksums import has_provider_checksum, provider_mismatch
from backupd.progress import Progress
from backupd.repo.annotations import AUDIT_ANNOTATION, annotate
from backupd.repo.catalog import Catalog, CatalogEntry
from backupd.repo.fetch import PartFetcher, check_part
from backupd.repo.keys import key_copy_problem
from backupd.repo.layout import format_id_time, key_object_key, manifest_key
from backupd.repo.model import Manifest, PartRecord, utc_now
from backupd.repo.repository import Repository
from backupd.stores.base import ObjectInfo, Payload, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Repair:
    """One object sync wrote: ``action`` is ``copied`` (the store lacked it) or ``replaced``
    (its copy was bad); ``reason`` says what was wrong."""

    shard: str
    backup: str
    store: str
    object: str
    action: str
    reason: str

    def describe(self) -> str:
        return f"{self.action} {self.object} in store {self.store}: {self.reason}"


@dataclass
class SyncReport:
    verified: bool = False
    shards: list[str] = field(default_factory=list)
    backups: int = 0
    copies_checked: int = 0
    bytes_copied: int = 0
    repairs: list[Repair] = field(default_factory=list)
    no_good_copy: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def whole(self) -> bool:
        return not self.no_good_copy and not self.problems

    @property
    def parts_copied(self) -> int:
        return sum(1 for r in self.repairs if not r.object.endswith("manifest.json"))

    @property
    def manifests_copied(self) -> int:
        return sum(1 for r in self.repairs if r.object.endswith("manifest.json"))

    def to_json(self) -> dict[str, Any]:
        return {"whole": self.whole, "verified": self.verified, "shards": self.shards, "backups": self.backups,
                "copies_checked": self.copies_checked, "parts_copied": self.parts_copied,
                "manifests_copied": self.manifests_copied, "bytes_copied": self.bytes_copied,
                "repairs": [asdict(r) for r in self.repairs], "no_good_copy": self.no_good_copy,
                "problems": self.problems}


def sync_stores(repo: Repository, shard: str | None = None, *, verify: bool = False) -> SyncReport:
    """Make every store whole for ``shard`` (or every configured shard); see the module docstring."""
    config = repo.config
    report = SyncReport(verified=verify)
    for shard_id in [shard] if shard else sorted(config.shards):
        report.shards.append(shard_id)
        lock = shard_lock(config, repo.shard(shard_id), "sync")
        try:
            lock.acquire()
        except (LockHeld, BackupdError) as exc:
            report.problems.append(f"shard {shard_id}: not synced: {exc}")
            continue
        try:
            with lock.renewing():
                _ShardSync(repo, shard_id, report, verify=verify).run()
        finally:
            lock.release()
    return report


class _ShardSync:
    def __init__(self, repo: Repository, shard: str, report: SyncReport, *, verify: bool):
        self.repo = repo
        self.shard = shard
        self.report = report
        self.verify = verify
        self.wanted = repo.stores(repo.config.shard_stores(shard))
        self.catalog = Catalog(self.wanted, every_copy=True)
        self.unwhole: dict[str, set[str]] = {s.name: set() for s in self.wanted}  # per store: what is left

    def run(self) -> None:
        started = utc_now()
        entries = self.catalog.entries(self.shard)
        try:
            self.catalog.require_a_listing()
        except StoreError as exc:
            self.report.problems.append(f"shard {self.shard}: {exc}")
            return
        for bad in self.catalog.unlisted:  # a store that cannot be listed cannot be synced either
            self.report.problems.append(bad.describe())
            self.unwhole[bad.store].add("store-unreachable")
        for entry in entries:
            self.report.backups += 1
            try:
                self.sync_backup(entry)
            except VerificationError as exc:
                self.report.no_good_copy.append(str(exc))
                for checks in self.unwhole.values():
                    checks.add("no-good-copy")
        if self.verify and entries:
            self.record(entries, started)

    def record(self, entries: list[CatalogEntry], started: datetime) -> None:
        """A verifying sync checked every copy: its verdict per store is an audit's (``status``)."""
        newest = max(entries, key=lambda e: (e.manifest.snapshot_at, e.manifest.id)).manifest
        stamp = format_id_time(started)
        annotate(self.wanted, self.shard, newest.id, f"{AUDIT_ANNOTATION}sync-{stamp}",
                 {"kind": "audit", "level": "sync", "at": stamp,
                  "ok": not any(self.unwhole.values()),
                  "stores": {name: sorted(checks) for name, checks in self.unwhole.items()}})

    def sync_backup(self, entry: CatalogEntry) -> None:
        good, good_stores = self.good_manifest(entry)
        # every listed store may hold good parts (a bad manifest copy says nothing about them):
        # the fetcher checks each copy's size and sha256 and moves on to the next store
        sources = [s for s in self.wanted if s.name in self.catalog.listings]
        fetcher = PartFetcher(sources, good.id, good.parts)  # ciphertext is copied as stored
        key = manifest_key(good.shard, good.id)
        good_bytes: bytes | None = None
        for store in self.wanted:
            listing = self.catalog.listings.get(store.name)
            if listing is None:
                continue  # unlisted: a problem already
            try:
                bad_parts = self.bad_parts(store, good, listing)
                self.copy_parts(store, good, fetcher, bad_parts)
                self.sync_key_object(store, good, listing)
                if store.name not in good_stores:
                    if good_bytes is None:
                        good_bytes = self.read_good_bytes(good, good_stores)
                    store.put(key, Payload.from_bytes(good_bytes))
                    had = store.name in entry.bad_copies or store.name in entry.copies
                    why = entry.bad_copies.get(store.name) or ("its copy differs from the good one" if had else
                                                               "missing")
                    self.repaired(good, store, key, "replaced" if had else "copied", why)
            except CorruptPart:
                raise
            except StoreError as exc:
                self.report.problems.append(f"backup {good.id} to store {store.name}: {exc}")
                self.unwhole[store.name].add("sync-failed")

    def good_manifest(self, entry: CatalogEntry) -> tuple[Manifest, set[str]]:
        """The good copy of the manifest and the stores holding exactly it."""
        digests = set(entry.copies.values())
        if len(digests) <= 1:
            return entry.manifest, set(entry.copies) or set(entry.found_in)
        candidates = []
        for digest in sorted(digests):
            holders = {s for s, d in entry.copies.items() if d == digest}
            store = self.repo.store(sorted(holders)[0])
            manifest = self.catalog.read(store, entry.manifest.shard, entry.manifest.id)
            candidates.append((self.listed_score(manifest), manifest, holders))
        candidates.sort(key=lambda c: -c[0])
        score, manifest, holders = candidates[0]
        log.warning("sync: backup %s: the stores hold different manifests (each passes its self-check); keeping "
                    "the one in %s, whose parts the stores list as recorded (%d copies)", entry.manifest.id,
                    ", ".join(sorted(holders)), score)
        return manifest, holders

    def listed_score(self, manifest: Manifest) -> int:
        """How many part copies the stores list at the size (and, where listed, MD5) recorded."""
        score = 0
        for listing in self.catalog.listings.values():
            for part in manifest.parts:
                info = listing.get(part.key)
                if info is not None and info.size == part.size and (not part.md5 or info.etag in (None, part.md5)):
                    score += 1
        return score

    def read_good_bytes(self, manifest: Manifest, holders: Iterable[str]) -> bytes:
        key = manifest_key(manifest.shard, manifest.id)
        for name in holders:
            try:
                data = self.repo.store(name).get(key)
                Manifest.from_json(data, origin=f"{name}:{key}")
                return data
            except (StoreError, BackupdError) as exc:
                log.warning("sync: cannot read %s from store %s: %s", key, name, exc)
        raise CorruptPart(f"manifest {key} of shard {manifest.shard}: no good copy in any store")

    def sync_key_object(self, store: Store, manifest: Manifest, listing: dict[str, ObjectInfo]) -> None:
        """An encrypted backup's key object, in ``store`` before its manifest: copied where it is
        missing, and with ``verify`` replaced where it fails its self-check or holds another key
        (copies that differ only in recipients, as while a rewrap runs, are each left as they are)."""
        if manifest.encryption is None:
            return
        key = key_object_key(manifest.shard, manifest.id)
        problem = "missing" if key not in listing else None
        if problem is None and self.verify:
            self.report.copies_checked += 1
            try:
                problem = key_copy_problem(store.get(key), f"{store.name}:{key}", manifest.encryption.key_check)
            except ObjectNotFound:
                problem = "listed but not served"
        if problem is None:
            return
        for source in self.wanted:
            if source is store or source.name not in self.catalog.listings:
                continue
            try:
                data = source.get(key)
            except StoreError:
                continue
            if key_copy_problem(data, f"{source.name}:{key}", manifest.encryption.key_check) is None:
                store.put(key, Payload.from_bytes(data))
                self.repaired(manifest, store, key, "copied" if problem == "missing" else "replaced", problem)
                return
        raise CorruptPart(f"key object {key} of backup {manifest.id}: no good copy in any store ({problem} in "
                          f"{store.name})")

    def bad_parts(self, store: Store, manifest: Manifest, listing: dict[str, ObjectInfo]) -> dict[int, str]:
        """The parts ``store`` needs written, by index, with why."""
        bad: dict[int, str] = {}
        for part in manifest.parts:
            info = listing.get(part.key)
            if info is None:
                bad[part.index] = "missing"
            elif info.size != part.size:
                bad[part.index] = f"{info.size} bytes, the manifest says {part.size}"
            elif self.verify:
                self.report.copies_checked += 1
                problem = self.check_copy(store, part)
                if problem:
                    bad[part.index] = problem
        return bad

    def check_copy(self, store: Store, part: PartRecord) -> str | None:
        """What is wrong with ``store``'s copy of ``part`` (None: it is good): its provider's
        checksum, or its bytes (sha256) where the provider keeps none."""
        try:
            if has_provider_checksum(store, part):
                return provider_mismatch(store, part, store.stat(part.key))
            return check_part(store.get(part.key), part)
        except ObjectNotFound:
            return "listed but not served (the provider lost or quarantined it)"

    def copy_parts(self, store: Store, manifest: Manifest, fetcher: PartFetcher, bad: dict[int, str]) -> None:
        if not bad:
            return
        parts = [p for p in manifest.parts if p.index in bad]
        with Progress(f"sync: {manifest.id} -> store {store.name}", sum(p.size for p in parts)) as progress:
            for part, data in fetcher.verified_parts(parts):  # the next part is read while this one uploads
                progress.advance(len(data))
                store.put(part.key, Payload.from_bytes(data))
                self.report.bytes_copied += len(data)
                self.repaired(manifest, store, part.key, "copied" if bad[part.index] == "missing" else "replaced",
                              bad[part.index])

    def repaired(self, manifest: Manifest, store: Store, key: str, action: str, reason: str) -> None:
        repair = Repair(manifest.shard, manifest.id, store.name, key, action, reason)
        self.report.repairs.append(repair)
        log.debug("sync: %s", repair.describe())  # the CLI prints every repair

