"""Backups to two clouds at once and restores from either, against real servers on loopback."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from backupd.config import load_config
from backupd.stores import open_store
from backupd.stores.base import Payload
from tests.integration.support import BIN, backup, listing, run, write_config
from tests.testbed import seed_shard, table_fingerprint

pytestmark = pytest.mark.integration



@pytest.fixture
def source(mariadb_factory):
    server = mariadb_factory("source")
    seed_shard(server, 2, 64, target_bytes=2 * 1024 * 1024)
    server.execute("CREATE TABLE app.marker (id INT PRIMARY KEY)")
    return server


@pytest.fixture
def target(mariadb_factory):
    return mariadb_factory("target")


@pytest.fixture
def cloud_env(s3_bucket_moto, swift_server, rackspace_identity, monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_S3_KEY", s3_bucket_moto.access_key)
    monkeypatch.setenv("TEST_S3_SECRET", s3_bucket_moto.secret_key)
    monkeypatch.setenv("TEST_SWIFT_KEY", swift_server.key)
    (tmp_path / "rackspace.ini").write_text(
        f"[rackspace_cloud]\nusername = {rackspace_identity.username}\napi_key = {rackspace_identity.api_key}\n")
    (tmp_path / "rackspace.ini").chmod(0o600)


@pytest.fixture
def rax_container(swift_server):
    name = swift_container_name = f"rax-{time.monotonic_ns()}"
    swift_server.create_container(name)
    yield swift_container_name
    swift_server.start_proxy()
    swift_server.delete_container(name)


def cloud_stores(moto, swift_server, swift_container, identity=None, rax_container=None, tmp_path=None) -> dict[str, dict]:
    stores = {
        "aws": {"type": "s3", "bucket": moto.name, "endpoint_url": moto.endpoint_url,
                "access_key_env": "TEST_S3_KEY", "secret_key_env": "TEST_S3_SECRET",
                "addressing_style": "path", "prefix": "prod", "retry_budget": "3s"},
        "swift": {"type": "swift", "auth_url": swift_server.auth_url, "user": swift_server.user,
                  "key_env": "TEST_SWIFT_KEY", "container": swift_container, "retry_budget": "3s",
                  "timeout": "5s"},
    }
    if identity is not None:
        stores["rackspace-dfw"] = {"type": "cloudfiles", "region": identity.region, "auth_url": identity.auth_url,
                                   "container": rax_container, "credentials_file": str(tmp_path / "rackspace.ini")}
    return stores


def config_for(tmp_path: Path, source, target, stores, read_from, **settings) -> Path:
    targets = {"dr": {"socket": str(target.socket), "user": "root", "read_from": read_from}}
    return write_config(tmp_path / "c.toml", shards={"2": source}, stores=stores, targets=targets,
                        settings=settings)


def objects(config: Path, store: str) -> dict[str, bytes]:
    """Every object of a configured store, read through backupd's own store."""
    loaded = load_config(config)
    handle = open_store(store, loaded.stores[store], retry=False)
    return {info.key: handle.get(info.key) for info in handle.list("")}


def test_backup_to_two_clouds_lands_identical_parts_and_restores_from_each(
        tmp_path, source, target, s3_bucket_moto, swift_server, swift_container, rackspace_identity,
        rax_container, cloud_env):
    stores = cloud_stores(s3_bucket_moto, swift_server, swift_container, rackspace_identity, rax_container, tmp_path)
    config = config_for(tmp_path, source, target, stores, ["aws", "swift"])
    backup_id = backup(config, "2")
    in_aws, in_swift, in_rax = (objects(config, s) for s in ("aws", "swift", "rackspace-dfw"))
    assert in_aws == in_swift == in_rax and f"2/{backup_id}/manifest.json" in in_aws and len(in_aws) > 3

    for only in ("aws", "swift", "rackspace-dfw"):
        config = config_for(tmp_path, source, target, stores, [only])
        result = run("restore", "--config", str(config), "--shard", "2", "--target", "dr", "--json", "--force")
        assert result.code == 0, result.stderr
        assert json.loads(result.stdout)["verified"]
        assert table_fingerprint(target, "app") == table_fingerprint(source, "app")


