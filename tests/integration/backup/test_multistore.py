"""Several stores at once: identical parts, DEGRADED commits, per-part fallback, sync."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.integration.support import backup, listing, run, store_files, write_config
from tests.testbed import seed_shard, table_fingerprint

pytestmark = pytest.mark.integration


@pytest.fixture
def source(mariadb_factory):
    server = mariadb_factory("source")
    seed_shard(server, 1, 64, target_bytes=2 * 1024 * 1024)
    server.execute("CREATE TABLE app.marker (id INT PRIMARY KEY)")
    return server


@pytest.fixture
def target(mariadb_factory):
    return mariadb_factory("target")


def two_store_config(tmp_path: Path, source, target, read_from=("a", "b")) -> Path:
    stores = {"a": {"type": "local", "path": str(tmp_path / "a")},
              "b": {"type": "local", "path": str(tmp_path / "b"), "retry_budget": "1s"}}
    return write_config(tmp_path / "c.toml", shards={"1": source}, stores=stores,
                        targets={"dr": {"socket": str(target.socket), "user": "root",
                                        "read_from": list(read_from)}})


def restore(config: Path, *extra: str):
    return run("restore", "--config", str(config), "--shard", "1", "--target", "dr", *extra)


def test_parts_land_identically_in_every_store(tmp_path, source, target):
    config = two_store_config(tmp_path, source, target)
    backup_id = backup(config, "1")
    a, b = store_files(tmp_path / "a"), store_files(tmp_path / "b")
    assert a == b and any(f.endswith("manifest.json") for f in a) and len(a) > 3
    for name in a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    [entry] = listing(config, "1")
    assert entry["id"] == backup_id and entry["stores"] == ["a", "b"] and entry["found_in"] == ["a", "b"]


def test_one_store_failing_commits_degraded_then_sync_rebuilds_it(tmp_path, source, target):
    config = two_store_config(tmp_path, source, target, read_from=("b",))
    (tmp_path / "b").write_text("not a directory")  # store b fails for good
    result = run("backupd", "--config", str(config), "backup", "--shard", "1")
    assert result.code == 0, result.stderr
    assert "DEGRADED" in result.stderr and "store b" in result.stderr
    backup_id = result.stdout.strip()
    manifest = json.loads((tmp_path / "a" / "1" / backup_id / "manifest.json").read_text())
    assert manifest["stores"]["a"]["state"] == "complete"
    assert manifest["stores"]["b"]["state"] == "failed" and manifest["stores"]["b"]["error"]
    [entry] = listing(config, "1")
    assert entry["degraded_stores"] == ["b"]

    # the store comes back; restore from it alone is impossible until sync
    (tmp_path / "b").unlink()
    assert restore(config).code == 1
    synced = run("backupd", "--config", str(config), "sync")
    assert synced.code == 0, synced.stderr
    assert f"{len(manifest['parts'])} parts" in synced.stdout and "1 manifests written" in synced.stdout
    assert store_files(tmp_path / "a") == store_files(tmp_path / "b")
    again = run("backupd", "--config", str(config), "sync")
    assert "0 parts" in again.stdout and "0 manifests written" in again.stdout

    result = restore(config, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["verified"]
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")


def test_every_store_failing_fails_the_backup_and_leaves_nothing(tmp_path, source, target):
    config = two_store_config(tmp_path, source, target)
    (tmp_path / "a").write_text("x")
    (tmp_path / "b").write_text("x")
    result = run("backupd", "--config", str(config), "backup", "--shard", "1")
    assert result.code == 1
    assert "every store failed" in result.stderr
    assert (tmp_path / "a").read_text() == "x" and (tmp_path / "b").read_text() == "x"


def test_restore_falls_back_per_part_to_the_next_store(tmp_path, source, target):
    config = two_store_config(tmp_path, source, target)
    backup_id = backup(config, "1")
    manifest = json.loads((tmp_path / "a" / "1" / backup_id / "manifest.json").read_text())
    parts = manifest["parts"]
    damaged = parts[1]["key"]
    (tmp_path / "a" / damaged).write_bytes(b"garbage of the wrong size")
    corrupt = tmp_path / "b" / parts[2]["key"]
    blob = bytearray(corrupt.read_bytes())
    blob[10] ^= 0xFF
    corrupt.write_bytes(bytes(blob))
    (tmp_path / "a" / parts[3]["key"]).unlink()

    result = restore(config, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["verified"]
    assert damaged in result.stderr  # said on stderr which copy was bad
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")

    # both copies of one part bad: exit 3, naming the part
    (tmp_path / "a" / parts[2]["key"]).write_bytes(bytes(blob))
    result = restore(config, "--force")
    assert result.code == 3 and parts[2]["key"] in result.stderr


def test_sync_refuses_to_spread_a_corrupt_part(tmp_path, source, target):
    config = two_store_config(tmp_path, source, target)
    (tmp_path / "b").write_text("down")
    backup_id = backup(config, "1")
    (tmp_path / "b").unlink()
    manifest = json.loads((tmp_path / "a" / "1" / backup_id / "manifest.json").read_text())
    part = tmp_path / "a" / manifest["parts"][0]["key"]
    blob = bytearray(part.read_bytes())
    blob[-1] ^= 1
    part.write_bytes(bytes(blob))
    result = run("backupd", "--config", str(config), "sync")
    assert result.code == 3
    assert manifest["parts"][0]["key"] in result.stderr
    assert not (tmp_path / "b" / "1" / backup_id / "manifest.json").exists()


def test_store_statistics_cover_every_operation_of_the_backup(tmp_path, source, target):
    """One store is a cloud that refuses connections: the job's lock check, its catalog listing
    and its upload each fail there, and the statistics the backup reports count all three
    (each store is opened once per job; before, only the upload's copy of the store was counted).
    A store that does not answer is not retried: its breaker fails the later operations at once.
    Takes a few seconds; leaves a DEGRADED backup."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there
    stores = {"a": {"type": "local", "path": str(tmp_path / "a")},
              "down": {"type": "s3", "bucket": "b", "endpoint_url": f"http://127.0.0.1:{port}",
                       "access_key_env": "STATS_KEY", "secret_key_env": "STATS_KEY",
                       "retry_budget": "1s", "connect_timeout": "1s"}}
    config = write_config(tmp_path / "c.toml", shards={"1": source}, stores=stores)
    result = run("backupd", "--config", str(config), "backup", "--shard", "1", "--json",
                 env={"STATS_KEY": "testing"})
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["result"] == "committed" and list(report["degraded"]) == ["down"]
    down = report["store_stats"]["down"]
    assert down["errors"] >= 3, report  # the lock's check of the other store, the catalog, the upload
    assert down["retries"] == 0, report  # unreachable is not retried (a 503 would be)
    assert report["store_stats"]["a"] == {"retries": 0, "errors": 0}
