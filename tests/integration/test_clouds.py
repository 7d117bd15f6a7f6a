"""Backups to two clouds at once and restores from either, against real servers on loopback."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.support import BIN, backup, listing, run, write_config
from tests.testbed import seed_shard, table_fingerprint

pytestmark = pytest.mark.integration

ENV = {"TEST_S3_KEY": "", "TEST_S3_SECRET": "", "TEST_SWIFT_S3_KEY": "", "TEST_SWIFT_S3_SECRET": ""}


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
def cloud_env(s3_bucket_moto, s3_bucket_swift):
    return {"TEST_S3_KEY": s3_bucket_moto.access_key, "TEST_S3_SECRET": s3_bucket_moto.secret_key,
            "TEST_SWIFT_S3_KEY": s3_bucket_swift.access_key, "TEST_SWIFT_S3_SECRET": s3_bucket_swift.secret_key}


def cloud_stores(moto, swift) -> dict[str, dict]:
    return {
        "aws": {"type": "s3", "bucket": moto.name, "endpoint_url": moto.endpoint_url,
                "access_key_env": "TEST_S3_KEY", "secret_key_env": "TEST_S3_SECRET",
                "addressing_style": "path", "prefix": "prod", "retry_budget": "3s"},
        "swift": {"type": "s3", "bucket": swift.name, "endpoint_url": swift.endpoint_url,
                  "access_key_env": "TEST_SWIFT_S3_KEY", "secret_key_env": "TEST_SWIFT_S3_SECRET",
                  "addressing_style": "path", "checksum_mode": "when_required", "retry_budget": "3s"},
    }


def config_for(tmp_path: Path, source, target, stores, read_from, **settings) -> Path:
    targets = {"dr": {"socket": str(target.socket), "user": "root", "read_from": read_from}}
    return write_config(tmp_path / "c.toml", shards={"2": source}, stores=stores, targets=targets,
                        settings=settings)


def objects(bucket) -> dict[str, bytes]:
    keys = [o["Key"] for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name)
            for o in page.get("Contents", [])]
    return {k.removeprefix("prod/"): bucket.client.get_object(Bucket=bucket.name, Key=k)["Body"].read() for k in keys}


def test_backup_to_two_clouds_lands_identical_parts_and_restores_from_each(
        tmp_path, source, target, s3_bucket_moto, s3_bucket_swift, cloud_env, monkeypatch):
    for name, value in cloud_env.items():
        monkeypatch.setenv(name, value)
    stores = cloud_stores(s3_bucket_moto, s3_bucket_swift)
    config = config_for(tmp_path, source, target, stores, ["aws", "swift"])
    backup_id = backup(config, "2")
    in_aws, in_swift = objects(s3_bucket_moto), objects(s3_bucket_swift)
    assert in_aws == in_swift and f"2/{backup_id}/manifest.json" in in_aws and len(in_aws) > 3

    for only in ("aws", "swift"):
        config = config_for(tmp_path, source, target, stores, [only])
        result = run("restore", "--config", str(config), "--shard", "2", "--target", "dr", "--json", "--force")
        assert result.code == 0, result.stderr
        assert json.loads(result.stdout)["verified"]
        assert table_fingerprint(target, "app") == table_fingerprint(source, "app")


def test_cloud_down_mid_backup_commits_degraded_then_sync_completes_it(
        tmp_path, source, target, s3_bucket_moto, s3_bucket_swift, cloud_env, monkeypatch, swift_server):
    for name, value in cloud_env.items():
        monkeypatch.setenv(name, value)
    stores = cloud_stores(s3_bucket_moto, s3_bucket_swift)
    # a mysqldump slowed down after 1 MB, so the proxy can be killed while parts are flowing
    wrapper = tmp_path / "slow-mysqldump"
    wrapper.write_text("#!/bin/sh\nmysqldump \"$@\" | (head -c 1000000; sleep 3; cat)\n")
    wrapper.chmod(0o755)
    config = config_for(tmp_path, source, target, stores, ["swift"], mysqldump=str(wrapper),
                        compression_threads=0)
    proc = subprocess.Popen([str(BIN / "backupd"), "--config", str(config), "backup", "--shard", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not objects(s3_bucket_swift) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert objects(s3_bucket_swift), "parts should be reaching swift"
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

    # nothing committed in swift: restore from it alone fails, sync fixes it
    assert run("restore", "--config", str(config), "--shard", "2", "--target", "dr").code == 1
    synced = run("backupd", "--config", str(config), "sync", "--shard", "2")
    assert synced.code == 0, synced.stderr
    assert objects(s3_bucket_moto) == objects(s3_bucket_swift)
    result = run("restore", "--config", str(config), "--shard", "2", "--target", "dr", "--json")
    assert result.code == 0, result.stderr
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")
