"""Binlog archiving and point-in-time restores against real servers: --at between phases of
writes equals an independent fingerprint of the source taken then, --gtid stops exactly after
its transaction, kill -9 of the archiver loses nothing acknowledged, server restarts and
rotations leave no gap, lost and damaged segments are found and refused, a fleet restored to
one instant, retention.

Every archiver here flushes each second (``flush_every = 1s``); every command must finish
within its ``run`` timeout (300 s), the archiver must stop within 30 s of SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import closing
from pathlib import Path

import pytest

from backupd.repo.sealed import seal
from tests.integration.support import (
    Archiver,
    application_writes,
    run,
    wait_archived,
    whole_second_after_now,
    write_config,
)
from tests.servers.faulty_proxy import FaultyProxy
from tests.testbed import seed_shard, table_fingerprint
from tests.testbed.config import endpoint, physical_target

pytestmark = pytest.mark.integration

BINLOGS = "[binlogs]\nflush_every = \"1s\"\nmax_lag = \"30s\"\n"


def pitr_config(tmp_path: Path, shards: dict, targets: dict, *, two_stores: bool = False, extra: str = "") -> Path:
    stores = {"a": {"type": "local", "path": str(tmp_path / "a")}}
    if two_stores:
        stores["b"] = {"type": "local", "path": str(tmp_path / "b")}
    config = write_config(tmp_path / "backupd.toml", shards=shards, stores=stores,
                          targets={name: {"socket": str(t.socket), "user": "root", "read_from": list(stores)}
                                   for name, t in targets.items()})
    config.write_text(config.read_text() + BINLOGS + extra)
    return config


def restore(config: Path, *args: str) -> dict:
    result = run("restore", "--config", str(config), *args, "--json")
    assert result.code == 0, result.stderr
    return dict(json.loads(result.stdout))


def gtid(server) -> str:
    return str(server.query("SELECT @@gtid_binlog_pos")[0][0])


def buckets(server) -> list[str]:
    return [row[0] for row in server.query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                                           "TABLE_SCHEMA = 'app' AND TABLE_NAME LIKE 'bucket%' ORDER BY 1")]


def seq(gtid: str) -> int:
    return int(gtid.rsplit("-", 1)[1])


def phase(server, n: int) -> None:
    """Inserts, updates, deletes and DDL, each statement its own transaction (a delete that
    finds no row writes none)."""
    first, second, third = buckets(server)[:3]
    server.execute(f"CREATE TABLE app.extra_{n} (id INT PRIMARY KEY, note VARCHAR(40))")
    server.execute(f"INSERT INTO app.extra_{n} VALUES (1, 'phase {n}'), (2, 'two')")
    server.execute(f"INSERT INTO app.{first} (id, data, created_at, updated_at) VALUES "
                   f"({900000 + n}, '{{\"phase\": {n}}}', NOW(6), NOW(6))")
    server.execute(f"UPDATE app.{second} SET data = JSON_SET(data, '$.touched', %s) ORDER BY id LIMIT 3", (n,))
    server.execute(f"DELETE FROM app.{third} ORDER BY id LIMIT 1")
    if n > 1:
        server.execute(f"ALTER TABLE app.extra_{n - 1} ADD COLUMN changed_in INT DEFAULT {n}")


def segment_files(store: Path, shard: str = "1") -> list[Path]:
    return sorted((store / "binlogs" / shard).rglob("*.zst"))


def test_restore_at_a_time_and_at_a_gtid_equals_the_source_then(tmp_path, mariadb_factory):
    """Writes in three phases a few seconds apart while the archiver runs (an incremental
    between the first two): restore --at a moment between phases equals the source's
    fingerprint taken then (the second from the incremental's coordinates on); --gtid of a
    transaction in the middle of phase 2 stops exactly after it; no --at restores the newest
    archived point. The replay is proven by the target's GTID position and counted."""
    source, target = mariadb_factory("source"), mariadb_factory("target")
    seed_shard(source, 0, 8, target_bytes=128 * 1024)
    config = pitr_config(tmp_path, {"1": source}, {"dr": target})
    assert run("backupd", "--config", str(config), "backup", "--shard", "1").code == 0
    archiver = Archiver(config, "1", tmp_path / "archiver.log")

    phase(source, 1)
    gtid_1 = gtid(source)
    at_1, fingerprint_1 = whole_second_after_now(), table_fingerprint(source, "app")
    incremental = run("backupd", "--config", str(config), "backup", "--shard", "1", "--kind", "incremental")
    assert incremental.code == 0, incremental.stderr
    source.execute("CREATE TABLE app.extra_2 (id INT PRIMARY KEY, note VARCHAR(40))")
    source.execute("INSERT INTO app.extra_2 VALUES (1, 'phase 2')")
    middle, fingerprint_middle = gtid(source), table_fingerprint(source, "app")
    second, third = buckets(source)[1:3]
    source.execute(f"UPDATE app.{second} SET data = JSON_SET(data, '$.later', 1) ORDER BY id LIMIT 2")
    source.execute(f"DELETE FROM app.{third} ORDER BY id LIMIT 2")
    source.execute("ALTER TABLE app.extra_1 ADD COLUMN changed_in INT DEFAULT 2")
    gtid_2 = gtid(source)
    at_2, fingerprint_2 = whole_second_after_now(), table_fingerprint(source, "app")
    phase(source, 3)
    fingerprint_3 = table_fingerprint(source, "app")
    wait_archived(config, "1", source)
    summary = archiver.stop()
    assert summary["segments"] >= 3 and not summary["gaps"]
    assert fingerprint_1 != fingerprint_2 != fingerprint_3

    report = restore(config, "--shard", "1", "--target", "dr", "--at", at_1)
    assert table_fingerprint(target, "app") == fingerprint_1
    assert report["replay"]["transactions"] == seq(gtid_1) and report["verified"]  # the source's first GTIDs
    assert report["replay"]["target_gtid_position"] == report["replay"]["last_gtid"] == gtid_1

    report = restore(config, "--shard", "1", "--target", "dr", "--at", at_2, "--force")
    assert report["chain"][1] == incremental.stdout.strip()  # the incremental's coordinates on
    assert table_fingerprint(target, "app") == fingerprint_2
    assert report["replay"]["transactions"] == seq(gtid_2) - seq(gtid_1) and report["replay"]["last_gtid"] == gtid_2

    report = restore(config, "--shard", "1", "--target", "dr", "--gtid", middle, "--force")
    assert table_fingerprint(target, "app") == fingerprint_middle
    assert report["replay"]["last_gtid"] == middle and report["replay"]["target_gtid_position"] == middle

    report = restore(config, "--shard", "1", "--target", "dr", "--force")  # the newest archived point
    assert table_fingerprint(target, "app") == fingerprint_3 and report["replay"]["last_gtid"] == gtid(source)

    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--force", "--to-backup",
                 "--json")
    assert result.code == 0 and json.loads(result.stdout)["replay"] is None
    assert table_fingerprint(target, "app") == fingerprint_1  # the newest backup alone: the incremental


