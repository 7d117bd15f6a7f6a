"""What the providers report of a stored copy, against what the manifest records.

Swift's ETag, and S3's for an object written in one request without SSE-KMS, is the MD5 of the
object's bytes, which the provider checked when it took them (backupd sends it: Swift's ``ETag``
header, S3's ``Content-MD5``) and keeps; S3 also keeps the ``ChecksumSHA256`` backupd sends with
every part (it refuses a body that does not match) and reports it to a HEAD. A part's manifest
record (format 5) holds its MD5 and sha256, so a copy can be checked with one HEAD, no download.
"""

from __future__ import annotations

import re

from backupd.repo.model import PartRecord
from backupd.stores.base import ObjectInfo, Store

MD5 = re.compile(r"^[0-9a-f]{32}$")


def has_provider_checksum(store: Store, part: PartRecord) -> bool:
    """Whether a HEAD of ``part`` in ``store`` can tell a good copy from a bad one."""
    return bool((store.properties.etag_is_md5 and part.md5) or store.properties.head_sha256)


def provider_mismatch(store: Store, part: PartRecord, info: ObjectInfo) -> str | None:
    """How the provider's checksum of a copy differs from the manifest's record (None: it does
    not, or there is nothing to compare: a part from before format 5 has no MD5)."""
    if store.properties.etag_is_md5 and part.md5 and info.etag and MD5.match(info.etag) and info.etag != part.md5:
        return f"the provider's MD5 (ETag) is {info.etag}, the manifest's {part.md5}: the object was rewritten"
    if info.sha256 and info.sha256 != part.sha256:
        return f"the provider's sha256 is {info.sha256[:16]}..., the manifest's {part.sha256[:16]}...: the " \
               "object was rewritten"
    if info.size != part.size:
        return f"the provider serves {info.size} bytes, the manifest says {part.size}"
    return None


