"""Manifests that cannot lie, and a sync that repairs what the audit finds: the faults a careful
operator tries, against two stores of each kind (local, S3 on moto, Swift), real servers.

* one store's manifest copy altered (a part's sha256 changed; still valid JSON): restore uses the
  other copy and verifies, the audit says ``manifest-mismatch`` naming the store (no part is
  blamed), ``sync`` replaces the bad copy;
* a different same-size corrupt part in each store: the quick audit finds both by the provider's
  checksum without downloading (S3, Swift; a local store has none: the deep audit finds them),
  ``list`` and ``status`` call the stores suspect, ``sync --verify`` replaces both from the good
  copies, a second deep audit is clean; the same part bad everywhere is exit 3;
* a store that fails during a backup (DEGRADED): its partial parts are gone after the next backup;
* Swift: a part damaged on Swift's own disk is found by the quick audit with ``--heads`` (no
  download).

Every command must finish within ``run``'s 300 s timeout.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupd.config import load_config
from backupd.stores import open_store
from backupd.stores.base import Payload, Store
from tests.integration.support import BIN, backup, listing, run, write_config
from tests.servers.faulty_proxy import FaultyProxy
from tests.testbed import seed_shard, table_fingerprint

pytestmark = pytest.mark.integration

KINDS = ["local", "s3", "swift"]


def store_config(kind: str, name: str, request, tmp_path: Path, monkeypatch, endpoint: str | None = None) -> dict:
    """Store ``name`` of ``kind``: its own directory, bucket prefix or container prefix."""
    if kind == "local":
        return {"type": "local", "path": str(tmp_path / name)}
    if kind == "s3":
        bucket = request.getfixturevalue("s3_bucket_moto")
        monkeypatch.setenv("TEST_S3_KEY", bucket.access_key)
        monkeypatch.setenv("TEST_S3_SECRET", bucket.secret_key)
        return {"type": "s3", "bucket": bucket.name, "endpoint_url": endpoint or bucket.endpoint_url,
                "addressing_style": "path", "access_key_env": "TEST_S3_KEY", "secret_key_env": "TEST_S3_SECRET",
                "prefix": name, "connect_timeout": "1s", "answer_timeout": "2s", "read_timeout": "3s",
                "retry_budget": "2s"}
    server = request.getfixturevalue("swift_server")
    container = request.getfixturevalue("swift_container")
    monkeypatch.setenv("TEST_SWIFT_KEY", server.key)
    return {"type": "swift", "auth_url": server.auth_url, "user": server.user, "key_env": "TEST_SWIFT_KEY",
            "container": container, "prefix": name, "retry_budget": "2s", "timeout": "3s"}


def opened(config: Path, name: str) -> Store:
    return open_store(name, load_config(config).stores[name], retry=False)


def audit(config: Path, *args: str) -> dict:
    result = run("backupd", "--config", str(config), "audit", "--json", *args)
    assert result.code in (0, 3), result.stderr
    return json.loads(result.stdout)


def found(report: dict) -> set[tuple[str, str, str | None]]:
    return {(f["check"], f["store"], f["part"].rsplit("/", 1)[-1] if f["part"] else None) for f in report["findings"]}


def sync(config: Path, *args: str, expect: int = 0) -> dict:
    result = run("backupd", "--config", str(config), "sync", "--shard", "1", "--json", *args)
    assert result.code == expect, result.stdout + result.stderr
    return json.loads(result.stdout)


def status(config: Path) -> dict:
    result = run("backupd", "--config", str(config), "status", "--json")
    assert result.code == 0, result.stderr
    return dict(json.loads(result.stdout)[0])


def flipped(data: bytes) -> bytes:
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x10
    return bytes(changed)


@pytest.fixture
def source(mariadb_factory):
    server = mariadb_factory("source")
    seed_shard(server, 1, 6, target_bytes=384 * 1024)
    return server


@pytest.fixture
def target(mariadb_factory):
    return mariadb_factory("target")


@pytest.fixture(params=KINDS)
def pair(request, tmp_path, monkeypatch, source) -> Iterator[tuple[Path, Store, Store]]:
    """A shard backed up to stores ``a`` and ``b`` of one kind; a test that asks for ``target``
    too gets it as ``dr``, restoring from b first (the others start no target server)."""
    stores = {name: store_config(request.param, name, request, tmp_path, monkeypatch) for name in ("a", "b")}
    targets = {"dr": {"socket": str(request.getfixturevalue("target").socket), "user": "root",
                      "read_from": ["b", "a"]}} if "target" in request.fixturenames else None
    config = write_config(tmp_path / "c.toml", shards={"1": source}, stores=stores, targets=targets)
    yield config, opened(config, "a"), opened(config, "b")


def test_an_altered_manifest_copy_is_found_never_blamed_on_parts_and_replaced(pair, source, target):
    config, a, b = pair
    backup_id = backup(config, "1")
    key = f"1/{backup_id}/manifest.json"
    document = json.loads(b.get(key))
    document["parts"][0]["sha256"] = "0" * 64  # one flipped record, still a valid manifest
    b.put(key, Payload.from_bytes(json.dumps(document, indent=2).encode()))

    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["verified"] is True and "fails its self-check" in result.stderr
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")

    for level in ("quick", "deep"):
        report = audit(config, "--level", level)
        assert found(report) == {("manifest-mismatch", "b", None)}, report["findings"]
    assert "the copy in a is used" in report["findings"][0]["message"]

    repaired = sync(config)
    assert [(r["action"], r["store"], r["object"]) for r in repaired["repairs"]] == [("replaced", "b", key)]
    assert repaired["whole"] is True and b.get(key) == a.get(key)
    assert audit(config)["findings"] == []


def test_different_bad_parts_in_each_store_are_found_and_sync_verify_repairs_both(pair, request):
    config, a, b = pair
    backup_id = backup(config, "1")
    parts = json.loads(a.get(f"1/{backup_id}/manifest.json"))["parts"]
    first, second = parts[0]["key"], parts[1]["key"]
    a.put(first, Payload.from_bytes(flipped(a.get(first))))  # same size, other bytes
    b.put(second, Payload.from_bytes(flipped(b.get(second))))
    bad = {("a", first.rsplit("/", 1)[-1]), ("b", second.rsplit("/", 1)[-1])}

    quick = audit(config)
    provider = request.node.callspec.params["pair"] != "local"
    if provider:  # the provider's checksum (its MD5 ETag, in the listing), no download
        assert {(s, p) for c, s, p in found(quick) if c == "part-checksum"} == bad, quick["findings"]
        assert quick["bytes_read"] == 0 and quick["heads"] == 0
        headed = audit(config, "--heads")  # the same from a HEAD of every copy
        assert {(s, p) for c, s, p in found(headed) if c == "part-checksum"} == bad
        assert headed["bytes_read"] == 0 and headed["heads"] == 2 * len(parts)
    else:
        assert quick["findings"] == [] and audit(config, "--heads")["heads"] == 0  # a local store keeps none
        deep = audit(config, "--level", "deep")
        assert {(s, p) for c, s, p in found(deep) if c == "part-corrupt"} == bad
    shard = status(config)
    assert shard["stores_complete"] == [] and set(shard["stores_suspect"]) == {"a", "b"}
    assert "suspect (audit" in shard["stores_suspect"]["a"]
    [entry] = listing(config, "1")
    assert set(entry["suspect"]) == {"a", "b"}

    assert sync(config)["repairs"] == []  # sizes are right: only --verify looks at the bytes
    repaired = sync(config, "--verify")
    assert {(r["store"], r["object"], r["action"]) for r in repaired["repairs"]} == \
        {("a", first, "replaced"), ("b", second, "replaced")}
    assert repaired["copies_checked"] == 2 * len(parts) and repaired["whole"] is True
    assert audit(config, "--level", "deep")["findings"] == []
    shard = status(config)
    assert shard["stores_complete"] == ["a", "b"] and shard["stores_suspect"] == {}

    for store in (a, b):  # now the same part is bad everywhere: nothing can repair it
        store.put(first, Payload.from_bytes(flipped(store.get(first))))
    result = sync(config, "--verify", expect=3)
    assert result["whole"] is False and "no good copy" in result["no_good_copy"][0]


def test_swift_a_part_damaged_on_swifts_disk_is_found_by_a_quick_audit_with_heads(tmp_path, monkeypatch, request, source,
                                                                           swift_server, swift_container):
    stores = {"a": store_config("local", "a", request, tmp_path, monkeypatch),
              "b": store_config("swift", "b", request, tmp_path, monkeypatch)}
    config = write_config(tmp_path / "c.toml", shards={"1": source}, stores=stores)
    backup_id = backup(config, "1")
    parts = json.loads(opened(config, "a").get(f"1/{backup_id}/manifest.json"))["parts"]
    sizes = [p["size"] for p in parts]
    part = next(p for p in parts if sizes.count(p["size"]) == 1)
    files = [f for f in swift_server.devices_dir.rglob("*.data") if f.stat().st_size == part["size"]]
    assert len(files) == 1, files
    with open(files[0], "r+b") as handle:  # the disk lost the object's tail
        handle.truncate(part["size"] - 100)
    assert audit(config)["findings"] == []  # the listing still shows it as written
    quick = audit(config, "--heads")  # a HEAD: Swift checks the file against its metadata, and refuses it
    assert ("part-missing", "b", part["key"].rsplit("/", 1)[-1]) in found(quick), quick["findings"]
    assert quick["bytes_read"] == 0
    assert sync(config, "--verify")["whole"] is True
    assert audit(config)["findings"] == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_store_that_fails_during_a_backup_keeps_no_debris(kind, tmp_path, monkeypatch, request, source):
    """Store b fails after it took a few parts (local: its volume goes away; S3: the network
    refuses; Swift: the proxy dies), the backup commits DEGRADED to a; once b is back, the next
    backup deletes b's partial parts; sync then completes the first backup there."""
    wrapper = tmp_path / "slow-mysqldump"
    wrapper.write_text("#!/bin/sh\nmysqldump \"$@\" | (head -c 200000; sleep 3; cat)\n")
    wrapper.chmod(0o755)
    proxy = None
    if kind == "s3":
        proxy = FaultyProxy(request.getfixturevalue("moto_server").port).__enter__()
        request.addfinalizer(lambda: proxy.__exit__(None, None, None))
    stores = {"a": store_config("local", "a", request, tmp_path, monkeypatch),
              "b": store_config(kind, "b", request, tmp_path, monkeypatch, endpoint=proxy.url if proxy else None)}
    config = write_config(tmp_path / "c.toml", shards={"1": source}, stores=stores,
                          settings={"mysqldump": str(wrapper), "compression_threads": 0, "dump_streams": 1})
    b = opened(config, "b")
    process = subprocess.Popen([str(BIN / "backupd"), "--config", str(config), "backup", "--shard", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not [i for i in b.list("1/") if "part-" in i.key] and time.monotonic() < deadline:
        time.sleep(0.05)
    debris = [i.key for i in b.list("1/") if "part-" in i.key]
    assert debris, "parts should be reaching store b"
    swift = request.getfixturevalue("swift_server") if kind == "swift" else None
    gone = tmp_path / "b.gone"
    if kind == "local":
        (tmp_path / "b").rename(gone)
        (tmp_path / "b").write_text("not a directory: the volume went away")
    elif proxy is not None:
        proxy.mode = "refuse"
    else:
        swift.kill_proxy()
    try:
        stdout, stderr = process.communicate(timeout=240)
    finally:
        if kind == "local":
            (tmp_path / "b").unlink()
            gone.rename(tmp_path / "b")
        elif proxy is not None:
            proxy.mode = "pass"
        else:
            swift.start_proxy()
    assert process.returncode == 0 and "DEGRADED" in stderr, stderr
    first = stdout.strip()
    left = [i.key for i in b.list(f"1/{first}/")]
    assert left and not any(k.endswith("manifest.json") for k in left)  # the debris is there

    backup(config, "1")  # its orphan pass: the failed store's parts of a committed backup go
    assert [i.key for i in b.list(f"1/{first}/")] == []
    repaired = sync(config)
    assert repaired["whole"] is True and f"1/{first}/manifest.json" in {r["object"] for r in repaired["repairs"]}
    assert audit(config)["findings"] == []