def test_kill_9_of_the_archiver_loses_nothing_acknowledged_and_a_restart_leaves_no_gap(tmp_path, mariadb_factory):
    """Writes, then kill -9 of the archiver 3 s (3 x flush_every) after the last one: a restore with no --at
    has every write (the RPO held through the crash). A restarted archiver resumes exactly
    there: one contiguous range, no duplicate, and a restore again equals the source."""
    source, target = mariadb_factory("source"), mariadb_factory("target")
    seed_shard(source, 0, 8, target_bytes=128 * 1024)
    config = pitr_config(tmp_path, {"1": source}, {"dr": target}, two_stores=True)
    assert run("backupd", "--config", str(config), "backup", "--shard", "1").code == 0
    archiver = Archiver(config, "1", tmp_path / "archiver.log")
    with application_writes(source, first_id=500000, deletes=True) as rounds:
        time.sleep(2)
    assert rounds[0] > 10
    fingerprint = table_fingerprint(source, "app")
    time.sleep(3)
    archiver.kill()  # SIGKILL: no flush, no goodbye
    report = restore(config, "--shard", "1", "--target", "dr")
    assert table_fingerprint(target, "app") == fingerprint, "a write acknowledged before the kill is missing"
    assert report["replay"]["transactions"] >= rounds[0]

    archiver = Archiver(config, "1", tmp_path / "archiver-2.log")
    with application_writes(source, first_id=600000):
        time.sleep(2)
    wait_archived(config, "1", source)
    archiver.stop()
    archive = json.loads(run("backupd", "--config", str(config), "list", "--binlogs", "--json").stdout)[0]
    assert len(archive["ranges"]) == 1 and archive["gaps"] == [], archive
    assert archive["ranges"][0]["last_gtid"] == gtid(source)
    audit = run("backupd", "--config", str(config), "audit", "--shard", "1", "--json")
    assert audit.code == 0, audit.stdout + audit.stderr
    restore(config, "--shard", "1", "--target", "dr", "--force")
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")