def test_cloud_down_mid_backup_commits_degraded_then_sync_completes_it(
        tmp_path, source, target, s3_bucket_moto, swift_server, swift_container, cloud_env):
    stores = cloud_stores(s3_bucket_moto, swift_server, swift_container)
    # a mysqldump slowed down after 1 MB, so the proxy can be killed while parts are flowing
    wrapper = tmp_path / "slow-mysqldump"
    wrapper.write_text("#!/bin/sh\nmysqldump \"$@\" | (head -c 1000000; sleep 3; cat)\n")
    wrapper.chmod(0o755)
    config = config_for(tmp_path, source, target, stores, ["swift"], mysqldump=str(wrapper),
                        compression_threads=0)
    proc = subprocess.Popen([str(BIN / "backupd"), "--config", str(config), "backup", "--shard", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not swift_server.list_objects(swift_container) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert swift_server.list_objects(swift_container), "parts should be reaching swift"
    swift_server.kill_proxy()
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        swift_server.start_proxy()
    assert proc.returncode == 0, stderr
    assert "DEGRADED" in stderr and "store swift" in stderr
    backup_id = stdout.strip()
    [entry] = listing(config, "2")
    assert entry["id"] == backup_id and entry["stores"] == ["aws"] and entry["degraded_stores"] == ["swift"]

    # the restore works from the surviving cloud (swift first in read_from, falling back per part)
    config = config_for(tmp_path, source, target, stores, ["swift", "aws"])
    result = run("restore", "--config", str(config), "--shard", "2", "--target", "dr", "--json")
    assert result.code == 0, result.stderr
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")

    # nothing committed in swift: restore from it alone fails, sync fixes it
    config = config_for(tmp_path, source, target, stores, ["swift"])
    assert run("restore", "--config", str(config), "--shard", "2", "--target", "dr", "--force").code == 1
    synced = run("backupd", "--config", str(config), "sync", "--shard", "2")
    assert synced.code == 0, synced.stderr
    assert objects(config, "aws") == objects(config, "swift")
    result = run("restore", "--config", str(config), "--shard", "2", "--target", "dr", "--json", "--force")
    assert result.code == 0, result.stderr
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")


def test_permanent_errors_are_not_retried(tmp_path, source, target, s3_bucket_moto, swift_server,
                                          swift_container, cloud_env):
    stores = cloud_stores(s3_bucket_moto, swift_server, swift_container)
    stores["aws"]["bucket"] = "no-such-bucket-anywhere"
    stores["aws"]["retry_budget"] = "10m"
    config = config_for(tmp_path, source, target, stores, ["swift"])
    result = run("backupd", "--config", str(config), "backup", "--shard", "2")
    assert result.code == 0, result.stderr
    assert "DEGRADED" in result.stderr and "store aws" in result.stderr and "NoSuchBucket" in result.stderr
    assert "retrying" not in result.stderr
    [entry] = listing(config, "2")
    assert entry["stores"] == ["swift"] and entry["degraded_stores"] == ["aws"]


def test_restore_while_one_cloud_is_down_reads_every_part_from_the_other(
        tmp_path, source, target, s3_bucket_moto, swift_server, swift_container, cloud_env):
    stores = cloud_stores(s3_bucket_moto, swift_server, swift_container)
    config = config_for(tmp_path, source, target, stores, ["swift", "aws"])
    backup(config, "2")
    swift_server.kill_proxy()
    try:
        result = run("restore", "--config", str(config), "--shard", "2", "--target", "dr", "--json")
    finally:
        swift_server.start_proxy()
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["verified"]
    assert "store swift failed" in result.stderr and "tried last" in result.stderr
    assert result.stderr.count("store swift failed") == 1  # the dead cloud is given up once
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")


def test_quick_audit_compares_the_clouds_etags_and_deep_finds_the_bad_copy(
        tmp_path, source, target, s3_bucket_moto, swift_server, swift_container, cloud_env):
    stores = cloud_stores(s3_bucket_moto, swift_server, swift_container)
    config = config_for(tmp_path, source, target, stores, ["aws", "swift"])
    backup_id = backup(config, "2")
    assert run("backupd", "--config", str(config), "audit").code == 0
    loaded = load_config(config)
    swift = open_store("swift", loaded.stores["swift"], retry=False)
    key = f"2/{backup_id}/part-000001.zst"
    data = bytearray(swift.get(key))
    data[len(data) // 2] ^= 0x08  # same size, other bytes: only the ETag shows it without a download
    swift.put(key, Payload.from_bytes(bytes(data)))
    quick = json.loads(run("backupd", "--config", str(config), "audit", "--json").stdout)
    assert [(f["check"], f["store"], f["part"]) for f in quick["findings"]] == [("part-checksum", "swift", key)]
    assert quick["bytes_read"] == 0  # the provider's MD5 of the copy, from the listing
    deep = json.loads(run("backupd", "--config", str(config), "audit", "--level", "deep", "--json").stdout)
    corrupt = [(f["store"], f["part"]) for f in deep["findings"] if f["check"] == "part-corrupt"]
    assert corrupt == [("swift", key)]
