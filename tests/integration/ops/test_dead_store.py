"""A dead cloud on the disaster day: every command goes on with the other store, names the dead
one, and the dead one costs seconds. The cloud store is moto's S3 behind a loopback proxy that
refuses connections, hangs (accepts, never answers) or stalls mid-download; the other store is
local. Timeouts are short here (1 s connect/answer, 2 s between bytes) so the suite stays fast;
the bounds below are what those timeouts allow, with room for a busy CI machine, and
``scripts/bench disaster`` measures the defaults."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.integration.support import BIN, listing, run, slow_mysqldump, write_config
from tests.servers.faulty_proxy import FaultyProxy
from tests.testbed import seed_shard

pytestmark = [pytest.mark.integration, pytest.mark.serial]  # bounds on how long commands take: run alone

SLACK = 20.0  # how much longer than with a healthy store a command may take (seconds)


def s3_store(proxy: FaultyProxy, bucket, prefix: str = "") -> dict:
    return {"type": "s3", "bucket": bucket.name, "endpoint_url": proxy.url, "addressing_style": "path",
            "access_key_env": "DEAD_KEY", "secret_key_env": "DEAD_SECRET", "prefix": prefix,
            "connect_timeout": "1s", "answer_timeout": "1s", "read_timeout": "2s", "retry_budget": "2s"}


@pytest.fixture
def fleet(tmp_path, mariadb_factory, moto_server, s3_bucket_moto, monkeypatch):
    """A shard backed up to ``cloud`` (preferred everywhere) and ``local``, a restore target, and
    the proxy in front of ``cloud``; one healthy backup taken."""
    monkeypatch.setenv("DEAD_KEY", s3_bucket_moto.access_key)
    monkeypatch.setenv("DEAD_SECRET", s3_bucket_moto.secret_key)
    source = mariadb_factory("source")
    seed_shard(source, 1, 64, target_bytes=2 * 1024 * 1024)
    target = mariadb_factory("target")
    with FaultyProxy(moto_server.port) as proxy:
        stores = {"cloud": s3_store(proxy, s3_bucket_moto), "local": {"type": "local", "path": str(tmp_path / "local")}}
        config = write_config(tmp_path / "c.toml", shards={"1": source}, stores=stores,
                              targets={"dr": {"socket": str(target.socket), "user": "root",
                                              "read_from": ["cloud", "local"]}},
                              settings={"part_size": "256KiB"})
        first = run("backupd", "--config", str(config), "backup", "--shard", "1", "--json")
        assert first.code == 0 and json.loads(first.stdout)["degraded"] == {}, first.stderr
        yield config, proxy, source, target


def timed(*args: str) -> tuple[float, object]:
    started = time.monotonic()
    result = run(*args)
    return time.monotonic() - started, result


@pytest.mark.parametrize("mode", ["refuse", "hang"])
def test_every_command_goes_on_without_a_dead_store_and_names_it(fleet, mode):
    config, proxy, _, _ = fleet
    c = ("--config", str(config))
    healthy_restore, result = timed("restore", *c, "--shard", "1", "--target", "dr", "--json")
    assert result.code == 0, result.stderr
    healthy_backup, result = timed("backupd", *c, "backup", "--shard", "1")
    assert result.code == 0, result.stderr

    proxy.mode = mode
    seconds, result = timed("restore", *c, "--shard", "1", "--target", "dr", "--force", "--json")
    assert result.code == 0 and json.loads(result.stdout)["verified"], result.stderr
    assert "store cloud" in result.stderr and "restoring from the other stores" in result.stderr
    assert seconds < healthy_restore + SLACK, (seconds, healthy_restore)

    seconds, result = timed("backupd", *c, "backup", "--shard", "1", "--json")
    assert result.code == 0, result.stderr
    assert list(json.loads(result.stdout)["degraded"]) == ["cloud"]  # committed DEGRADED, to local
    assert "DEGRADED" in result.stderr and "store cloud" in result.stderr
    assert seconds < healthy_backup + SLACK, (seconds, healthy_backup)

    for command, code in ((["list"], 0), (["status"], 0), (["audit"], 3), (["sync"], 1), (["prune", "--dry-run"], 1)):
        seconds, result = timed("backupd", *c, *command)
        assert result.code == code, (command, result.stderr)
        assert "store cloud" in result.stderr + result.stdout, (command, result.stderr)
        assert seconds < SLACK, (command, seconds)
    assert [e["stores"] for e in listing(config)][-1] == ["local"]  # the list still shows what local holds


def test_a_download_that_stalls_falls_back_to_the_other_store(fleet):
    config, proxy, source, _ = fleet
    c = ("--config", str(config))
    # a table of 1.5 MiB that does not compress: its parts are full 256 KiB ones, which stall
    source.execute("CREATE TABLE app.noise (id INT PRIMARY KEY, v MEDIUMBLOB)")
    for i in range(3):
        source.execute(f"INSERT INTO app.noise VALUES ({i}, 0x{os.urandom(512 * 1024).hex()})")
    result = run("backupd", *c, "backup", "--shard", "1")
    assert result.code == 0, result.stderr
    healthy, result = timed("restore", *c, "--shard", "1", "--target", "dr", "--json")
    assert result.code == 0, result.stderr
    proxy.mode = "stall"  # listings and manifests still arrive; parts stop after 48 KiB
    seconds, result = timed("restore", *c, "--shard", "1", "--target", "dr", "--force", "--json")
    assert result.code == 0 and json.loads(result.stdout)["verified"], result.stderr
    assert "store cloud" in result.stderr, result.stderr
    assert seconds < healthy + SLACK, (seconds, healthy)
    seconds, result = timed("backupd", *c, "audit", "--level", "deep", "--store", "cloud", "--json")
    assert result.code == 3, result.stderr
    assert any(f["check"] == "part-corrupt" and "cannot be read" in f["message"]
               for f in json.loads(result.stdout)["findings"])
    assert seconds < 2 * SLACK


def test_a_store_that_comes_back_during_a_backup_is_used_again(fleet, tmp_path):
    """The cloud refuses connections when the backup starts and answers again while mysqldump
    is still streaming: the parts it missed are copied to it from local before the commit, so
    the backup is complete in both stores (not DEGRADED). Takes ~10 s."""
    config, proxy, _, _ = fleet
    config.write_text(config.read_text().replace('part_size = "256KiB"', 'part_size = "256KiB"\nmysqldump = "'
                                                 + str(slow_mysqldump(tmp_path, 6)) + '"'))
    proxy.mode = "refuse"
    backup = subprocess.Popen([str(BIN / "backupd"), "--config", str(config), "backup", "--shard", "1", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proxy.mode = "pass"
    stdout, stderr = backup.communicate(timeout=120)
    assert backup.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["degraded"] == {}, stderr
    assert "answers again" in stderr
    newest = [e for e in listing(config) if e["id"] == report["id"]][0]
    assert newest["stores"] == ["cloud", "local"] and newest["found_in"] == ["cloud", "local"]
    only_cloud = config.read_text().replace('read_from = ["cloud", "local"]', 'read_from = ["cloud"]')
    (tmp_path / "cloud-only.toml").write_text(only_cloud)
    result = run("restore", "--config", str(tmp_path / "cloud-only.toml"), "--shard", "1", "--target", "dr",
                 "--backup", report["id"], "--force", "--json")
    assert result.code == 0 and json.loads(result.stdout)["verified"], result.stderr


def test_with_every_store_unreachable_every_command_fails_naming_them(tmp_path, mariadb_factory, moto_server,
                                                                      s3_bucket_moto, monkeypatch):
    monkeypatch.setenv("DEAD_KEY", s3_bucket_moto.access_key)
    monkeypatch.setenv("DEAD_SECRET", s3_bucket_moto.secret_key)
    source = mariadb_factory("source")
    seed_shard(source, 1, 64, target_bytes=256 * 1024)
    with FaultyProxy(moto_server.port, mode="refuse") as proxy:
        stores = {"east": s3_store(proxy, s3_bucket_moto, "east"), "west": s3_store(proxy, s3_bucket_moto, "west")}
        config = write_config(tmp_path / "c.toml", shards={"1": source}, stores=stores,
                              targets={"dr": {"socket": str(source.socket), "user": "root",
                                              "read_from": ["east", "west"]}})
        c = ("--config", str(config))
        for tool, *command in (("backupd", "backup", "--shard", "1"), ("restore", "--shard", "1", "--target", "dr"),
                               ("backupd", "list"), ("backupd", "status"), ("backupd", "audit"),
                               ("backupd", "sync"), ("backupd", "prune")):
            seconds, result = timed(tool, *c, *command)
            assert result.code == 1, (command, result.stdout, result.stderr)
            assert "store east" in result.stderr and "store west" in result.stderr, (command, result.stderr)
            assert seconds < SLACK, (command, seconds)


def test_an_unknown_shard_is_a_usage_error_for_restore(fleet):
    config, *_ = fleet
    result = run("restore", "--config", str(config), "--shard", "9", "--target", "dr")
    assert result.code == 2 and "unknown shard '9'" in result.stderr
