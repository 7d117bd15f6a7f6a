"""Backups taken on a replica, as our users' fleet is run: a primary under a writer, a replica
replicating it over real TCP (GTID), a heartbeat written on the primary each 0.2 s (as
pt-heartbeat does).

* a full and an incremental from the replica record the primary's coordinates (its file and
  position hold exactly the snapshot's GTIDs on the primary) and the data's time; restored,
  then attached with ``--replica-of 1`` to the primary, the copy catches up and equals it; a
  point-in-time restore from the primary's binlog archive equals the primary too;
* a replica whose replication is stopped is refused, naming why; with ``fallback_to_primary``
  the primary is backed up, said so; a replica whose SQL thread stopped a few seconds ago
  (``lag_policy = "warn"``) gives a backup whose ``snapshot_at`` is in the past by that lag.

Every command must finish within ``run``'s 300 s timeout.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pytest

from tests.integration.support import (
    Archiver,
    application_writes,
    run,
    wait_archived,
    whole_second_after_now,
    write_config,
)
from tests.testbed import seed_shard, table_fingerprint
from tests.testbed.config import endpoint, physical_target

pytestmark = pytest.mark.integration

REPL_ENV = {"BACKUPD_TEST_REPL_PW": "repl-secret"}


def wait_replica(primary, replica, timeout: float = 60) -> None:
    position = primary.query("SELECT @@gtid_binlog_pos")[0][0]
    assert replica.query("SELECT MASTER_GTID_WAIT(%s, %s)", (position, timeout))[0][0] == 0


@pytest.fixture
def fleet(mariadb_factory, tmp_path) -> Iterator[tuple]:
    primary, replica, target = (mariadb_factory(n) for n in ("primary", "replica", "target"))
    primary.execute("CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'repl-secret'")
    primary.execute("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
    primary.execute("CREATE DATABASE hb")
    primary.execute("CREATE TABLE hb.heartbeat (id INT PRIMARY KEY, ts DATETIME(6) NOT NULL)")
    primary.execute("INSERT INTO hb.heartbeat VALUES (1, UTC_TIMESTAMP(6))")
    seed_shard(primary, 1, 6, target_bytes=192 * 1024)
    # the replica is built as our users rebuild one: a backup of the primary restored --replica-of it
    bootstrap = write_config(tmp_path / "bootstrap.toml", store_dir=tmp_path / "bootstrap-store",
                             shards={"1": endpoint(primary, databases=["app", "hb"], replication_user="repl",
                                                   replication_password_env="BACKUPD_TEST_REPL_PW")},
                             targets={"replica": {"socket": str(replica.socket), "user": "root",
                                                  "read_from": ["local"]}})
    assert run("backupd", "--config", str(bootstrap), "backup", "--shard", "1").code == 0
    built = run("restore", "--config", str(bootstrap), "--shard", "1", "--target", "replica", "--replica-of", "1",
                env=REPL_ENV)
    assert built.code == 0, built.stderr
    wait_replica(primary, replica)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(0.2):
            primary.execute("UPDATE hb.heartbeat SET ts = UTC_TIMESTAMP(6) WHERE id = 1")

    beating = threading.Thread(target=heartbeat, daemon=True)
    beating.start()
    shard = endpoint(primary, databases=["app", "hb"], backup_from="replica", replicas=[{"socket": str(replica.socket)}],
                     heartbeat_table="hb.heartbeat", replication_user="repl",
                     replication_password_env="BACKUPD_TEST_REPL_PW")
    config = write_config(tmp_path / "c.toml", shards={"1": shard},
                          targets={"dr": {"socket": str(target.socket), "user": "root", "read_from": ["local"]}})
    try:
        yield config, primary, replica, target
    finally:
        stop.set()
        beating.join()


def backup_json(config: Path, *args: str) -> dict:
    result = run("backupd", "--config", str(config), "backup", "--shard", "1", "--json", *args)
    assert result.code == 0, result.stderr
    return dict(json.loads(result.stdout))


def manifest(config: Path, backup_id: str) -> dict:
    return json.loads((config.parent / "store" / "1" / backup_id / "manifest.json").read_text())


def test_backups_from_the_replica_record_the_primarys_coordinates_and_restore_to_it(fleet):
    config, primary, replica, target = fleet
    config.write_text(config.read_text() + "\n[binlogs]\nflush_every = \"1s\"\nmax_lag = \"30s\"\n")
    archiver = Archiver(config, "1", config.parent / "archiver.log")  # it reads the primary
    try:
        with application_writes(primary, first_id=700000, deletes=True):
            time.sleep(1)
            full = manifest(config, backup_json(config, "--kind", "full")["id"])
            time.sleep(1)
            incremental = manifest(config, backup_json(config, "--kind", "incremental")["id"])
        wait_replica(primary, replica)
        wait_archived(config, "1", primary)
    finally:
        archiver.stop()
    for taken in (full, incremental):
        assert taken["format_version"] == 8 and taken["taken_from"]["replica"] == f"replica socket {replica.socket}"
        assert taken["taken_from"]["data_time_from"] == "heartbeat" and taken["taken_from"]["lag_seconds"] < 30
        coordinates = taken["coordinates"]
        # the primary's own file and position: its GTID state there is the snapshot's
        at = primary.query("SELECT BINLOG_GTID_POS(%s, %s)", (coordinates["binlog_file"], coordinates["binlog_pos"]))
        assert at[0][0] == coordinates["gtid"], (coordinates, at)
        started = datetime.fromisoformat(taken["started_at"].replace("Z", "+00:00"))
        snapshot = datetime.fromisoformat(taken["snapshot_at"].replace("Z", "+00:00"))
        assert abs((started - snapshot).total_seconds()) < 30

    expected = table_fingerprint(primary, "app")
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--json")  # + the archive
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["replay"]["transactions"] > 0
    assert table_fingerprint(target, "app") == expected

    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--to-backup", "--force",
                 "--replica-of", "1", "--json", env=REPL_ENV)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["chain"] == [full["id"], incremental["id"]]
    wait_replica(primary, target)
    assert table_fingerprint(target, "app") == expected


def test_a_stopped_replica_is_refused_the_fallback_says_so_and_a_lagging_one_is_dated_by_its_lag(fleet):
    config, primary, replica, _ = fleet
    replica.execute("STOP SLAVE")
    result = run("backupd", "--config", str(config), "backup", "--shard", "1")
    assert result.code == 1
    assert f"shard 1: no replica to back up from: replica socket {replica.socket}: replication is stopped" \
        in result.stderr, result.stderr
    assert re.search(r"its data is \d+s old \(heartbeat\)", result.stderr), result.stderr  # the lag, named
    assert "fallback_to_primary" in result.stderr

    fallback = config.with_name("fallback.toml")
    fallback.write_text(config.read_text().replace('backup_from = "replica"',
                                                   'backup_from = "replica"\nfallback_to_primary = true'))
    result = run("backupd", "--config", str(fallback), "backup", "--shard", "1", "--json")
    assert result.code == 0, result.stderr
    assert "backing up from the primary" in result.stderr and "replication is stopped" in result.stderr
    assert "taken_from" not in manifest(config, json.loads(result.stdout)["id"])

    replica.execute("START SLAVE")
    wait_replica(primary, replica)
    replica.execute("STOP SLAVE SQL_THREAD")  # a fake lag: the primary goes on, the replica does not apply
    primary.execute("UPDATE app.bucket_0001 SET data = JSON_SET(data, '$.late', 1) ORDER BY id LIMIT 3")
    time.sleep(4)
    warned = config.with_name("warn.toml")
    warned.write_text(config.read_text().replace('backup_from = "replica"', 'backup_from = "replica"\n'
                                                 'lag_policy = "warn"'))
    result = run("backupd", "--config", str(warned), "backup", "--shard", "1", "--json")
    assert result.code == 0 and "lag_policy = \"warn\"" in result.stderr, result.stderr
    lagging = manifest(config, json.loads(result.stdout)["id"])
    started = datetime.fromisoformat(lagging["started_at"].replace("Z", "+00:00"))
    snapshot = datetime.fromisoformat(lagging["snapshot_at"].replace("Z", "+00:00"))
    assert lagging["taken_from"]["lag_seconds"] >= 3.5 and (started - snapshot).total_seconds() >= 3.5


def test_a_physical_backup_on_the_replica_records_the_primarys_coordinates_and_rebuilds_a_replica(
        fleet, mariadb_factory, tmp_path):
    """mariabackup --slave-info runs against the replica's datadir under a writer on the primary;
    the copy, restored physically and attached with ``--replica-of 1``, catches up to the
    primary and equals it. A replica config without its datadir is refused at load, naming the
    key; ``safe_slave_backup`` without a heartbeat table is refused too."""
    config, primary, replica, _ = fleet
    rebuilt = mariadb_factory("rebuilt")
    text = config.read_text().replace('backup_from = "replica"', 'backup_from = "replica"\nmethod = "mariabackup"')
    missing = config.with_name("nodatadir.toml")
    missing.write_text(text)
    result = run("backupd", "--config", str(missing), "backup", "--shard", "1")
    assert result.code == 2 and "shards.1.replicas[0].datadir: missing required key" in result.stderr, result.stderr
    physical = write_config(tmp_path / "physical.toml", store_dir=tmp_path / "store", shards={"1": endpoint(
        primary, databases=["app", "hb"], backup_from="replica", method="mariabackup",
        replicas=[{"socket": str(replica.socket), "datadir": str(replica.datadir)}], heartbeat_table="hb.heartbeat",
        replication_user="repl", replication_password_env="BACKUPD_TEST_REPL_PW")},
        targets={"dr": physical_target(rebuilt, read_from=["local"], restore_dir=tmp_path / "scratch")})
    unsafe = physical.with_name("unsafe.toml")
    unsafe.write_text(physical.read_text().replace('heartbeat_table = "hb.heartbeat"', "safe_slave_backup = true"))
    result = run("backupd", "--config", str(unsafe), "backup", "--shard", "1")
    assert result.code == 2 and "shards.1.safe_slave_backup: needs heartbeat_table" in result.stderr, result.stderr

    with application_writes(primary, first_id=800000, deletes=True) as rounds:
        time.sleep(1)
        taken = manifest(physical, backup_json(physical, "--kind", "full")["id"])
        time.sleep(1)
        incremental = manifest(physical, backup_json(physical, "--kind", "incremental")["id"])
        assert rounds[0] > 0
    assert incremental["kind"] == "incremental" and incremental["parent_id"] == taken["id"]
    assert taken["method"] == "mariabackup" and taken["taken_from"]["replica"] == f"replica socket {replica.socket}"
    coordinates = taken["coordinates"]
    assert coordinates["server_id"] == primary.query("SELECT @@server_id")[0][0]
    at = primary.query("SELECT BINLOG_GTID_POS(%s, %s)", (coordinates["binlog_file"], coordinates["binlog_pos"]))
    assert at[0][0] == coordinates["gtid"], (coordinates, at)

    result = run("restore", "--config", str(physical), "--shard", "1", "--target", "dr", "--replica-of", "1",
                 "--json", env=REPL_ENV)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["chain"] == [taken["id"], incremental["id"]]
    wait_replica(primary, rebuilt)
    assert table_fingerprint(rebuilt, "app") == table_fingerprint(primary, "app")

    # a replicated temporary table open on the replica (statement-based): the copy is refused
    with closing(primary.connect(database="app")) as session, session.cursor() as cursor:
        cursor.execute("SET SESSION binlog_format = 'STATEMENT'")
        cursor.execute("CREATE TEMPORARY TABLE app.scratch (id INT)")
        wait_replica(primary, replica)
        result = run("backupd", "--config", str(physical), "backup", "--shard", "1")
    assert result.code == 1 and "1 replicated temporary table(s) open at the snapshot" in result.stderr, result.stderr
    assert "safe_slave_backup" in result.stderr

    # --safe-slave-backup: mariabackup stops the replica's SQL thread for its copy and restarts it
    safe = physical.with_name("safe.toml")
    safe.write_text(physical.read_text().replace('backup_from = "replica"',
                                                 'backup_from = "replica"\nsafe_slave_backup = true'))
    result = run("backupd", "--config", str(safe), "backup", "--shard", "1", "--json")
    assert result.code == 0, result.stderr
    assert manifest(physical, json.loads(result.stdout)["id"])["taken_from"]["data_time_from"] == "heartbeat"
    assert replica.query("SHOW SLAVE STATUS")[0][11] == "Yes"  # Slave_SQL_Running: started again

    # LSNs are one server's own: with the replica stopped, the fallback to the primary takes a full
    replica.execute("STOP SLAVE")
    fallback = physical.with_name("fallback.toml")
    fallback.write_text(physical.read_text().replace('backup_from = "replica"', 'backup_from = "replica"\n'
                                                     f'fallback_to_primary = true\ndatadir = "{primary.datadir}"'))
    result = run("backupd", "--config", str(fallback), "backup", "--shard", "1", "--kind", "incremental", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["kind"] == "full" and "instead of a physical incremental" in result.stderr, \
        result.stdout + result.stderr


def test_binlogs_archived_from_the_replica_replay_exactly_from_the_primarys_backup(fleet):
    """The archiver reads the replica's binlog (log_slave_updates): its segments are the
    replica's files and positions, the backups record the primary's. A point-in-time restore
    matches them by GTID: ``--at`` a moment between two write phases equals the primary's state
    then, and the archive's end equals the primary's final state. Losing the segment right after
    the backup is a named gap, not a restore; pointing the archiver at the primary afterwards is
    refused (one archive follows one server). Each command: ``run``'s 300 s timeout."""
    config, primary, replica, target = fleet
    text = config.read_text().replace('backup_from = "replica"', 'binlogs_from = "replica"')
    config.write_text(text + "\n[binlogs]\nflush_every = \"1s\"\nmax_lag = \"30s\"\n")
    full = manifest(config, backup_json(config, "--kind", "full")["id"])  # from the primary now
    assert "taken_from" not in full and full["coordinates"]["server_id"] == 1
    archiver = Archiver(config, "1", config.parent / "archiver.log")
    try:
        with application_writes(primary, first_id=900000, deletes=True):
            time.sleep(2)
        wait_replica(primary, replica)
        at, expected_at = whole_second_after_now(), table_fingerprint(primary, "app")
        with application_writes(primary, first_id=950000, deletes=True):
            time.sleep(2)
        wait_replica(primary, replica)
        wait_archived(config, "1", replica)
    finally:
        summary = archiver.stop()
    assert summary["transactions"] > 0 and "archiving binlogs of replica socket" in archiver.text()
    records = [json.loads(p.read_text()) for p in sorted((config.parent / "store" / "binlogs" / "1").glob("*/*.json"))
               if p.parent.name != "keys"]
    assert records and {r["server_id"] for r in records} == {2} and {r["format_version"] for r in records} == {4}

    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--at", at, "--json")
    assert result.code == 0, result.stderr
    assert "replaying from its GTID position" in result.stderr
    assert table_fingerprint(target, "app") == expected_at
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--force", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["replay"]["transactions"] > 0
    assert table_fingerprint(target, "app") == table_fingerprint(primary, "app")

    # the first segment after the backup's GTID position lost from the store: a named gap
    held = int(full["coordinates"]["gtid"].split("-")[-1])
    first = min((r for r in records if r["gtids"].get("0", [0, 0])[1] > held), key=lambda r: (r["file"], r["start_pos"]))
    for path in (config.parent / "store" / "binlogs" / "1" / first["file"]).glob(f"{first['start_pos']:012d}-*"):
        path.unlink()
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--force")
    assert result.code != 0 and "the binlog archive has a gap after" in result.stderr, result.stderr

    back = config.with_name("primary-archive.toml")
    back.write_text(config.read_text().replace('binlogs_from = "replica"', ""))
    result = run("backupd", "--config", str(back), "binlogs", "--shard", "1")
    assert result.code == 1 and "an archive follows one server's binlog" in result.stderr, result.stderr
