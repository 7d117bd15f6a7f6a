"""Annotations: later facts about a backup (drill results, audits), stored next to it.

``<shard>/<backup_id>/annotations/<name>.json`` (``backupd.repo.layout.annotation_key``). The manifest
is immutable; annotations are written after the fact and are best effort (a store that refuses
one is logged, never fatal). Names are a kind's prefix followed by a UTC stamp
(``drill-20261202T080000Z``, ``backupd.repo.layout.format_id_time``), so the newest sorts last.
The daemon and ``backupd status`` read the newest of each kind to know when it last ran.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from backupd import __version__
from backupd.errors import StoreError
from backupd.repo.layout import annotation_key, parse_key, shard_prefix
from backupd.stores.base import Payload, Store

log = logging.getLogger(__name__)

AUDIT_ANNOTATION = "audit-"                       # + level + "-" + stamp
DEEP_AUDIT_ANNOTATION = f"{AUDIT_ANNOTATION}deep-"
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
    payload = Payload.from_bytes(json.dumps(document, indent=2).encode() + b"\n")
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
                try:
                    newest[prefix] = dict(json.loads(store.get(found[-1][1])))
                except (StoreError, ValueError):
                    pass
        break
    return newest
