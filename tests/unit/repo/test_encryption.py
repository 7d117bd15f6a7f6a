"""Client-side encryption: the secretstream framing of parts and the key objects (pure logic)."""

from __future__ import annotations

import json
import random

import pytest
import zstandard

from backupd.errors import CatalogError
from backupd.repo.codec import PartCompressor, decode_part
from backupd.repo.encryption import (
    HEADER_BYTES,
    OVERHEAD_BYTES,
    DataKey,
    DecryptionFailed,
    StreamEncryptor,
    decrypt,
    encrypt,
    encrypted_size,
)
from backupd.repo.keys import (
    BadKey,
    Identity,
    KeyObject,
    KeyUnavailable,
    Recipient,
    key_copy_problem,
    parse_identities,
)
from backupd.repo.sealed import SealBroken

CHUNK = 4096


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK, 5 * CHUNK + 17])
def test_round_trip_of_every_size_streamed_in_odd_pieces(size):
    key, data = DataKey.generate(), bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    encryptor = StreamEncryptor(key, "1/b/part-000001.zst", CHUNK)
    stored = b"".join(encryptor.update(data[i:i + 1000]) for i in range(0, len(data), 1000)) + encryptor.finish()
    assert len(stored) == encrypted_size(size, CHUNK)
    assert decrypt(stored, key, "1/b/part-000001.zst", CHUNK) == data
    assert size < 64 or data[:64] not in stored


def chunks_of(stored: bytes) -> list[bytes]:
    body = stored[HEADER_BYTES:]
    step = CHUNK + OVERHEAD_BYTES
    return [body[i:i + step] for i in range(0, len(body), step)]


@pytest.mark.parametrize("tamper,match", [
    (lambda s: s[:100] + bytes([s[100] ^ 1]) + s[101:], "does not authenticate"),      # a flipped bit
    (lambda s: s[:-1], "does not authenticate"),                                        # a cut last chunk
    (lambda s: s[:HEADER_BYTES] + b"".join(chunks_of(s)[:2]), "truncated"),              # whole chunks dropped
    (lambda s: s[:HEADER_BYTES] + b"".join([chunks_of(s)[1], chunks_of(s)[0], *chunks_of(s)[2:]]),
     "does not authenticate"),                                                           # reordered
    (lambda s: s + b"x" * 40, "does not authenticate|after the end"),                    # bytes appended
    (lambda s: s[:10], "too short"),
])
def test_any_change_to_the_stored_bytes_fails(tamper, match):
    key = DataKey.generate()
    stored = encrypt(b"row data " * 2000, key, "k", CHUNK)
    with pytest.raises(DecryptionFailed, match=match):
        decrypt(tamper(stored), key, "k", CHUNK)


def test_an_object_moved_to_another_key_or_backup_fails():
    key = DataKey.generate()
    stored = encrypt(b"part seven", key, "1/20261206T000000Z-full-aaaaaa/part-000007.zst")
    with pytest.raises(DecryptionFailed):  # the same backup, another position
        decrypt(stored, key, "1/20261206T000000Z-full-aaaaaa/part-000008.zst")
    with pytest.raises(DecryptionFailed):  # another backup's key
        decrypt(stored, DataKey.generate(), "1/20261206T000000Z-full-aaaaaa/part-000007.zst")


def test_compressed_parts_are_encrypted_as_they_are_cut_and_open_back_to_the_stream():
    key = DataKey.generate()
    compressor = PartCompressor(64 * 1024, threads=0, sealer=lambda i: StreamEncryptor(key, f"p{i}", CHUNK))
    rng = random.Random(7)
    lines = [f"INSERT INTO t VALUES ({i}, '{rng.getrandbits(64):x}');\n".encode() for i in range(40000)]
    raw = b"".join(lines)
    parts = [p for i in range(0, len(lines), 1000) for p in compressor.write(b"".join(lines[i:i + 1000]))]
    parts += compressor.finish()
    assert len(parts) > 1
    out = b""
    for part in parts:
        stored = b"".join(part.payload)
        with pytest.raises(zstandard.ZstdError):
            zstandard.ZstdDecompressor().decompress(stored)  # ciphertext is no zstd frame
        out += b"".join(decode_part(decrypt(stored, key, f"p{part.index}", CHUNK)))
    assert out == raw


def test_key_objects_open_for_their_recipients_only_and_name_them():
    alice, bob, eve = Identity.generate(), Identity.generate(), Identity.generate()
    key = DataKey.generate()
    wrapped = KeyObject.wrap(key, [alice.recipient, bob.recipient], scope="backup", shard="7", owner="B1")
    stored = KeyObject.from_json(wrapped.to_json(), origin="s3:7/B1/key.json")
    assert stored.unwrap([bob]).reveal() == key.reveal()
    assert stored.unwrap([eve, alice], expected_check=key.check).reveal() == key.reveal()
    with pytest.raises(KeyUnavailable) as refused:
        stored.unwrap([eve])
    assert alice.key_id in refused.value.message and bob.key_id in refused.value.message
    assert eve.key_id in refused.value.message and "backup B1" in refused.value.message
    with pytest.raises(KeyUnavailable, match="given: none"):
        stored.unwrap([])
    with pytest.raises(CatalogError, match="not the one the data was encrypted with"):
        stored.unwrap([alice], expected_check=DataKey.generate().check)
    assert key.reveal().hex() not in wrapped.to_json().decode()


def test_an_altered_key_object_is_refused_and_a_substituted_key_is_named():
    alice = Identity.generate()
    key = DataKey.generate()
    document = json.loads(KeyObject.wrap(key, [alice.recipient], scope="backup", shard="7", owner="B1").to_json())
    document["recipients"][0]["key_id"] = "0" * 16
    with pytest.raises(SealBroken):
        KeyObject.from_json(json.dumps(document).encode(), origin="x")
    other = KeyObject.wrap(DataKey.generate(), [alice.recipient], scope="backup", shard="7", owner="B1").to_json()
    assert key_copy_problem(other, "x", key.check) == "it wraps another data key than the manifest names"
    assert key_copy_problem(b"{", "x", key.check) is not None


def test_key_texts_round_trip_and_bad_ones_are_named():
    identity = Identity.generate()
    assert Recipient.parse(identity.recipient.text).key_id == identity.key_id
    [parsed] = parse_identities(f"# comment\n\n{identity.secret_text}\n", what="key.file")
    assert parsed.key_id == identity.key_id and identity.secret_text not in repr(parsed)
    with pytest.raises(BadKey, match="key.file: line 2 is not a backupd private key"):
        parse_identities(f"# ok\n{identity.recipient.text}\n", what="key.file")
    with pytest.raises(BadKey, match="holds no private key"):
        parse_identities("# nothing\n", what="key.file")
    with pytest.raises(BadKey, match="--add: not a backupd public key"):
        Recipient.parse("backupd-pub-xyz", what="--add")