def test_server_restarts_killed_servers_and_rotations_leave_no_gap(tmp_path, mariadb_factory):
    """While the archiver runs: FLUSH BINARY LOGS, a clean restart, and a kill -9 of mysqld
    (each starts a new binlog file; the killed one ends without a rotate event). The archiver
    reconnects each time; the archive is one range and a restore equals the source. It is
    started while the server is down, and waits for it."""
    source, target = mariadb_factory("source"), mariadb_factory("target")
    seed_shard(source, 0, 8, target_bytes=128 * 1024)
    config = pitr_config(tmp_path, {"1": source}, {"dr": target})
    assert run("backupd", "--config", str(config), "backup", "--shard", "1").code == 0
    source.stop()
    archiver = Archiver(config, "1", tmp_path / "archiver.log")
    time.sleep(2)
    assert archiver.process.poll() is None, archiver.text()  # waiting for the server, not gone
    source.start()
    deadline = time.monotonic() + 30
    while "archiving binlogs of" not in archiver.text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "cannot connect" in archiver.text() and "archiving binlogs of" in archiver.text(), archiver.text()
    phase(source, 1)
    source.execute("FLUSH BINARY LOGS")
    phase(source, 2)
    source.stop()
    source.start()
    phase(source, 3)
    os.kill(source._current_pid(), signal.SIGKILL)  # a crash: no rotate event ends the file
    deadline = time.monotonic() + 30
    while source.is_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    source.start()
    phase(source, 4)
    wait_archived(config, "1", source, timeout=60)
    summary = archiver.stop()
    assert summary["reconnects"] >= 2 and not summary["gaps"]
    archive = json.loads(run("backupd", "--config", str(config), "list", "--binlogs", "--json").stdout)[0]
    assert len(archive["ranges"]) == 1 and archive["gaps"] == [], archive
    files = {path.parent.name for path in segment_files(tmp_path / "a")}
    assert len(files) >= 4, files  # the original file, the flush, the restart, the crash
    restore(config, "--shard", "1", "--target", "dr")
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")


