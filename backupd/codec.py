"""zstd framing of the backup stream into parts, and decoding of one part.

Every part is one independent zstd frame with the content checksum on, so any part can be
decoded and checked on its own. Parts are cut by compressed size: a frame is finished once its
output reaches about ``part_size`` (a part may exceed it by what the compressor still held, a
few MiB at most for multi-threaded compression).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import zstandard

from backupd.stores.base import Payload

# Below this part size, compress in the calling thread: zstd's worker jobs are MiBs long and
# would make parts far larger than asked for.
_MIN_PART_SIZE_FOR_THREADS = 8 * 1024 * 1024
_DECODE_INPUT_CHUNK = 1024 * 1024


class PartDecodeError(Exception):
    """The part is not exactly one valid, complete zstd frame."""


@dataclass(frozen=True)
class CompressedPart:
    """A finished part: one zstd frame, its sha256 and sizes (``index`` is 1-based)."""

    index: int
    payload: Payload
    raw_size: int
    sha256: str

    @property
    def size(self) -> int:
        return self.payload.size


class PartCompressor:
    """Compresses a stream into parts.

    ``write(data)`` returns the parts it finished (usually none); ``finish()`` returns the last
    one. Memory held is one part's compressed bytes plus the compressor's own buffers.
    """

    def __init__(self, part_size: int, level: int = 3, threads: int = 2):
        self.part_size = part_size
        self._threshold = part_size - min(part_size // 16, 4 * 1024 * 1024)
        threads = threads if part_size >= _MIN_PART_SIZE_FOR_THREADS else 0
        self._cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True,
                                              write_content_size=False)
        self._frame: zstandard.ZstdCompressionObj | None = None
        self._next_index = 1
        self._reset()

    def _reset(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._raw = 0
        self._hash = hashlib.sha256()

    def _append(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._size += len(data)
            self._hash.update(data)

    def write(self, data: bytes) -> list[CompressedPart]:
        if not data:
            return []
        if self._frame is None:
            self._frame = self._cctx.compressobj()
        self._append(self._frame.compress(data))
        self._raw += len(data)
        return [self._close()] if self._size >= self._threshold else []

    def finish(self) -> list[CompressedPart]:
        """Finish the stream; an empty stream still yields one (empty) part."""
        if self._frame is None and self._next_index > 1:
            return []
        if self._frame is None:
            self._frame = self._cctx.compressobj()
        return [self._close()]

    def _close(self) -> CompressedPart:
        assert self._frame is not None
        self._append(self._frame.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))
        part = CompressedPart(self._next_index, Payload(self._chunks), self._raw,
                              self._hash.hexdigest())
        self._next_index += 1
        self._frame = None
        self._reset()
        return part


def decode_part(data: bytes | memoryview) -> Iterator[bytes]:
    """Yield the decompressed bytes of a part, in pieces of bounded size.

    Raises ``PartDecodeError`` if the data is not exactly one complete frame or its content
    checksum fails. Bytes already yielded came before the fault: callers that must not act on
    an unverified part verify its sha256 first (the restore path does).
    """
    view = memoryview(data)
    decoder = zstandard.ZstdDecompressor().decompressobj()
    try:
        for offset in range(0, len(view), _DECODE_INPUT_CHUNK):
            if decoder.eof:
                raise PartDecodeError("trailing bytes after the zstd frame")
            out = decoder.decompress(view[offset:offset + _DECODE_INPUT_CHUNK])
            if out:
                yield out
    except zstandard.ZstdError as exc:
        raise PartDecodeError(f"zstd: {exc}") from None
    if not decoder.eof:
        raise PartDecodeError("the zstd frame is truncated")
    if decoder.unused_data:
        raise PartDecodeError("trailing bytes after the zstd frame")
