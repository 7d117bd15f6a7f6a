"""Key rotation: ``backupd keys rewrap`` and ``backupd keys list``.

Rewrapping changes who can open the backups without touching the data: each key object
(``backupd.repo.keys``: a backup's, or a binlog run's) is replaced by one holding the same data
key for another set of recipients. Parts, segments and manifests are never rewritten (the
manifest's ``key_check`` still names the same data key).

It runs in two passes, so that an interruption at any moment (kill -9, a store that stops
answering) leaves every backup openable:

1. **add**: every key object gets the new recipients beside the ones it has (this needs a
   private key that opens it). While this pass runs, every backup opens with the old keys, and
   those done also with the new ones.
2. **remove**: only once pass 1 succeeded for every key object in every store, the removed
   recipients are dropped (no private key needed). While this pass runs, every backup opens with
   the new keys, and those not done yet also with the old ones.

Each write replaces one object (atomic in every store backupd supports) and is read back and
checked (its seal, its recipients, and the data key where a given private key is among them).
Running the same rewrap again finishes an interrupted one. A store that cannot be written stops
the run before pass 2 (exit 1), naming it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from backupd.errors import BackupdError, CatalogError, StoreError, UsageError
from backupd.repo.encryption import DataKey
from backupd.repo.keys import (
    Identity,
    KeyObject,
    Recipient,
    binlog_key_prefix,
    open_key,
    read_key_copies,
)
from backupd.repo.layout import key_object_key
from backupd.repo.repository import Repository
from backupd.stores.base import Payload, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyedObject:
    """One key object to rewrap: where it is, what it unlocks, and the manifest's key check."""

    object_key: str
    what: str
    stores: list[Store]
    expected_check: str | None


@dataclass
class RewrapReport:
    rewrapped: list[str] = field(default_factory=list)  # what each finished key object unlocks
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"rewrapped": self.rewrapped, "added": self.added, "removed": self.removed,
                "problems": self.problems, "complete": not self.problems}


def key_objects(repo: Repository, shard_id: str | None) -> list[KeyedObject]:
    """Every key object of the configured shards' committed encrypted backups and binlog runs."""
    shards = [shard_id] if shard_id else sorted(repo.config.shards)
    found = []
    catalog = repo.catalog()
    catalog.require_a_listing()
    for shard in shards:
        stores = repo.stores(repo.config.shard_stores(shard))
        for entry in catalog.entries(shard):
            manifest = entry.manifest
            if manifest.encryption is not None:
                holding = [s for s in stores if s.name in entry.found_in] or stores
                found.append(KeyedObject(key_object_key(shard, manifest.id), f"backup {manifest.id}", holding,
                                         manifest.encryption.key_check))
        runs: dict[str, list[Store]] = {}
        for store in stores:
            try:
                for info in store.list(binlog_key_prefix(shard)):
                    runs.setdefault(info.key, []).append(store)
            except StoreError as exc:
                raise BackupdError(f"shard {shard}: binlog key objects cannot be listed in store {store.name}: "
                                   f"{exc}") from None
        for object_key, holding in sorted(runs.items()):
            run = object_key.rsplit("/", 1)[-1].removesuffix(".json")
            found.append(KeyedObject(object_key, f"binlog run {run} of shard {shard}", holding, None))
    return found


def list_keys(repo: Repository, shard_id: str | None) -> list[dict[str, Any]]:
    """For each key object: what it unlocks and, per store, its recipients' key ids (no private
    key needed)."""
    rows = []
    for item in key_objects(repo, shard_id):
        copies = read_key_copies(item.stores, item.object_key)
        rows.append({"object": item.object_key, "unlocks": item.what,
                     "recipients": {c.store: c.key_object.key_ids if c.key_object else None for c in copies},
                     "problems": {c.store: c.problem for c in copies if c.problem}})
    return rows


