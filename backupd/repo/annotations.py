"""Annotations: later facts about a backup (drill results, audits), stored next to it.

``<shard>/<backup_id>/annotations/<name>.json`` (``backupd.repo.layout.annotation_key``). The manifest
is immutable; annotations are written after the fact and are best effort (a store that refuses
one is logged, never fatal). Each is sealed (``backupd.repo.sealed``): an altered one is skipped
as unreadable. Names are a kind's prefix followed by a UTC stamp
(``drill-20261202T080000Z``, ``backupd.repo.layout.format_id_time``), so the newest sorts last.
The daemon and ``backupd status`` read the newest of each kind to know when it last ran.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from backupd import __version__
from backupd.errors import CatalogError, StoreError
from backupd.repo.layout import annotation_key, parse_key, shard_prefix
from backupd.repo.sealed import parse_json, seal, unseal
from backupd.stores.base import Payload, Store

log = logging.getLogger(__name__)

AUDIT_ANNOTATION = "audit-"                       # + level + "-" + stamp
DEEP_AUDIT_ANNOTATION = f"{AUDIT_ANNOTATION}deep-"
# what may say a store holds a shard's backups whole: a quick or deep audit, or a sync --verify
VERDICT_ANNOTATIONS = [f"{AUDIT_ANNOTATION}quick-", DEEP_AUDIT_ANNOTATION, f"{AUDIT_ANNOTATION}sync-"]
DRILL_ANNOTATION = "drill-"                       # + stamp


@dataclass(frozen=True)
class DrillRecord:
    """The outcome of one restore drill of a shard (an annotation of the backup it restored,
    and what ``backupd audit --level drill --json`` prints for it)."""

    shard: str
    target: str
    at: str                  # stamp of when it started (``format_id_time``)
    backup: str | None       # the backup restored (None: the drill found nothing to restore)
    chain: list[str]         # the ids applied, a full first
    verified: bool
    seconds: float
    failure: str | None = None
    exit_code: int = 0       # what the restore exited with: 3 means the backup is at fault

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> DrillRecord:
        """Raises ``ValueError`` if ``document`` is not a drill record."""
        try:
            return cls(shard=str(document["shard"]), target=str(document["target"]), at=str(document["at"]),
                       backup=document.get("backup"), chain=[str(c) for c in document["chain"]],
                       verified=bool(document["verified"]), seconds=float(document["seconds"]),
                       failure=document.get("failure"), exit_code=int(document.get("exit_code", 0)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a drill record: {exc!r}") from None


def annotate(stores: list[Store], shard: str, backup_id: str, name: str, document: dict[str, Any]) -> None:
    """Write ``document`` as annotation ``name`` of a backup, in every store given (best effort)."""
    document = {**document, "backupd": __version__}
    payload = Payload.from_bytes(seal(document))
    for store in stores:
        try:
            store.put(annotation_key(shard, backup_id, name), payload)
        except StoreError as exc:
            log.warning("shard %s: annotation %s not recorded in store %s: %s", shard, name, store.name, exc)


def last_annotations(stores: list[Store], shard: str, prefixes: list[str]) -> dict[str, dict[str, Any] | None]:
    """For each prefix, the newest annotation named ``<prefix><time>`` of the shard's backups
    (None if there is none), from one listing of the first store that can be listed."""
    newest: dict[str, dict[str, Any] | None] = {prefix: None for prefix in prefixes}
    for store in stores:
        try:
            keys = [i.key for i in store.list(shard_prefix(shard))]
        except StoreError:
            continue
        for prefix in prefixes:
            found = sorted((parsed.name, key) for key in keys
                           if (parsed := parse_key(key)) and parsed.kind == "annotation"
                           and parsed.name.startswith(prefix))
            if found:
                key = found[-1][1]
                try:
                    newest[prefix] = read_annotation(store.get(key), f"{store.name}:{key}")
                except (StoreError, CatalogError) as exc:
                    log.warning("shard %s: annotation %s:%s is unreadable: %s", shard, store.name, key, exc)
        break
    return newest


def read_annotation(data: bytes, origin: str) -> dict[str, Any]:
    """A stored annotation, its seal checked (one written before seals has none: read as is)."""
    what = f"annotation {origin}"
    return unseal(parse_json(data, what=what), what=what, required=False)


@dataclass(frozen=True)
class StoreVerdict:
    """What the newest audit (or ``sync --verify``) that looked at a store found there."""

    store: str
    at: str                  # its stamp
    level: str               # quick, deep, sync
    checks: list[str]        # the checks that found something in the store (empty: it is whole)
    backups: dict[str, list[str]]  # per backup id, the checks that found something there

    def describe(self, checks: list[str] | None = None) -> str:
        """``suspect (audit 20261206T080000Z: part-corrupt, part-missing)``, or ``complete``: for
        the store, or with ``checks`` for one backup's copy there (``backups``)."""
        found = self.checks if checks is None else checks
        if not found:
            return "complete"
        return f"suspect ({'sync' if self.level == 'sync' else 'audit'} {self.at}: {', '.join(found)})"


def store_verdicts(stores: list[Store], shard: str) -> dict[str, StoreVerdict]:
    """Per store, the verdict of the newest audit or verifying sync that covered it (a store
    none covered is absent)."""
    found = last_annotations(stores, shard, VERDICT_ANNOTATIONS)
    verdicts: dict[str, StoreVerdict] = {}
    for document in sorted((d for d in found.values() if d), key=lambda d: str(d.get("at", ""))):
        for name, checks in dict(document.get("stores") or {}).items():
            backups = {str(b): list(by_store.get(name, [])) for b, by_store in
                       dict(document.get("backups") or {}).items() if by_store.get(name)}
            verdicts[str(name)] = StoreVerdict(str(name), str(document.get("at", "")), str(document.get("level")),
                                               sorted(str(c) for c in checks), backups)
    return verdicts
