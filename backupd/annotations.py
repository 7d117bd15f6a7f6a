"""Annotations: later facts about a backup (drill results, audits), stored next to it.

``<shard>/<backup_id>/annotations/<name>.json`` (``backupd.layout.annotation_key``). The manifest
is immutable; annotations are written after the fact and are best effort (a store that refuses
one is logged, never fatal). Names end in a UTC time (``drill-20261202T080000Z``), so the newest
sorts last.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from backupd import __version__
from backupd.errors import StoreError
from backupd.layout import annotation_key, parse_key, shard_prefix
from backupd.stores.base import Payload, Store

log = logging.getLogger(__name__)


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
