import hashlib
import os
import random

import pytest
import zstandard

from backupd.repo.codec import PartCompressor, PartDecodeError, decode_part


def compress_all(data: bytes, part_size: int, chunk: int = 50_000, threads: int = 0):
    compressor = PartCompressor(part_size, level=3, threads=threads)
    parts = []
    for offset in range(0, len(data), chunk):
        parts += compressor.write(data[offset:offset + chunk])
    parts += compressor.finish()
    return parts


def sample(size: int) -> bytes:
    rng = random.Random(7)
    words = [os.urandom(rng.randrange(2, 12)).hex() for _ in range(5000)]
    out = bytearray()
    while len(out) < size:
        out += (" ".join(rng.choice(words) for _ in range(50)) + "\n").encode()
    return bytes(out[:size])


def test_parts_are_independent_frames_of_about_part_size():
    data = sample(3 * 1024 * 1024)
    parts = compress_all(data, 128 * 1024)
    assert len(parts) > 3
    assert [p.index for p in parts] == list(range(1, len(parts) + 1))
    for part in parts[:-1]:
        assert 128 * 1024 * 0.9 <= part.size <= 128 * 1024 * 1.5
    assert sum(p.raw_size for p in parts) == len(data)
    restored = b""
    for part in parts:
        blob = part.payload.to_bytes()
        assert hashlib.sha256(blob).hexdigest() == part.sha256
        assert len(blob) == part.size
        # every part decodes on its own, and carries zstd's content checksum
        params = zstandard.get_frame_parameters(blob)
        assert params.has_checksum
        restored += b"".join(decode_part(blob))
    assert restored == data


def test_threaded_compression_round_trips():
    # hex of random bytes compresses ~2x: several 8 MiB parts, each finished in the background
    data = os.urandom(40 * 1024 * 1024).hex().encode()
    parts = compress_all(data, 8 * 1024 * 1024, chunk=1024 * 1024, threads=2)
    assert len(parts) >= 2  # part 1 was finished in the background while part 2 was built
    assert [p.index for p in parts] == list(range(1, len(parts) + 1))
    assert all(hashlib.sha256(p.payload.to_bytes()).hexdigest() == p.sha256 for p in parts)
    assert b"".join(b"".join(decode_part(p.payload.to_bytes())) for p in parts) == data


def test_empty_stream_yields_one_empty_part():
    parts = compress_all(b"", 1024 * 1024)
    assert len(parts) == 1 and parts[0].raw_size == 0
    assert b"".join(decode_part(parts[0].payload.to_bytes())) == b""


def test_payload_reader_reads_all_chunks():
    parts = compress_all(sample(400_000), 64 * 1024)
    payload = parts[0].payload
    assert payload.reader().read() == payload.to_bytes()
    assert payload.reader().read() == payload.to_bytes()  # re-readable


@pytest.mark.parametrize("damage", ["truncate", "flip", "trailing", "two_frames"])
def test_damaged_parts_are_refused(damage):
    blob = compress_all(sample(300_000), 1024 * 1024)[0].payload.to_bytes()
    if damage == "truncate":
        blob = blob[:-7]
    elif damage == "flip":
        mutable = bytearray(blob)
        mutable[len(mutable) // 2] ^= 0x40
        blob = bytes(mutable)
    elif damage == "trailing":
        blob = blob + b"\0"
    else:
        blob = blob + blob
    with pytest.raises(PartDecodeError):
        b"".join(decode_part(blob))


def test_payload_reader_seeks():
    from backupd.stores.base import Payload
    payload = Payload([b"abc", b"", b"defgh", b"ij"])
    reader = payload.reader()
    assert reader.read(4) == b"abcd"
    reader.seek(0)
    assert reader.read() == b"abcdefghij"
    reader.seek(-3, 2)
    assert reader.tell() == 7 and reader.read() == b"hij"
    reader.seek(5)
    assert reader.read(2) == b"fg"
