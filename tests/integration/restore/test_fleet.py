"""Fleet restores: several shards at once, each into its own server, one summary, the worst exit
code; targets that map shards to servers (per-shard sections, a host/socket template,
--target-host); secrets read only when needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.support import run, write_config
from tests.testbed import seed_shard, table_fingerprint

pytestmark = pytest.mark.integration

REPL_ENV = {"FLEET_REPL_PW": "repl-secret"}


def sources(mariadb_factory, count: int, *, replication: bool = False) -> dict:
    """``count`` shards of growing size (shard N holds N x 256 KiB of bucket data)."""
    servers = {}
    for n in range(1, count + 1):
        server = mariadb_factory(f"s{n}")
        seed_shard(server, n, 64, target_bytes=n * 256 * 1024)
        if replication:
            server.execute("CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'repl-secret'")
            server.execute("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
        servers[str(n)] = server
    return servers


def shard_body(server, **extra) -> dict:
    return {"socket": str(server.socket), "user": "root", **extra}


def backup_all(config: Path, shards) -> None:
    for shard in shards:
        result = run("backupd", "--config", str(config), "backup", "--shard", shard)
        assert result.code == 0, result.stderr


def test_a_fleet_restore_goes_on_past_a_bad_shard_and_reports_the_worst(tmp_path, mariadb_factory):
    """Three shards into three servers, shard 2's first part corrupt in both stores: shards 1 and
    3 are restored and verified, shard 2 is refused (exit 3), the summary says so, exit 3."""
    shards = sources(mariadb_factory, 3)
    targets = {n: mariadb_factory(f"t{n}") for n in shards}
    stores = {"a": {"type": "local", "path": str(tmp_path / "a")}, "b": {"type": "local", "path": str(tmp_path / "b")}}
    target = {"user": "root", "read_from": ["a", "b"], "shards": {n: {"socket": str(t.socket)} for n, t in targets.items()}}
    config = write_config(tmp_path / "c.toml", shards={n: shard_body(s) for n, s in shards.items()},
                          stores=stores, targets={"dr": target})
    backup_all(config, shards)
    for store in ("a", "b"):
        part = sorted((tmp_path / store / "2").glob("*/part-000001.zst"))[0]
        data = bytearray(part.read_bytes())
        data[len(data) // 2] ^= 0x20
        part.write_bytes(bytes(data))

    result = run("restore", "--config", str(config), "--all-shards", "--target", "dr", "--json")
    assert result.code == 3, result.stderr
    report = json.loads(result.stdout)
    by_shard = {s["shard"]: s for s in report["shards"]}
    assert [s["shard"] for s in report["shards"]] == ["1", "2", "3"] and report["exit_code"] == 3
    assert by_shard["1"]["verified"] and by_shard["3"]["verified"]
    assert by_shard["2"]["exit_code"] == 3 and not by_shard["2"]["verified"]
    assert "part-000001.zst" in by_shard["2"]["failure"]
    assert "largest first: 3, 2, 1" in result.stderr
    for n in ("1", "3"):
        assert table_fingerprint(targets[n], "app") == table_fingerprint(shards[n], "app")
        assert by_shard[n]["target"] == f"socket {targets[n].socket}"

    again = run("restore", "--config", str(config), "--shards", "1,3", "--target", "dr", "--force")
    assert again.code == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[0].split() == ["SHARD", "BACKUP", "TARGET", "BYTES", "SECONDS", "VERIFIED", "REPLICA"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "3"] and all(" yes " in line for line in lines[1:])
    assert "2 of 2 shard(s) restored and verified" in again.stderr


def test_a_target_template_needs_only_the_secrets_of_what_it_touches(tmp_path, mariadb_factory, monkeypatch):
    """Three shards with their own passwords, a target whose socket is a template and a store
    whose key is not set: restoring shard 2 needs shard 2's backup and the target's password,
    nothing else. --target-host sends it to a server the config does not know."""
    shards = sources(mariadb_factory, 1) | {"2": mariadb_factory("s2"), "3": mariadb_factory("s3")}
    seed_shard(shards["2"], 2, 64, target_bytes=256 * 1024)
    monkeypatch.setenv("FLEET_SHARD2_PW", "")  # root has no password: set, and empty
    monkeypatch.setenv("FLEET_TARGET_PW", "")
    target_root = tmp_path / "t"
    target_root.mkdir()
    t2 = mariadb_factory("t/t2")
    stores = {"local": {"type": "local", "path": str(tmp_path / "store")},
              "far": {"type": "swift", "auth_url": "http://127.0.0.1:9/auth/v1.0", "user": "u",
                      "key_env": "FLEET_FAR_KEY_UNSET", "container": "c"}}
    body = {n: shard_body(s, password_env=f"FLEET_SHARD{n}_PW", stores=["local"]) for n, s in shards.items()}
    template = str(target_root / "t{shard}" / "mysqld.sock")
    config = write_config(tmp_path / "c.toml", shards=body, stores=stores,
                          targets={"dr": {"socket": template, "user": "root", "password_env": "FLEET_TARGET_PW",
                                          "read_from": ["local"]}})
    backup_all(config, ["2"])
    result = run("restore", "--config", str(config), "--shard", "2", "--target", "dr", "--json")
    assert result.code == 0 and json.loads(result.stdout)["verified"], result.stderr
    assert table_fingerprint(t2, "app") == table_fingerprint(shards["2"], "app")

    elsewhere = mariadb_factory("elsewhere")
    result = run("restore", "--config", str(config), "--shard", "2", "--target", "dr",
                 "--target-host", f"127.0.0.1:{elsewhere.port}", "--json")
    assert result.code == 0 and json.loads(result.stdout)["verified"], result.stderr
    assert table_fingerprint(elsewhere, "app") == table_fingerprint(shards["2"], "app")

    for bad, message in ((["--shards", "2,9"], "unknown shard '9'"), (["--all-shards", "--backup", "x"], "--backup"),
                         (["--shards", "1-3", "--target-host", "h"], "--target-host"),
                         (["--shard", "2", "--target-host", "h:99999"], "out of range")):
        result = run("restore", "--config", str(config), *bad, "--target", "dr")
        assert result.code == 2 and message in result.stderr, (bad, result.stderr)
    result = run("backupd", "--config", str(config), "backup", "--shard", "1")
    assert result.code == 2 and "shards.1.password_env: environment variable FLEET_SHARD1_PW is not set" in result.stderr


def test_a_fleet_restore_rebuilds_each_shards_replica_of_its_own_primary(tmp_path, mariadb_factory):
    shards = sources(mariadb_factory, 2, replication=True)
    targets = {n: mariadb_factory(f"t{n}") for n in shards}
    target = {"user": "root", "read_from": ["local"], "shards": {n: {"socket": str(t.socket)} for n, t in targets.items()}}
    config = write_config(tmp_path / "c.toml", shards={n: shard_body(s, replication_user="repl",
                                                                     replication_password_env="FLEET_REPL_PW")
                                                       for n, s in shards.items()},
                          targets={"dr": target})
    backup_all(config, shards)
    for n, server in shards.items():  # written after the backups: the replicas must fetch them
        server.execute(f"CREATE TABLE app.after_backup_{n} (id INT PRIMARY KEY)")
        server.execute(f"INSERT INTO app.after_backup_{n} VALUES (1), (2)")
    result = run("restore", "--config", str(config), "--shards", "1-2", "--target", "dr", "--replica-of", "primary",
                 "--parallel-shards", "2", "--json", env=REPL_ENV)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert all(s["verified"] and s["replica_caught_up"] and s["rebuild_seconds"] for s in report["shards"])
    for n, replica in targets.items():
        assert replica.query(f"SELECT COUNT(*) FROM app.after_backup_{n}")[0][0] == 2
        status = replica.query("SHOW SLAVE STATUS")
        assert status and str(shards[n].port) in str(status[0])