def test_lost_and_damaged_segments_are_found_and_never_replayed(tmp_path, mariadb_factory):
    """A segment damaged in one store is read from the other; one deleted from every store is
    a binlog-gap for the audit, and a restore across it is refused before the target is
    touched; a record that lies about its segment's last GTID fails the replay's proof."""
    source, target = mariadb_factory("source"), mariadb_factory("target")
    seed_shard(source, 0, 8, target_bytes=128 * 1024)
    config = pitr_config(tmp_path, {"1": source}, {"dr": target}, two_stores=True)
    assert run("backupd", "--config", str(config), "backup", "--shard", "1").code == 0
    archiver = Archiver(config, "1", tmp_path / "archiver.log")
    for n in (1, 2, 3):
        phase(source, n)
        time.sleep(1.5)  # one segment per phase at least
    wait_archived(config, "1", source)
    archiver.stop()
    segments = segment_files(tmp_path / "a")
    assert len(segments) >= 3

    damaged = segments[1]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    deep = run("backupd", "--config", str(config), "audit", "--shard", "1", "--level", "deep", "--json")
    assert deep.code == 3
    findings = json.loads(deep.stdout)["findings"]
    assert [(f["check"], f["store"]) for f in findings] == [("binlog-segment-corrupt", "a")], findings
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--json")
    assert result.code == 0, result.stderr
    assert "is bad" in result.stderr and damaged.name in result.stderr
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")

    record = segments[-1].with_suffix(".json")  # the last segment replayed names the last GTID
    honest = record.read_text()
    for store in ("a", "b"):
        lying = json.loads(honest)
        lying["last_gtids"] = {"0": "0-1-99999"}
        (tmp_path / store / record.relative_to(tmp_path / "a")).write_bytes(seal(lying))
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--force", "--json")
    assert result.code == 3 and "replay is not proven" in result.stderr, result.stderr
    for store in ("a", "b"):
        (tmp_path / store / record.relative_to(tmp_path / "a")).write_text(honest)

    for store in ("a", "b"):
        for path in (damaged, damaged.with_suffix(".json")):
            (tmp_path / store / path.relative_to(tmp_path / "a")).unlink()
    audit = run("backupd", "--config", str(config), "audit", "--shard", "1", "--json")
    assert audit.code == 3
    gaps = [f for f in json.loads(audit.stdout)["findings"] if f["check"] == "binlog-gap"]
    assert len(gaps) == 1 and damaged.parent.name in gaps[0]["message"], audit.stdout
    listed = run("backupd", "--config", str(config), "list", "--binlogs")
    assert "GAP in the binlog archive" in listed.stderr

    fresh = mariadb_factory("fresh")
    config.write_text(config.read_text().replace(str(target.socket), str(fresh.socket)))
    before = fresh.query("SHOW DATABASES")
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr")
    assert result.code == 1 and "gap" in result.stderr and damaged.parent.name in result.stderr, result.stderr
    assert fresh.query("SHOW DATABASES") == before, "the target was touched"


