"""The storage contract every store implements (local, S3, Swift, Cloud Files).

A store only moves named bytes; it knows nothing about backups (restic's backend layer). Keys are
``/``-separated and relative (``layout`` builds them); a store maps them under its own prefix.

Contract, for every implementation:
- ``put`` stores the payload under the key; readers see either the old object or the whole new
  one, never a part (overwrite replaces). It may be retried: it rewinds the payload itself.
- ``open`` returns a binary stream of the object; ``get`` the whole object. Both raise
  ``ObjectNotFound`` for a missing key.
- ``stat`` returns size (and the store's etag when it has one) or raises ``ObjectNotFound``.
- ``list(prefix)`` yields every object whose key starts with ``prefix``, sorted by key; a prefix
  with no objects lists empty (never an error); in-progress uploads are never listed.
- ``put_if_absent`` creates the object only if no object has the key, atomically against
  concurrent creators (exactly one of several racing callers gets True); False means the key
  exists. A retried attempt whose first try did succeed may report False: callers that must
  know read the object back (``backupd.backup.lease`` does).
- ``delete`` removes the object; deleting a missing key is not an error.
- Failures raise ``TransientStoreError`` (worth retrying) or ``PermanentStoreError``.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Protocol, Self

from backupd.errors import TransientStoreError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


@dataclass(frozen=True)
class ObjectInfo:
    """An object as a listing or a HEAD shows it: its size and what the provider reports of its
    content (``etag``; ``sha256``, hex: a checksum the provider verified at upload, from a HEAD
    where the provider keeps one, such as S3's ``ChecksumSHA256``)."""

    key: str
    size: int
    etag: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class StoreProperties:
    """What a store can do, as data rather than ``if`` branches (restic's ``Properties``)."""

    connections: int = 4
    max_object_size: int = 5 * 1024**3
    # put_if_absent is atomic against racing creators (local files, S3). Swift checks
    # If-None-Match before writing, so two creators racing within milliseconds may both win.
    atomic_create: bool = True
    # The ETag the provider lists and HEADs is the MD5 of the object's bytes, which it checked at
    # upload (Swift always; S3 for an object written in one request without SSE-KMS): a
    # checksum of every copy that costs no download (the quick audit's provider check).
    etag_is_md5: bool = False
    # A HEAD reports a checksum the provider verified at upload (``ObjectInfo.sha256``: S3's
    # ChecksumSHA256), so one is worth asking for even where the ETag is not an MD5.
    head_sha256: bool = False


class Payload:
    """Bytes held as a list of chunks (no joining copy), readable any number of times. Its MD5
    and sha256 are computed once, when first asked (``sha256`` may be given by whoever already
    hashed the bytes)."""

    def __init__(self, chunks: Sequence[bytes], *, sha256: str | None = None):
        self.chunks = list(chunks)
        self.size = sum(len(c) for c in self.chunks)
        self._sha256 = sha256
        self._md5: str | None = None
        self._digesting = threading.Lock()  # the upload threads of several stores may ask at once

    @classmethod
    def from_bytes(cls, data: bytes) -> Payload:
        return cls([data])

    def reader(self) -> BinaryIO:
        """A fresh file-like reader positioned at the start."""
        return io.BufferedReader(_ChunkReader(self.chunks), buffer_size=1024 * 1024)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def md5(self) -> str:
        """MD5 of the bytes, hex (what S3's Content-MD5 and Swift's ETag check)."""
        with self._digesting:
            if self._md5 is None:
                digest = hashlib.md5(usedforsecurity=False)
                for chunk in self:
                    digest.update(chunk)
                self._md5 = digest.hexdigest()
            return self._md5

    def sha256(self) -> str:
        """sha256 of the bytes, hex (what a manifest records; S3's ChecksumSHA256 checks it)."""
        with self._digesting:
            if self._sha256 is None:
                digest = hashlib.sha256()
                for chunk in self:
                    digest.update(chunk)
                self._sha256 = digest.hexdigest()
            return self._sha256

    def to_bytes(self) -> bytes:
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)


class _ChunkReader(io.RawIOBase):
    """A seekable raw reader over a list of byte chunks (SDKs rewind bodies to retry or hash)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = [memoryview(c) for c in chunks if len(c)]
        self._starts = []
        total = 0
        for chunk in self._chunks:
            self._starts.append(total)
            total += len(chunk)
        self._size = total
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def close(self) -> None:
        # SDKs may keep the request body (and so this reader) alive after the upload: drop the
        # part's bytes now so memory stays bounded by the parts actually in flight.
        self._chunks, self._starts, self._size = [], [], 0
        super().close()

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._pos >= self._size:
            return 0
        index = bisect.bisect_right(self._starts, self._pos) - 1
        chunk = self._chunks[index]
        offset = self._pos - self._starts[index]
        target = memoryview(buffer).cast("B")
        n = min(len(target), len(chunk) - offset)
        target[:n] = chunk[offset:offset + n]
        self._pos += n
        return n


READ_CHUNK = 1024 * 1024


class ObjectStream(Protocol):
    """What ``Store.open`` returns: an object's bytes as a stream, closed by ``with``."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None, /) -> None: ...


class Store(ABC):
    """Abstract base for stores; see the module docstring for the contract."""

    name: str
    properties: StoreProperties = StoreProperties()

    @abstractmethod
    def put(self, key: str, payload: Payload) -> None: ...

    @abstractmethod
    def put_if_absent(self, key: str, payload: Payload) -> bool: ...

    @abstractmethod
    def open(self, key: str) -> ObjectStream: ...

    def get(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def describe(self) -> str:
        """A short human description (type and location) for messages."""
        return self.name

    def _read_whole(self, stream: ObjectStream, length: int, key: str) -> bytes:
        """Read exactly ``length`` bytes of ``key`` into one preallocated buffer (no
        list-and-join copy); a body that ends early or runs long is a transient error."""
        buffer = bytearray(length)
        view = memoryview(buffer)
        done = 0
        while done < length:
            chunk = stream.read(min(READ_CHUNK, length - done))
            if not chunk:
                break
            view[done:done + len(chunk)] = chunk
            done += len(chunk)
        if done < length or stream.read(1):
            raise TransientStoreError(f"store {self.name}: object {key} is not the {length} bytes "
                                      f"its headers announced ({done} read)", store=self.name, key=key)
        # A bytearray where bytes are promised: every reader takes any bytes-like object, and
        # bytes(buffer) would copy a part of up to part_size once more.
        return buffer  # type: ignore[return-value]
