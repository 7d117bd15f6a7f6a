"""Metadata that checks itself: a JSON document carrying the sha256 of its own canonical content.

Parts are checked by the sha256 their manifest records; the manifest itself (and every other
metadata object: segment records, the archive's position, annotations) has nothing above it to
record its digest, so it carries its own. ``seal`` adds ``content_sha256``: the sha256 of the
document without that key, serialised canonically (keys sorted, no whitespace, UTF-8).
``unseal`` recomputes it: a copy whose content does not match (a flipped byte that still parses,
an edited field) is ``SealBroken`` and is read like garbage: the next store's copy is used.

Canonical means reproducible by this code from the parsed document (Python's ``json`` writes
the floats it reads back identically), not a cross-language standard: only backupd reads these.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from backupd.errors import CatalogError

SEAL_KEY = "content_sha256"


class SealBroken(CatalogError):
    """A document's ``content_sha256`` does not match its content: it was altered after writing."""


def content_digest(document: dict[str, Any]) -> str:
    """The sha256 (hex) of ``document``'s canonical form, its own seal left out."""
    body = {k: v for k, v in document.items() if k != SEAL_KEY}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def seal(document: dict[str, Any], *, indent: int | None = 2) -> bytes:
    """``document`` with its seal, as stored (UTF-8 JSON, a final newline)."""
    sealed = {**{k: v for k, v in document.items() if k != SEAL_KEY}, SEAL_KEY: content_digest(document)}
    return json.dumps(sealed, indent=indent, ensure_ascii=False).encode("utf-8") + b"\n"


def parse_json(data: bytes, *, what: str) -> dict[str, Any]:
    """A stored JSON object; ``CatalogError`` naming ``what`` when it is not one."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CatalogError(f"{what} is not a JSON object")
    return document


def unseal(document: dict[str, Any], *, what: str, required: bool) -> dict[str, Any]:
    """``document`` without its seal, once the seal is checked. Raises ``SealBroken`` when it
    does not match, or when it is ``required`` and absent (a sealed format with the key gone)."""
    recorded = document.get(SEAL_KEY)
    if recorded is None:
        if required:
            raise SealBroken(f"{what} has no {SEAL_KEY}: it cannot be checked, so it is not trusted")
        return document
    actual = content_digest(document)
    if recorded != actual:
        raise SealBroken(f"{what} fails its self-check: its content has sha256 {actual[:12]}..., it records "
                         f"{str(recorded)[:12]}...: it was altered after it was written")
    return {k: v for k, v in document.items() if k != SEAL_KEY}
