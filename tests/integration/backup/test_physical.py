"""Physical backups (mariabackup) and rebuilding redundancy, against real servers.

Every restore here goes through the test bed's start/stop commands, replaces a real server's
datadir, starts it and verifies it; replicas replicate over real TCP connections on loopback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from backupd.repo.sealed import seal
from tests.integration.support import application_writes, listing, run, store_files, write_config
from tests.testbed import seed_edge_cases, seed_shard
from tests.testbed.config import endpoint, physical_target
from tests.testbed.data import table_fingerprint

pytestmark = pytest.mark.integration

REPL_ENV = {"BACKUPD_TEST_REPL_PW": "repl-secret"}


def _source(mariadb_factory, name: str = "shard1"):
    server = mariadb_factory(name)
    seed_shard(server, 0, 64, target_bytes=1024 * 1024)
    seed_edge_cases(server)
    server.execute("CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'repl-secret'")
    server.execute("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
    return server


def _config(tmp_path: Path, source, targets: dict, *, method: str = "physical") -> Path:
    shard = endpoint(source, method=method, replication_user="repl",
                     replication_password_env="BACKUPD_TEST_REPL_PW")
    if method != "mysqldump":
        shard["datadir"] = str(source.datadir)
    return write_config(tmp_path / "backupd.toml", shards={"1": shard}, targets=targets,
                        store_dir=tmp_path / "store")


def _target(server, tmp_path: Path) -> dict:
    return physical_target(server, read_from=["local"], restore_dir=tmp_path / "restore-scratch")


def _backup(config: Path, kind: str) -> str:
    result = run("backupd", "--config", str(config), "backup", "--shard", "1", "--kind", kind)
    assert result.code == 0, result.stderr
    return result.stdout.strip()


def _wait_same_gtid(source, replica, timeout: float = 120) -> None:
    position = source.query("SELECT @@gtid_binlog_pos")[0][0]
    reached = replica.query("SELECT MASTER_GTID_WAIT(%s, %s)", (position, timeout))[0][0]
    assert reached == 0, f"replica did not reach {position}"


def test_physical_full_and_incremental_under_writes_restore_as_replica(mariadb_factory, tmp_path):
    source = _source(mariadb_factory)
    replica = mariadb_factory("replica")
    config = _config(tmp_path, source, {"dr": _target(replica, tmp_path)})

    with application_writes(source, first_id=10_000_000, deletes=True) as rounds:
        full_id = _backup(config, "full")
        incremental_id = _backup(config, "incremental")
        assert rounds[0] > 0
        entries = {e["id"]: e for e in listing(config, "1")}
        assert entries[full_id]["kind"] == "full" and entries[incremental_id]["parent_id"] == full_id
        assert entries[incremental_id]["from_lsn"] == entries[full_id]["to_lsn"] > 0
        manifest = json.loads((tmp_path / "store" / "1" / incremental_id / "manifest.json").read_text())
        assert manifest["format_version"] == 8 and manifest["method"] == "mariabackup"  # sealed
        assert manifest["coordinates"]["binlog_file"] and manifest["coordinates"]["gtid"]
        assert manifest["tool_versions"]["mariabackup"] and manifest["server"]["version"].startswith("10.")

        # The writer keeps going while the replica is rebuilt from the chain.
        result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr",
                     "--replica-of", "1", "--json", env=REPL_ENV)
        assert result.code == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["chain"] == [full_id, incremental_id] and report["verified"] is True
        assert report["method"] == "mariabackup" and report["tables"] > 16
        assert set(report["phases"]) >= {"fetch+extract", "prepare", "move-back", "start"}
        assert report["replica"]["mode"] == "gtid" and report["replica"]["start"] == manifest["coordinates"]["gtid"]
        assert "caught up with shard 1" in result.stderr, result.stderr
        time.sleep(0.5)  # more writes after the replica has caught up
    _wait_same_gtid(source, replica)
    for database in ("app", "edge"):
        assert table_fingerprint(replica, database) == table_fingerprint(source, database)
    assert not list((tmp_path / "restore-scratch").iterdir()), "scratch folder left behind"
    status = replica.query("SHOW SLAVE STATUS")
    assert status, "the target is not a replica"


def test_logical_restore_as_replica_of_host_port(mariadb_factory, tmp_path):
    source = _source(mariadb_factory)
    replica = mariadb_factory("replica")
    config = _config(tmp_path, source, {"dr": replica}, method="mysqldump")
    with application_writes(source, first_id=20_000_000):
        _backup(config, "full")
        result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr",
                     "--replica-of", f"127.0.0.1:{source.port}", env=REPL_ENV)
        assert result.code == 0, result.stderr
        assert f"replica of 127.0.0.1:{source.port}" in result.stdout
        assert "redundancy rebuilt in" in result.stdout
    _wait_same_gtid(source, replica)
    assert table_fingerprint(replica, "app") == table_fingerprint(source, "app")


def test_corrupt_part_stops_extraction_and_leaves_the_target_alone(mariadb_factory, tmp_path):
    source = _source(mariadb_factory)
    target = mariadb_factory("target")
    target.execute("CREATE DATABASE keepme")
    target.execute("CREATE TABLE keepme.t (id INT PRIMARY KEY)")
    config = _config(tmp_path, source, {"dr": _target(target, tmp_path)})
    full_id = _backup(config, "full")
    parts = sorted((tmp_path / "store" / "1" / full_id).glob("part-*.zst"))
    assert len(parts) > 3
    damaged = parts[2]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))

    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--force")
    assert result.code == 3, result.stderr
    assert damaged.name in result.stderr and "sha256" in result.stderr
    assert "extracted" not in result.stderr  # the full's extraction never finished
    assert target.is_running() and target.query("SHOW TABLES FROM keepme") == [("t",)]
    assert not list((tmp_path / "restore-scratch").iterdir())


def test_version_mismatch_and_non_empty_datadir_are_refused(mariadb_factory, tmp_path):
    source = _source(mariadb_factory)
    target = mariadb_factory("target")
    target.execute("CREATE DATABASE precious")
    config = _config(tmp_path, source, {"dr": _target(target, tmp_path)})
    full_id = _backup(config, "full")

    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr")
    assert result.code == 1
    assert "target dr" in result.stderr and "'precious'" in result.stderr and "--force" in result.stderr
    assert target.query("SHOW DATABASES LIKE 'precious'") == [("precious",)]

    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--table", "app.*")
    assert result.code == 2  # a physical backup's tables cannot be restored one by one
    assert f"backup {full_id} of shard 1 is physical (mariabackup): restoring single tables needs a logical " \
           "backup" in result.stderr

    manifest_path = tmp_path / "store" / "1" / full_id / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["server"]["version"] = "10.6.21-MariaDB-log"
    manifest_path.write_bytes(seal(manifest))
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--force")
    assert result.code == 1
    assert "target dr runs mariadb 10.11" in result.stderr and "10.6" in result.stderr
    assert target.query("SHOW DATABASES LIKE 'precious'") == [("precious",)]

    manifest["server"]["version"] = source.query("SELECT VERSION()")[0][0]
    manifest["raw_bytes"] = 1 << 60  # an exabyte of datadir: more than any test machine has
    manifest_path.write_bytes(seal(manifest))
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--force")
    assert result.code == 1
    assert "not enough disk space" in result.stderr and "restore-scratch has" in result.stderr
    assert "TiB there" in result.stderr
    assert target.query("SHOW DATABASES LIKE 'precious'") == [("precious",)]


def test_force_replaces_a_datadir_and_verifies(mariadb_factory, tmp_path):
    source = _source(mariadb_factory)
    target = mariadb_factory("target")
    target.execute("CREATE DATABASE precious")
    config = _config(tmp_path, source, {"dr": _target(target, tmp_path)})
    _backup(config, "full")
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--force")
    assert result.code == 0, result.stderr
    assert "verified (digest) after the server started" in result.stdout
    assert target.query("SHOW DATABASES LIKE 'precious'") == []
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")


def test_physical_backup_needs_a_reachable_datadir(mariadb_factory, tmp_path):
    source = _source(mariadb_factory)
    shard = endpoint(source, method="mariabackup", datadir=str(tmp_path / "elsewhere"))
    config = write_config(tmp_path / "backupd.toml", shards={"1": shard}, store_dir=tmp_path / "store")
    result = run("backupd", "--config", str(config), "backup", "--shard", "1")
    assert result.code == 1
    first = result.stderr.strip().splitlines()[-2] if "hint" in result.stderr else result.stderr
    assert "datadir" in first and "not reachable from this host" in result.stderr
    assert store_files(tmp_path / "store") == []


@pytest.mark.parametrize("kind", ["incremental"])
def test_physical_incremental_needs_a_physical_full(mariadb_factory, tmp_path, kind):
    source = _source(mariadb_factory)
    config = _config(tmp_path, source, {})
    result = run("backupd", "--config", str(config), "backup", "--shard", "1", "--kind", kind)
    assert result.code == 1 and "no committed physical full backup" in result.stderr


def test_password_reaches_mariabackup_only_through_an_option_file(mariadb_factory, tmp_path):
    source = _source(mariadb_factory)
    source.execute("CREATE USER 'bk'@'localhost' IDENTIFIED BY 'pa\"ss w0rd\\\\x'")
    source.execute("GRANT SELECT, SHOW VIEW, RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR "
                   "ON *.* TO 'bk'@'localhost'")  # the documented physical backup account
    (tmp_path / "pw").write_text('pa"ss w0rd\\x\n')
    (tmp_path / "pw").chmod(0o600)
    spy, log = tmp_path / "spy-mariabackup", tmp_path / "spy.log"
    spy.write_text(f"#!/bin/sh\necho \"ARGS: $*\" >> {log}\nenv >> {log}\n"
                   f"opt=$(echo \"$1\" | sed 's/--defaults-file=//')\n"
                   f"[ -f \"$opt\" ] && stat -c 'MODE: %a' \"$opt\" >> {log}\n"
                   "exec mariabackup \"$@\"\n")
    spy.chmod(0o755)
    shard = endpoint(source, user="bk", password_file=str(tmp_path / "pw"), method="mariabackup",
                     datadir=str(source.datadir))
    shard.pop("password_env", None)
    config = write_config(tmp_path / "c.toml", shards={"1": shard}, store_dir=tmp_path / "store",
                          settings={"mariabackup": str(spy)})
    full_id = _backup(config, "full")
    text = log.read_text()
    assert "--backup" in text and "pa\"ss" not in text and "w0rd" not in text
    assert "MODE: 600" in text
    assert json.loads((tmp_path / "store" / "1" / full_id / "manifest.json").read_text())["reference"]["tables"]