def test_a_fleet_restored_to_one_instant(tmp_path, mariadb_factory):
    """Two shards, both archived, writes before and after T on both: restore --all-shards --at T
    brings each to its state at T; backupd status shows the fleet's restorable_until."""
    sources = {n: mariadb_factory(f"s{n}") for n in ("1", "2")}
    targets = {n: mariadb_factory(f"t{n}") for n in ("1", "2")}
    for n, server in sources.items():
        seed_shard(server, int(n) - 1, 8, target_bytes=64 * 1024)
    stores = {"a": {"type": "local", "path": str(tmp_path / "a")}}
    target = {"user": "root", "read_from": ["a"], "shards": {n: {"socket": str(t.socket)} for n, t in targets.items()}}
    config = write_config(tmp_path / "backupd.toml", shards={n: s for n, s in sources.items()}, stores=stores,
                          targets={"dr": target})
    config.write_text(config.read_text() + BINLOGS.replace("[binlogs]\n", "[binlogs]\nenabled = true\n"))
    for n in sources:
        assert run("backupd", "--config", str(config), "backup", "--shard", n).code == 0
    archivers = [Archiver(config, n, tmp_path / f"archiver-{n}.log") for n in sources]
    for server in sources.values():
        phase(server, 1)
    at = whole_second_after_now()
    at_t = {n: table_fingerprint(s, "app") for n, s in sources.items()}
    for server in sources.values():
        phase(server, 2)
    for n, server in sources.items():
        wait_archived(config, n, server)
    status = run("backupd", "--config", str(config), "status")
    assert status.code == 0 and "fleet: restorable_until" in status.stdout, status.stdout
    for archiver in archivers:
        archiver.stop()

    result = run("restore", "--config", str(config), "--all-shards", "--target", "dr", "--at", at, "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert all(s["verified"] and s["replay"]["transactions"] >= 4 for s in report["shards"]), report
    for n in sources:
        assert table_fingerprint(targets[n], "app") == at_t[n]


def test_prune_deletes_segments_only_nothing_kept_can_replay(tmp_path, mariadb_factory):
    """Two fulls with writes archived before and after the second; a prune keeping only the
    newest full deletes the segments before its coordinates, keeps the rest, and a restore to
    the newest point still equals the source."""
    source, target = mariadb_factory("source"), mariadb_factory("target")
    seed_shard(source, 0, 8, target_bytes=64 * 1024)
    config = pitr_config(tmp_path, {"1": source}, {"dr": target}, extra="[retention]\nfull_days = 0\n")
    assert run("backupd", "--config", str(config), "backup", "--shard", "1").code == 0
    archiver = Archiver(config, "1", tmp_path / "archiver.log")
    phase(source, 1)
    wait_archived(config, "1", source)
    time.sleep(1.2)
    before = segment_files(tmp_path / "a")
    assert run("backupd", "--config", str(config), "backup", "--shard", "1").code == 0
    phase(source, 2)
    wait_archived(config, "1", source)
    archiver.stop()
    result = run("backupd", "--config", str(config), "prune")
    assert result.code == 0 and "binlog segments deleted" in result.stdout, result.stdout + result.stderr
    after = segment_files(tmp_path / "a")
    assert not set(before) & set(after) and after
    restore(config, "--shard", "1", "--target", "dr")
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")


def test_a_physical_backup_goes_to_a_point_in_time_and_then_replicates_from_there(tmp_path, mariadb_factory):
    """A physical full (mariabackup), writes before and after T: restore --at T into a target
    whose datadir is replaced equals the source at T; --replica-of then starts replication from
    the replayed position (not the backup's) and the replica catches up with the source
    exactly: a wrong start would duplicate or skip the transactions between."""
    source, target = mariadb_factory("source"), mariadb_factory("target")
    seed_shard(source, 0, 8, target_bytes=128 * 1024)
    source.execute("CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'repl-secret'")
    source.execute("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
    shard = endpoint(source, method="physical", datadir=str(source.datadir), replication_user="repl",
                     replication_password_env="PITR_REPL_PW")
    config = write_config(tmp_path / "backupd.toml", shards={"1": shard}, store_dir=tmp_path / "a",
                          targets={"dr": physical_target(target, read_from=["local"],
                                                         restore_dir=tmp_path / "scratch")})
    config.write_text(config.read_text() + BINLOGS)
    assert run("backupd", "--config", str(config), "backup", "--shard", "1").code == 0
    archiver = Archiver(config, "1", tmp_path / "archiver.log")
    phase(source, 1)
    at, at_t = whole_second_after_now(), table_fingerprint(source, "app")
    phase(source, 2)
    wait_archived(config, "1", source)
    archiver.stop()
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--at", at, "--force",
                 "--json", env={"PITR_REPL_PW": "repl-secret"})
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["replay"]["transactions"] >= 4
    assert table_fingerprint(target, "app") == at_t

    phase(source, 3)
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--at", at, "--force",
                 "--replica-of", "1", "--json", env={"PITR_REPL_PW": "repl-secret"})
    assert result.code == 0, result.stderr
    position = source.query("SELECT @@gtid_binlog_pos")[0][0]
    assert target.query("SELECT MASTER_GTID_WAIT(%s, 60)", (position,))[0][0] == 0
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")
    with closing(target.connect()) as conn, conn.cursor() as cur:
        cur.execute("SHOW SLAVE STATUS")
        status = dict(zip([d[0] for d in cur.description], cur.fetchone(), strict=True))
    assert status["Slave_SQL_Running"] == "Yes" and not status["Last_SQL_Error"], status["Last_SQL_Error"]


