"""Metrics sent to a real carbon-cache on loopback and read back from its whisper files."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.integration.support import daemon_config, listing, run, write_config
from tests.testbed import seed_shard

pytestmark = pytest.mark.integration


def _with_metrics(config: Path, body: str) -> Path:
    config.write_text(config.read_text() + "[metrics]\n" + body)
    return config


def _value(points: list[tuple[int, float]]) -> float:
    return points[-1][1]


def test_a_backup_and_an_audit_send_their_metrics(mariadb_factory, tmp_path, carbon_server):
    source = mariadb_factory("shard1")
    seed_shard(source, 0, 64, target_bytes=512 * 1024)
    config = _with_metrics(write_config(tmp_path / "backupd.toml", shards={"7": source}),
                           f'graphite = "127.0.0.1:{carbon_server.port}"\nprefix = "test.backupd"\n')
    result = run("backupd", "--config", str(config), "backup", "--shard", "7", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    base = "test.backupd.shards.7.backup.full"
    assert _value(carbon_server.wait_for(f"{base}.raw_bytes")) == report["raw_bytes"]
    assert _value(carbon_server.wait_for(f"{base}.stored_bytes")) == report["stored_bytes"]
    assert _value(carbon_server.wait_for(f"{base}.duration_seconds")) > 0
    assert _value(carbon_server.wait_for(f"{base}.throughput_bytes_per_second")) > 0
    assert report["store_stats"] == {"local": {"retries": 0, "errors": 0}}
    assert _value(carbon_server.wait_for("test.backupd.stores.local.retries")) == 0

    audit = run("backupd", "--config", str(config), "audit")
    assert audit.code == 0, audit.stdout
    assert _value(carbon_server.wait_for("test.backupd.shards.7.audit.quick.findings")) == 0


def test_a_restore_and_a_fleet_restore_send_their_metrics(mariadb_factory, tmp_path, carbon_server):
    source = mariadb_factory("shard1")
    seed_shard(source, 0, 64, target_bytes=512 * 1024)
    target = mariadb_factory("target")
    config = _with_metrics(write_config(tmp_path / "backupd.toml", shards={"7": source}, targets={"dr": target}),
                           f'graphite = "127.0.0.1:{carbon_server.port}"\nprefix = "test.backupd"\n')
    assert run("backupd", "--config", str(config), "backup", "--shard", "7").code == 0
    result = run("restore", "--config", str(config), "--shard", "7", "--target", "dr", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    base = "test.backupd.shards.7.restore"
    assert _value(carbon_server.wait_for(f"{base}.raw_bytes")) == report["raw_bytes"]
    assert _value(carbon_server.wait_for(f"{base}.verified")) == 1
    assert _value(carbon_server.wait_for(f"{base}.duration_seconds")) > 0
    assert _value(carbon_server.wait_for(f"{base}.success")) == 1
    first = carbon_server.wait_for(f"{base}.duration_seconds")[-1][0]
    time.sleep(1.1)  # whisper keeps one point a second
    fleet = run("restore", "--config", str(config), "--shards", "7", "--target", "dr", "--force", "--json")
    assert fleet.code == 0, fleet.stderr
    deadline = time.monotonic() + 30
    while carbon_server.wait_for(f"{base}.duration_seconds")[-1][0] == first and time.monotonic() < deadline:
        time.sleep(0.2)
    assert carbon_server.wait_for(f"{base}.duration_seconds")[-1][0] > first  # the fleet restore sent its own
    assert _value(carbon_server.wait_for(f"{base}.verified")) == 1


def test_the_daemon_sends_results_and_ages_and_a_prometheus_textfile(mariadb_factory, tmp_path, carbon_server):
    source = mariadb_factory("shard1")
    seed_shard(source, 0, 64, target_bytes=512 * 1024)
    textfile = tmp_path / "prom" / "backupd.prom"
    config = _with_metrics(daemon_config(tmp_path, {"1": source}),
                           f'graphite = "127.0.0.1:{carbon_server.port}"\nprometheus_textfile = "{textfile}"\n')
    result = run("backupd", "--config", str(config), "run", "--once")
    assert result.code == 0, result.stderr
    [entry] = listing(config)
    assert _value(carbon_server.wait_for("backupd.shards.1.backup.full.success")) == 1
    assert _value(carbon_server.wait_for("backupd.shards.1.backup.full.raw_bytes")) == entry["raw_bytes"]
    age = _value(carbon_server.wait_for("backupd.shards.1.newest_full_age_seconds"))
    assert 0 <= age < 120
    text = textfile.read_text()
    assert 'backupd_backup_success_total{shard="1",kind="full"} 1' in text
    assert 'backupd_newest_backup_age_seconds{shard="1"}' in text


def test_a_down_graphite_never_fails_a_backup(mariadb_factory, tmp_path):
    source = mariadb_factory("shard1")
    seed_shard(source, 0, 64, target_bytes=256 * 1024)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there
    config = _with_metrics(write_config(tmp_path / "backupd.toml", shards={"1": source}),
                           f'graphite = "127.0.0.1:{port}"\n')
    result = run("backupd", "--config", str(config), "backup", "--shard", "1")
    assert result.code == 0, result.stderr
    assert result.stderr.count("unreachable") == 1 and f"127.0.0.1:{port}" in result.stderr
    assert len(listing(config)) == 1
