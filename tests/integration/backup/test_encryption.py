"""Client-side encryption against real servers: a shard backed up at once to S3 (moto) and Swift,
with its binlogs archived, by a host that holds only the recipients' public keys.

* nothing stored decodes as zstd or holds a marker row (parts, segments, manifests, key
  objects); a restore with a recipient's private key verifies, to the archive's end;
* the backup host's config (no private key), and a key that is no recipient: restore exit 2
  naming the backup and the key ids, the target untouched;
* quick and deep audits without a key pass on clean stores and find a flipped byte;
* tampering that a rewritten manifest hides (a part swapped in from another backup, a
  truncated part, a flipped byte): exit 3 naming the part, nothing of it applied;
* ``keys rewrap``: the new key opens every backup, the old one none, no part or manifest is
  rewritten (ETags and bytes unchanged); kill -9 in either pass leaves every backup openable;
* plain -> encrypted between fulls: an incremental never mixes;
* a physical backup: encrypted parts, restored and verified.

Every command must finish within ``run``'s 300 s timeout; a killed rewrap is killed within 60 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import zstandard

from backupd.config import load_config
from backupd.repo.keys import Identity, KeyObject, parse_identities
from backupd.repo.sealed import seal
from backupd.stores import open_store
from backupd.stores.base import Payload, Store
from tests.integration.support import BIN, Archiver, Run, backup, run, wait_archived, write_config
from tests.testbed import seed_shard, table_fingerprint
from tests.testbed.config import endpoint, physical_target

pytestmark = pytest.mark.integration

MARKER = "MARKER-e1f0c4a7b93d-a-row-only-the-owner-may-read"
BINLOGS = "\n[binlogs]\nflush_every = \"1s\"\nmax_lag = \"30s\"\n"


def new_key(folder: Path, name: str) -> tuple[Path, Identity]:
    path = folder / f"{name}.key"
    result = run("backupd", "keys", "generate", "--out", str(path))
    assert result.code == 0, result.stderr
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    [identity] = parse_identities(path.read_text(), what=str(path))
    assert f"public key: {identity.recipient.text}" in result.stdout
    return path, identity


def encryption(recipients: list[Identity], key_file: Path | None = None) -> str:
    text = "\n[encryption]\nrecipients = [" + ", ".join(f'"{r.recipient.text}"' for r in recipients) + "]\n"
    return text + (f'private_key_file = "{key_file}"\n' if key_file else "")


def variant(config: Path, name: str, extra: str) -> Path:
    path = config.with_name(name)
    path.write_text(config.read_text() + extra)
    return path


def opened(config: Path, name: str) -> Store:
    return open_store(name, load_config(config).stores[name], retry=False)


def objects(store: Store) -> dict[str, bytes]:
    return {info.key: store.get(info.key) for info in store.list("")}


def etags(store: Store) -> dict[str, tuple[int, str | None]]:
    return {i.key: (i.size, i.etag) for i in store.list("") if not i.key.endswith("key.json")
            and "/keys/" not in i.key and "/annotations/" not in i.key and "position.json" not in i.key}


def restore(config: Path, *args: str) -> Run:
    return run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--json", *args)


def databases(server) -> set[str]:
    return {row[0] for row in server.query("SHOW DATABASES")} - {"information_schema", "mysql",
                                                               "performance_schema", "sys", "test"}


def clouds(request, tmp_path, monkeypatch) -> dict[str, dict]:
    bucket = request.getfixturevalue("s3_bucket_moto")
    swift = request.getfixturevalue("swift_server")
    container = request.getfixturevalue("swift_container")
    monkeypatch.setenv("TEST_S3_KEY", bucket.access_key)
    monkeypatch.setenv("TEST_S3_SECRET", bucket.secret_key)
    monkeypatch.setenv("TEST_SWIFT_KEY", swift.key)
    return {"s3": {"type": "s3", "bucket": bucket.name, "endpoint_url": bucket.endpoint_url,
                   "addressing_style": "path", "access_key_env": "TEST_S3_KEY", "secret_key_env": "TEST_S3_SECRET"},
            "swift": {"type": "swift", "auth_url": swift.auth_url, "user": swift.user, "key_env": "TEST_SWIFT_KEY",
                      "container": container}}


def test_two_clouds_hold_only_ciphertext_and_only_a_recipient_restores(request, tmp_path, monkeypatch,
                                                                       mariadb_factory):
    source, target = mariadb_factory("source"), mariadb_factory("target")
    seed_shard(source, 1, 6, target_bytes=256 * 1024)
    source.execute("CREATE TABLE app.secrets (id INT PRIMARY KEY, note VARCHAR(100))")
    source.execute("INSERT INTO app.secrets VALUES (1, %s)", (MARKER,))
    owner_file, owner = new_key(tmp_path, "owner")
    _, offline = new_key(tmp_path, "offline")
    stranger_file, stranger = new_key(tmp_path, "stranger")
    plain = write_config(tmp_path / "plain.toml", shards={"1": source}, stores=clouds(request, tmp_path, monkeypatch),
                         targets={"dr": {"socket": str(target.socket), "user": "root", "read_from": ["swift", "s3"]}})
    host = variant(plain, "host.toml", BINLOGS + encryption([owner, offline]))
    reader = variant(plain, "reader.toml", BINLOGS + encryption([owner, offline], owner_file))
    wrong = variant(plain, "wrong.toml", BINLOGS + encryption([owner, offline], stranger_file))

    full = backup(host, "1")
    archiver = Archiver(host, "1", tmp_path / "archiver.log")
    try:
        source.execute("INSERT INTO app.secrets VALUES (2, %s)", (MARKER + "-in-the-binlog",))
        source.execute("UPDATE app.secrets SET note = %s WHERE id = 1", (MARKER + "-changed",))
        incremental = run("backupd", "--config", str(host), "backup", "--shard", "1", "--kind", "incremental")
        assert incremental.code == 0, incremental.stderr
        source.execute("INSERT INTO app.secrets VALUES (3, 'after the incremental')")
        wait_archived(host, "1", source)
    finally:
        summary = archiver.stop()
    assert summary["segments"] >= 1

    stored = {name: objects(opened(host, name)) for name in ("s3", "swift")}
    for name, found in stored.items():
        data_objects = [k for k in found if k.endswith(".zst")]
        assert any(k.startswith("binlogs/") for k in data_objects) and any(k.startswith("1/") for k in data_objects)
        for key in data_objects:
            with pytest.raises(zstandard.ZstdError):
                zstandard.ZstdDecompressor().decompress(found[key], max_output_size=1 << 26)
        for key, data in found.items():
            assert MARKER.encode() not in data, f"{name}:{key} holds the marker in clear"
        assert f"1/{full}/key.json" in found and any("/keys/" in k for k in found)
    manifest = json.loads(stored["s3"][f"1/{full}/manifest.json"])
    assert manifest["format_version"] == 8 and manifest["encryption"]["cipher"] == "xchacha20poly1305-secretstream"

    refused = restore(host)
    assert refused.code == 2, refused.stderr
    assert f"backup {full} is encrypted for key ids" in refused.stderr
    assert owner.key_id in refused.stderr and offline.key_id in refused.stderr and "given: none" in refused.stderr
    assert databases(target) == set()  # refused before the target was touched
    refused = restore(wrong)
    assert refused.code == 2 and stranger.key_id in refused.stderr and owner.key_id in refused.stderr
    assert databases(target) == set()

    restored = restore(reader)
    assert restored.code == 0, restored.stderr
    report = json.loads(restored.stdout)
    assert report["verified"] is True and report["replay"]["transactions"] >= 1
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")

    listed = json.loads(run("backupd", "--config", str(host), "keys", "list", "--json").stdout)
    runs = [row for row in listed if row["unlocks"].startswith("binlog run")]
    assert len(runs) == 1 and len(listed) == 3  # the full, the incremental, the archiver's run
    assert all(sorted(ids) == sorted([owner.key_id, offline.key_id]) for row in listed
               for ids in row["recipients"].values())
    rotated = run("backupd", "--config", str(reader), "keys", "rewrap", "--add", stranger.recipient.text,
                  "--remove", offline.key_id)
    assert rotated.code == 0, rotated.stderr
    listed = json.loads(run("backupd", "--config", str(host), "keys", "list", "--json").stdout)
    assert all(sorted(ids) == sorted([owner.key_id, stranger.key_id]) for row in listed
               for ids in row["recipients"].values())  # the binlog run's key too

    for level in ("quick", "deep"):  # no key: the ciphertext's sha256 and the providers' checksums
        audit = json.loads(run("backupd", "--config", str(host), "audit", "--json", "--level", level).stdout)
        assert audit["findings"] == [], audit["findings"]
    assert audit["content_unchecked"] > 0
    keyed = json.loads(run("backupd", "--config", str(reader), "audit", "--json", "--level", "deep").stdout)
    assert keyed["findings"] == [] and keyed["content_unchecked"] == 0

    s3 = opened(host, "s3")
    part = next(k for k in stored["s3"] if k.startswith(f"1/{full}/part-"))
    changed = bytearray(stored["s3"][part])
    changed[len(changed) // 2] ^= 0x01
    s3.put(part, Payload.from_bytes(bytes(changed)))
    quick = json.loads(run("backupd", "--config", str(host), "audit", "--json").stdout)
    assert {(f["check"], f["store"], f["part"]) for f in quick["findings"]} == {("part-checksum", "s3", part)}
    assert quick["bytes_read"] == 0
    deep = json.loads(run("backupd", "--config", str(host), "audit", "--json", "--level", "deep").stdout)
    assert ("part-corrupt", "s3", part) in {(f["check"], f["store"], f["part"]) for f in deep["findings"]}


def test_tampering_a_rewritten_manifest_hides_is_caught_by_decryption(tmp_path, mariadb_factory):
    source, target = mariadb_factory("source"), mariadb_factory("target")
    seed_shard(source, 1, 6, target_bytes=256 * 1024)
    owner_file, owner = new_key(tmp_path, "owner")
    config = write_config(tmp_path / "c.toml", shards={"1": source},
                          targets={"dr": {"socket": str(target.socket), "user": "root", "read_from": ["local"]}})
    config.write_text(config.read_text() + encryption([owner], owner_file))
    first, second = backup(config, "1"), backup(config, "1")
    folder = tmp_path / "store" / "1"

    def rewrite(backup_id: str, index: int, data: bytes) -> None:
        """Put ``data`` as part ``index`` and record its size and sha256 in the manifest, resealed:
        a store that lies consistently, which only the authenticated encryption can catch."""
        import hashlib
        path = folder / backup_id / f"part-{index:06d}.zst"
        path.write_bytes(data)
        manifest_path = folder / backup_id / "manifest.json"
        document = json.loads(manifest_path.read_text())
        record = document["parts"][index - 1]
        record.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
        record.pop("md5", None)
        manifest_path.write_bytes(seal(document))

    original = (folder / first / "part-000002.zst").read_bytes()
    cases = [((folder / second / "part-000002.zst").read_bytes(), "does not decrypt"),  # swapped in from another backup
             (original[:-40], "does not decrypt"),  # truncated
             (original[:50] + bytes([original[50] ^ 4]) + original[51:], "does not decrypt")]
    for data, message in cases:
        rewrite(first, 2, data)
        result = restore(config, "--backup", first, "--force")
        assert result.code == 3, result.stderr
        assert f"part 1/{first}/part-000002.zst of backup {first} {message}" in result.stderr
    rewrite(first, 2, original)
    result = restore(config, "--backup", first, "--force")
    assert result.code == 0 and json.loads(result.stdout)["verified"] is True, result.stderr


def test_keys_rewrap_rotates_without_rewriting_data_and_survives_kill_9(request, tmp_path, monkeypatch,
                                                                        mariadb_factory):
    source, target = mariadb_factory("source"), mariadb_factory("target")
    seed_shard(source, 1, 4, target_bytes=128 * 1024)
    old_file, old = new_key(tmp_path, "old")
    new_file, new = new_key(tmp_path, "new")
    both_file = tmp_path / "both.key"
    both_file.write_text(old_file.read_text() + new_file.read_text())
    os.chmod(both_file, 0o600)
    base = write_config(tmp_path / "base.toml", shards={"1": source}, stores=clouds(request, tmp_path, monkeypatch),
                        targets={"dr": {"socket": str(target.socket), "user": "root", "read_from": ["s3", "swift"]}})
    with_old = variant(base, "old.toml", encryption([old], old_file))
    with_new = variant(base, "new.toml", encryption([new], new_file))
    with_both = variant(base, "both.toml", encryption([old], both_file))
    backups = [backup(with_old, "1")]
    source.execute("UPDATE app.bucket_0001 SET data = JSON_SET(data, '$.n', 1) ORDER BY id LIMIT 5")
    backups.append(run("backupd", "--config", str(with_old), "backup", "--shard", "1", "--kind",
                       "incremental").stdout.strip())
    stores = [opened(base, "s3"), opened(base, "swift")]

    def manifests() -> list[dict[str, bytes]]:
        return [{k: s.get(k) for k in (f"1/{b}/manifest.json" for b in backups)} for s in stores]

    data_before, manifests_before = [etags(s) for s in stores], manifests()

    def copies() -> list[KeyObject]:
        return [KeyObject.from_json(s.get(f"1/{b}/key.json"), origin=b) for s in stores for b in backups]

    def opens(copy: KeyObject, identity: Identity) -> bool:
        return identity.key_id in copy.key_ids and copy.unwrap([identity]) is not None

    def killed_rewrap(config: Path, *args: str, after: str) -> None:
        """Start a rewrap and kill -9 it right after its first write whose log line holds ``after``."""
        process = subprocess.Popen([str(BIN / "backupd"), "--config", str(config), "keys", "rewrap", *args],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        assert process.stderr is not None
        for line in process.stderr:
            if "now for" in line and after in line or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGKILL)
        process.wait()

    # killed in pass 1 (adding): every copy still opens with the old key
    killed_rewrap(with_old, "--add", new.recipient.text, "--remove", old.key_id, after=new.key_id)
    assert all(opens(c, old) for c in copies())
    assert any(opens(c, new) for c in copies())
    # done, then a rewrap back killed in pass 2 (removing): every copy opens with the remaining key
    done = run("backupd", "--config", str(with_old), "keys", "rewrap", "--add", new.recipient.text,
               "--remove", old.key_id, "--json")
    assert done.code == 0 and json.loads(done.stdout)["complete"] is True, done.stderr
    assert all(c.key_ids == [new.key_id] for c in copies())
    listed = json.loads(run("backupd", "--config", str(base), "keys", "list", "--json").stdout)
    assert {tuple(ids) for row in listed for ids in row["recipients"].values()} == {(new.key_id,)}

    assert [etags(s) for s in stores] == data_before  # no part, segment or manifest rewritten
    assert manifests() == manifests_before
    result = restore(with_old)
    assert result.code == 2 and new.key_id in result.stderr and old.key_id in result.stderr
    result = restore(with_new)
    assert result.code == 0 and json.loads(result.stdout)["chain"] == backups, result.stderr
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")

    killed_rewrap(with_both, "--add", old.recipient.text, "--remove", new.key_id, after=f"now for {old.key_id}\n")
    assert all(opens(c, old) for c in copies())  # pass 2 had begun: the old key was added everywhere
    result = restore(with_old, "--force")
    assert result.code == 0 and json.loads(result.stdout)["verified"] is True, result.stderr


def test_a_shard_switches_from_plain_to_encrypted_at_a_full_and_sync_needs_no_key(tmp_path, mariadb_factory):
    source, target = mariadb_factory("source"), mariadb_factory("target")
    seed_shard(source, 1, 4, target_bytes=64 * 1024)
    key_file, owner = new_key(tmp_path, "owner")
    stores = {name: {"type": "local", "path": str(tmp_path / name)} for name in ("a", "b")}
    plain = write_config(tmp_path / "plain.toml", shards={"1": source}, stores=stores,
                         targets={"dr": {"socket": str(target.socket), "user": "root", "read_from": ["b", "a"]}})
    encrypted = variant(plain, "encrypted.toml", encryption([owner], key_file))
    host = variant(plain, "host.toml", encryption([owner]))
    plain_full = backup(plain, "1")
    switched = run("backupd", "--config", str(encrypted), "backup", "--shard", "1", "--kind", "incremental")
    assert switched.code == 0 and "taking a full instead" in switched.stderr, switched.stderr
    entries = {e["id"]: e for e in json.loads(run("backupd", "--config", str(encrypted), "list", "--json").stdout)}
    new_full = switched.stdout.strip()
    assert entries[plain_full]["encrypted"] is False and entries[new_full]["encrypted"] is True
    assert entries[new_full]["kind"] == "full"
    (tmp_path / "b" / "1" / new_full / "key.json").unlink()  # store b lost the key object
    (tmp_path / "b" / "1" / new_full / "part-000001.zst").unlink()  # and a part
    quick = json.loads(run("backupd", "--config", str(host), "audit", "--json").stdout)
    assert {(f["check"], f["store"]) for f in quick["findings"]} == {("key-object-missing", "b"), ("part-missing", "b")}
    synced = run("backupd", "--config", str(host), "sync", "--shard", "1", "--verify", "--json")  # no private key
    assert synced.code == 0, synced.stderr
    assert {(r["store"], r["object"].rsplit("/", 1)[-1]) for r in json.loads(synced.stdout)["repairs"]} == \
        {("b", "key.json"), ("b", "part-000001.zst")}
    assert json.loads(run("backupd", "--config", str(host), "audit", "--json", "--level", "deep").stdout)["findings"] == []
    result = restore(encrypted)
    assert result.code == 0 and json.loads(result.stdout)["chain"] == [new_full], result.stderr
    result = restore(plain, "--backup", plain_full, "--force")  # the plain one restores without a key
    assert result.code == 0 and json.loads(result.stdout)["verified"] is True, result.stderr


def test_a_physical_backup_is_encrypted_and_restores_verified(tmp_path, mariadb_factory):
    source, target = mariadb_factory("source"), mariadb_factory("target")
    seed_shard(source, 1, 4, target_bytes=128 * 1024)
    source.execute("CREATE TABLE app.secrets (id INT PRIMARY KEY, note VARCHAR(100))")
    source.execute("INSERT INTO app.secrets VALUES (1, %s)", (MARKER,))
    key_file, owner = new_key(tmp_path, "owner")
    shard = endpoint(source, method="physical")
    shard["datadir"] = str(source.datadir)
    config = write_config(tmp_path / "c.toml", shards={"1": shard}, store_dir=tmp_path / "store",
                          targets={"dr": physical_target(target, read_from=["local"],
                                                         restore_dir=tmp_path / "scratch")})
    config.write_text(config.read_text() + encryption([owner], key_file))
    backup_id = backup(config, "1")
    parts = sorted((tmp_path / "store" / "1" / backup_id).glob("part-*.zst"))
    assert parts
    for part in parts:
        data = part.read_bytes()
        assert MARKER.encode() not in data
        with pytest.raises(zstandard.ZstdError):
            zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 26)
    expected = table_fingerprint(source, "app")
    result = restore(config, "--force")
    assert result.code == 0 and json.loads(result.stdout)["verified"] is True, result.stderr
    assert table_fingerprint(target, "app") == expected