@pytest.mark.parametrize("fault", ["refuse", "hang"])
def test_a_network_cut_to_the_server_costs_a_reconnect_not_a_gap(tmp_path, mariadb_factory, fault):
    """The archiver reads the source through a loopback proxy; writes go on while the proxy cuts
    every connection and then refuses new ones, or accepts them and never answers (a hung
    network), for 5 s. When the network is back the archiver catches up within 40 s
    (connect_timeout 3 s, backoff at most reconnect_max = 2 s) and the archive is one range: no
    gap, no duplicate."""
    source, target = mariadb_factory("source"), mariadb_factory("target")
    seed_shard(source, 0, 8, target_bytes=64 * 1024)
    proxy = FaultyProxy(source.port)
    try:
        shard = {"host": "127.0.0.1", "port": proxy.port, "user": "root", "connect_timeout": "3s"}
        config = pitr_config(tmp_path, {"1": shard}, {"dr": target}, extra='reconnect_max = "2s"\n')
        assert run("backupd", "--config", str(config), "backup", "--shard", "1").code == 0
        archiver = Archiver(config, "1", tmp_path / "archiver.log")
        phase(source, 1)
        wait_archived(config, "1", source)
        proxy.mode = fault
        phase(source, 2)
        time.sleep(5)
        phase(source, 3)
        proxy.mode = "pass"
        started = time.monotonic()
        wait_archived(config, "1", source, timeout=40)
        assert time.monotonic() - started < 40
        summary = archiver.stop()
        assert summary["reconnects"] >= 1 and not summary["gaps"]
    finally:
        proxy.close()
    archive = json.loads(run("backupd", "--config", str(config), "list", "--binlogs", "--json").stdout)[0]
    assert len(archive["ranges"]) == 1 and archive["gaps"] == [], archive
    restore(config, "--shard", "1", "--target", "dr")
    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")


def test_a_store_that_misses_segments_is_caught_up_while_the_archiver_runs(tmp_path, mariadb_factory):
    """Store b fails every write for a while (its folder replaced by a file): the archiver goes
    on with store a, then copies what b missed once b takes writes again (within
    reconnect_max = 2 s of the next event); afterwards both stores hold the same archive and
    the audit finds nothing."""
    source = mariadb_factory("source")
    seed_shard(source, 0, 8, target_bytes=64 * 1024)
    config = pitr_config(tmp_path, {"1": source}, {}, two_stores=True, extra="")
    config.write_text(config.read_text().replace('max_lag = "30s"\n', 'max_lag = "30s"\nreconnect_max = "2s"\n'))
    assert run("backupd", "--config", str(config), "backup", "--shard", "1").code == 0
    archiver = Archiver(config, "1", tmp_path / "archiver.log")
    phase(source, 1)
    wait_archived(config, "1", source)
    b, away = tmp_path / "b", tmp_path / "b-away"
    b.rename(away)
    b.write_text("not a folder")
    phase(source, 2)
    wait_archived(config, "1", source)
    missed = {p.relative_to(tmp_path / "a") for p in segment_files(tmp_path / "a")} - \
        {p.relative_to(away) for p in segment_files(away)}
    assert missed, "store b should have missed phase 2"
    b.unlink()
    away.rename(b)
    phase(source, 3)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and {p.relative_to(tmp_path / "a") for p in segment_files(tmp_path / "a")} != \
            {p.relative_to(b) for p in segment_files(b)}:
        time.sleep(0.3)
    archiver.stop()
    assert {p.relative_to(tmp_path / "a") for p in segment_files(tmp_path / "a")} == \
        {p.relative_to(b) for p in segment_files(b)}
    assert "caught up with the binlog archive" in archiver.text()
    audit = run("backupd", "--config", str(config), "audit", "--shard", "1", "--level", "deep", "--json")
    assert audit.code == 0, audit.stdout
