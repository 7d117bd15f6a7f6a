"""Authenticated encryption of stored parts and binlog segments: libsodium's secretstream.

A backup (or a binlog archiver's run) has one random 256-bit data key. Every object of data it
stores is one secretstream (XChaCha20-Poly1305, ``crypto_secretstream_xchacha20poly1305`` via
PyNaCl, the construction WAL-G uses): a 24-byte header, then messages of ``chunk_size`` bytes
of the zstd frame each (the last one shorter, possibly empty), each followed by its 17 bytes of
authentication and tag::

    header(24) | E(chunk 1)+17 | E(chunk 2)+17 | ... | E(last chunk, TAG_FINAL)+17

What that gives:

- every chunk is authenticated before a byte of it is handed on (so before zstd or a server
  sees it); a flipped bit anywhere fails its chunk;
- reordered or dropped chunks fail (the stream's state chains them), a truncated object fails
  (its last message is not the FINAL one), bytes after the FINAL message fail;
- each object is its own stream, decryptable alone (restores fetch parts independently);
- every message carries the object's key (``shard/backup/part-000007.zst``) as associated data,
  so a part moved to another position or another backup fails even under the same data key.

The parts' sha256 and MD5 in the manifest are of the stored (encrypted) bytes: integrity checks,
audits and sync work on ciphertext without any key. ``key_check`` commits to the data key (a
keyed BLAKE2b of a constant), so an unwrapped key is known right or wrong before it is used.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator

from nacl import bindings

CIPHER = "xchacha20poly1305-secretstream"
CHUNK_SIZE = 1024 * 1024  # bytes of the zstd frame per message
HEADER_BYTES: int = bindings.crypto_secretstream_xchacha20poly1305_HEADERBYTES
OVERHEAD_BYTES: int = bindings.crypto_secretstream_xchacha20poly1305_ABYTES
KEY_BYTES: int = bindings.crypto_secretstream_xchacha20poly1305_KEYBYTES
_TAG_MESSAGE: int = bindings.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL: int = bindings.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_KEY_CHECK_CONTEXT = b"backupd data key check v1"


class DecryptionFailed(Exception):
    """An encrypted object does not authenticate under its data key (tampered, truncated,
    reordered, moved from elsewhere) or is not one secretstream."""


class DataKey:
    """A backup's (or a binlog run's) 256-bit data key; never printed."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes):
        if len(key) != KEY_BYTES:
            raise ValueError(f"a data key is {KEY_BYTES} bytes, not {len(key)}")
        self._key = key

    @classmethod
    def generate(cls) -> DataKey:
        return cls(bindings.crypto_secretstream_xchacha20poly1305_keygen())

    def reveal(self) -> bytes:
        return self._key

    @property
    def check(self) -> str:
        """A commitment to the key (hex): equal checks mean the same key."""
        return hashlib.blake2b(_KEY_CHECK_CONTEXT, key=self._key, digest_size=16).hexdigest()

    def matches(self, check: str) -> bool:
        return hmac.compare_digest(self.check, check)

    def __repr__(self) -> str:
        return "DataKey('**redacted**')"


class StreamEncryptor:
    """Encrypts one object as it is written: ``update`` returns the ciphertext ready so far
    (the header first), ``finish`` the rest; at most ``chunk_size`` bytes are buffered."""

    def __init__(self, key: DataKey, associated: str, chunk_size: int = CHUNK_SIZE):
        self._state = bindings.crypto_secretstream_xchacha20poly1305_state()
        self._header: bytes | None = bindings.crypto_secretstream_xchacha20poly1305_init_push(
            self._state, key.reveal())
        self._ad = associated.encode("utf-8")
        self._chunk = chunk_size
        self._buffer = bytearray()

    def _take_header(self) -> list[bytes]:
        header, self._header = self._header, None
        return [header] if header is not None else []

    def update(self, data: bytes) -> bytes:
        out = self._take_header()
        self._buffer += data
        if len(self._buffer) > self._chunk:  # strictly more: the FINAL message is never empty by choice
            view, offset = memoryview(self._buffer), 0
            while len(self._buffer) - offset > self._chunk:
                out.append(bindings.crypto_secretstream_xchacha20poly1305_push(
                    self._state, bytes(view[offset:offset + self._chunk]), self._ad, _TAG_MESSAGE))
                offset += self._chunk
            view.release()
            del self._buffer[:offset]
        return b"".join(out)

    def finish(self) -> bytes:
        out = self._take_header()
        out.append(bindings.crypto_secretstream_xchacha20poly1305_push(
            self._state, bytes(self._buffer), self._ad, _TAG_FINAL))
        self._buffer.clear()
        return b"".join(out)


def encrypt(data: bytes, key: DataKey, associated: str, chunk_size: int = CHUNK_SIZE) -> bytes:
    """One whole object at once (binlog segments, small objects)."""
    encryptor = StreamEncryptor(key, associated, chunk_size)
    return encryptor.update(data) + encryptor.finish()


def encrypted_size(size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """The stored size of ``size`` bytes of plaintext."""
    messages = max(1, -(-size // chunk_size))
    return HEADER_BYTES + size + messages * OVERHEAD_BYTES


def decrypt_chunks(data: bytes | memoryview, key: DataKey, associated: str,
                   chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield the plaintext of one stored object chunk by chunk, each only once it has
    authenticated; raises ``DecryptionFailed`` at the first chunk that does not (module
    docstring), or when the stream is truncated or has bytes after its end."""
    view = memoryview(data)
    if len(view) < HEADER_BYTES + OVERHEAD_BYTES:
        raise DecryptionFailed(f"{len(view)} bytes is too short for an encrypted object")
    state = bindings.crypto_secretstream_xchacha20poly1305_state()
    try:
        bindings.crypto_secretstream_xchacha20poly1305_init_pull(state, bytes(view[:HEADER_BYTES]), key.reveal())
    except Exception as exc:  # libsodium refuses the header
        raise DecryptionFailed(f"bad stream header: {exc}") from None
    ad = associated.encode("utf-8")
    offset, step = HEADER_BYTES, chunk_size + OVERHEAD_BYTES
    while offset < len(view):
        message = bytes(view[offset:offset + step])
        offset += len(message)
        try:
            plain, tag = bindings.crypto_secretstream_xchacha20poly1305_pull(state, message, ad)
        except Exception:  # nacl.exceptions.RuntimeError: the message does not authenticate
            raise DecryptionFailed(f"chunk at byte {offset - len(message)} does not authenticate "
                                   "(altered, reordered, or from another object or key)") from None
        if tag == _TAG_FINAL:
            if offset != len(view):
                raise DecryptionFailed(f"{len(view) - offset} bytes after the end of the encrypted stream")
            if plain:
                yield plain
            return
        yield plain
    raise DecryptionFailed("the encrypted stream is truncated (its final chunk is missing)")


def decrypt(data: bytes | memoryview, key: DataKey, associated: str, chunk_size: int = CHUNK_SIZE) -> bytes:
    """The whole plaintext of one object, every chunk authenticated (``decrypt_chunks``)."""
    return b"".join(decrypt_chunks(data, key, associated, chunk_size))