def rewrap(repo: Repository, shard_id: str | None, *, add: list[Recipient], remove: list[str],
           identities: list[Identity]) -> RewrapReport:
    """Give every key object the recipients ``add`` and take away the key ids ``remove`` (the
    module docstring's two passes). Raises ``UsageError`` for a request that would leave a key
    object with no recipient, ``KeyUnavailable`` when no private key given opens one that
    needs a recipient added (nothing is removed anywhere then)."""
    if not add and not remove:
        raise UsageError("keys rewrap: give --add PUBLIC_KEY and/or --remove KEY_ID")
    removing = set(remove)
    if removing & {r.key_id for r in add}:
        raise UsageError("keys rewrap: a key cannot be added and removed at once")
    report = RewrapReport(added=[r.key_id for r in add], removed=sorted(removing))
    items = key_objects(repo, shard_id)
    current = {item.object_key: _readable_copies(item) for item in items}
    for item in items:  # refuse before writing anything
        for copy in current[item.object_key].values():
            left = (set(copy.key_ids) | {r.key_id for r in add}) - removing
            if not left:
                raise UsageError(f"keys rewrap: {item.what} would be left with no recipient "
                                 f"(it has {', '.join(copy.key_ids)})")
    if add:
        for item in items:
            key = _open(item, identities) if _missing(current[item.object_key], add) else None
            for store, copy in current[item.object_key].items():
                if not _missing({store: copy}, add):
                    continue  # this copy has them all already (a rewrap run again)
                assert key is not None
                fresh = KeyObject.wrap(key, add, scope=copy.scope, shard=copy.shard, owner=copy.owner)
                entries = {w.key_id: w for w in copy.recipients} | {w.key_id: w for w in fresh.recipients}
                _replace(item, store, copy.model_copy(update={"recipients": [entries[k] for k in sorted(entries)]}),
                         identities, report)
        if report.problems:
            report.problems.append("no recipient was removed anywhere: run the same rewrap again once "
                                   "every store answers")
            return report
        current = {item.object_key: _readable_copies(item) for item in items}
    if removing:
        for item in items:
            for store, copy in current[item.object_key].items():
                kept = [w for w in copy.recipients if w.key_id not in removing]
                if len(kept) != len(copy.recipients):
                    _replace(item, store, copy.model_copy(update={"recipients": kept}), identities, report)
    report.rewrapped = [item.what for item in items]
    return report


def _readable_copies(item: KeyedObject) -> dict[Store, KeyObject]:
    by_name = {s.name: s for s in item.stores}
    copies = {}
    for copy in read_key_copies(item.stores, item.object_key):
        if copy.key_object is not None:
            copies[by_name[copy.store]] = copy.key_object
        elif copy.problem != "missing":
            raise CatalogError(f"key object {copy.store}:{item.object_key}: {copy.problem}",
                               hint="backupd sync --verify replaces a bad copy from a good one; then rewrap again")
    if not copies:
        raise CatalogError(f"{item.what}: no store holds its key object {item.object_key}")
    return copies


def _missing(copies: dict[Store, KeyObject], add: list[Recipient]) -> bool:
    """Whether any copy lacks one of the recipients to add."""
    return any(r.key_id not in c.key_ids for c in copies.values() for r in add)


def _open(item: KeyedObject, identities: list[Identity]) -> DataKey:
    return open_key(item.stores, item.object_key, identities, what=item.what, expected_check=item.expected_check)


def _replace(item: KeyedObject, store: Store, new: KeyObject, identities: list[Identity],
             report: RewrapReport) -> None:
    """Write ``new`` over one store's copy, read it back and check it."""
    data = new.to_json()
    try:
        store.put(item.object_key, Payload.from_bytes(data))
        back = store.get(item.object_key)
    except StoreError as exc:
        report.problems.append(f"{item.what}: key object not rewritten in store {store.name}: {exc}")
        return
    if back != data:
        report.problems.append(f"{item.what}: store {store.name} returned another key object than the one written")
        return
    readback = KeyObject.from_json(back, origin=f"{store.name}:{item.object_key}")
    if readback.key_ids != new.key_ids:
        report.problems.append(f"{item.what}: store {store.name}: recipients read back differ")
        return
    if any(i.key_id in readback.key_ids for i in identities):
        readback.unwrap(identities, expected_check=item.expected_check)  # raises if the key is not the data key
    log.info("%s: key object in store %s now for %s", item.what, store.name, ", ".join(readback.key_ids))
