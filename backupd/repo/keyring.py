"""What a reader of encrypted data holds: its private keys, and the data keys they opened.

A ``KeyRing`` belongs to a restore target (``backupd.repo.repository.Target``): its stores are
where key objects are read from. ``require`` opens the data keys of every backup (and binlog
run) a restore will read before the target is touched, so a missing or wrong private key is an
exit-2 error naming the backup and its recipients, not a half-done restore. ``opener`` gives
``backupd.repo.fetch.PartFetcher`` the function that decrypts each verified part (a part that
does not authenticate is ``CorruptPart``, exit 3, naming it). Private keys are read from the
configuration only when an encrypted object is first met.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from backupd.errors import CorruptPart
from backupd.repo.binlogs import SegmentRecord
from backupd.repo.encryption import DataKey, DecryptionFailed, decrypt
from backupd.repo.fetch import Opener
from backupd.repo.keys import Identity, binlog_key_object_key, open_key
from backupd.repo.layout import key_object_key
from backupd.repo.model import Manifest, PartRecord
from backupd.stores.base import Store


class KeyRing:
    """Data keys opened with the configured private keys (module docstring)."""

    def __init__(self, stores: list[Store], identities: Callable[[], list[Identity]]):
        self._stores = stores
        self._identities_source = identities
        self._identities: list[Identity] | None = None
        self._keys: dict[str, DataKey] = {}
        self._lock = threading.Lock()

    def _opened(self, object_key: str, what: str, check: str) -> DataKey:
        with self._lock:
            key = self._keys.get(object_key)
            if key is None:
                if self._identities is None:
                    self._identities = self._identities_source()
                key = self._keys[object_key] = open_key(self._stores, object_key, self._identities, what=what,
                                                        expected_check=check)
            return key

    def backup_key(self, manifest: Manifest) -> DataKey:
        """The data key of an encrypted backup (``KeyUnavailable``, exit 2, if no private key opens it)."""
        assert manifest.encryption is not None
        return self._opened(key_object_key(manifest.shard, manifest.id), f"backup {manifest.id}",
                            manifest.encryption.key_check)

    def segment_key(self, record: SegmentRecord) -> DataKey:
        assert record.encryption is not None and record.key_run is not None
        return self._opened(binlog_key_object_key(record.shard, record.key_run),
                            f"binlog run {record.key_run} of shard {record.shard}", record.encryption.key_check)

    def require(self, manifests: Iterable[Manifest] = (), segments: Iterable[SegmentRecord] = ()) -> None:
        """Open every data key these need now (before anything is applied)."""
        for manifest in manifests:
            if manifest.encryption is not None:
                self.backup_key(manifest)
        for record in segments:
            if record.encryption is not None:
                self.segment_key(record)

    def opener(self, manifest: Manifest) -> Opener | None:
        """How to turn a verified part of ``manifest`` into its zstd frame (None: not encrypted)."""
        encryption = manifest.encryption
        if encryption is None:
            return None
        key = self.backup_key(manifest)

        def open_part(part: PartRecord, data: bytes) -> bytes:
            return _decrypted(data, key, part.key, encryption.chunk_size, f"part {part.key} of backup {manifest.id}")

        return open_part

    def segment_opener(self, records: list[SegmentRecord]) -> Opener | None:
        """The same for binlog segments (each has its run's key); None if none is encrypted."""
        encrypted = {r.object_key: r for r in records if r.encryption is not None}
        if not encrypted:
            return None

        def open_segment(part: PartRecord, data: bytes) -> bytes:
            record = encrypted.get(part.key)
            if record is None or record.encryption is None:
                return data
            return _decrypted(data, self.segment_key(record), part.key, record.encryption.chunk_size,
                              f"binlog segment {part.key}")

        return open_segment


def _decrypted(data: bytes, key: DataKey, associated: str, chunk_size: int, what: str) -> bytes:
    try:
        return decrypt(data, key, associated, chunk_size)
    except DecryptionFailed as exc:
        raise CorruptPart(f"{what} does not decrypt: {exc}") from None
