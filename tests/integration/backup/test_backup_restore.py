"""Full backup and verified restore against real MariaDB servers started by the test bed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import zstandard

from backupd.repo.sealed import seal
from tests.integration.support import BIN, application_writes, backup, listing, run, store_files, write_config
from tests.testbed import seed_edge_cases, seed_shard, table_fingerprint

pytestmark = pytest.mark.integration


@pytest.fixture
def source(mariadb_factory):
    server = mariadb_factory("source")
    seed_shard(server, 3, 64, target_bytes=1024 * 1024)
    seed_edge_cases(server)
    server.execute("INSERT INTO edge.oddities (id) VALUES (424242)")  # binlogged: a GTID exists
    return server


@pytest.fixture
def target(mariadb_factory):
    return mariadb_factory("target")


@pytest.fixture
def config(tmp_path, source, target):
    return write_config(tmp_path / "backupd.toml", shards={"3": source}, targets={"dr": target})


def fingerprints(server, databases=("app", "edge")):
    return {db: table_fingerprint(server, db) for db in databases}


def test_full_backup_and_verified_restore_equal_the_source(config, source, target, tmp_path):
    backup_id = backup(config, "3")
    assert backup_id.endswith(tuple("0123456789abcdef")) and "-full-" in backup_id

    [entry] = listing(config, "3")
    for key in ("id", "shard", "kind", "started_at", "finished_at", "raw_bytes", "stored_bytes", "stores"):
        assert key in entry
    assert entry["id"] == backup_id and entry["kind"] == "full" and entry["stores"] == ["local"]
    assert entry["raw_bytes"] > 1024 * 1024 > entry["stored_bytes"] > 0
    assert entry["gtid"] is not None and entry["binlog_file"]

    manifest = json.loads((tmp_path / "store" / "3" / backup_id / "manifest.json").read_text())
    assert manifest["format_version"] == 8 and len(manifest["content_sha256"]) == 64  # sealed
    assert not any("md5" in p for p in manifest["parts"])  # a local store reports no MD5 to compare with
    assert manifest["reference"]["digest_algorithm"] == "crc32-crc32c-sum64-exact"
    floats = next(t for t in manifest["reference"]["tables"] if t["table"] == "floats")
    assert set(floats["column_digests"]) == {"f", "fu", "f4", "d", "twice"}
    sections = {(x["kind"], x["database"], x["table"]): x for x in manifest["sections"]}  # table-addressed
    assert {("preamble", None, None), ("database", "app", None), ("objects", "edge", None)} <= set(sections)
    oddities = sections[("table", "edge", "oddities")]  # structure, rows, then its trigger
    assert 0 < oddities["data_start"] < oddities["data_end"] < oddities["raw_bytes"]
    assert sorted(i for x in manifest["sections"] for i in x["parts"]) == [p["index"] for p in manifest["parts"]]
    assert len(manifest["parts"]) > 1  # 64 KiB parts
    tables = {(t["database"], t["table"]) for t in manifest["reference"]["tables"]}
    assert ("edge", "oddities") in tables and ("edge", "no_pk") in tables
    assert all(t["digest"] for t in manifest["reference"]["tables"])
    kinds = {o["kind"] for o in manifest["reference"]["objects"]}
    assert {"view", "trigger", "procedure", "function"} <= kinds

    result = run("restore", "--config", str(config), "--shard", "3", "--target", "dr", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] is True and report["backup"] == backup_id
    assert report["tables"] == len(tables)
    assert report["tables_verified_during_load"] > 0  # verification overlapped the load

    # an independent oracle agrees: every row of every table is identical
    assert fingerprints(target) == fingerprints(source)
    assert target.query("SELECT COUNT(*) FROM edge.v_oddities") == source.query("SELECT COUNT(*) FROM edge.v_oddities")
    def names(server):
        return sorted(r[0] for r in server.query("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
                                                 "WHERE TRIGGER_SCHEMA='edge'"))

    assert names(target) == names(source) != []
    # the restore wrote nothing to the target's binlog (sql_log_bin=0)
    assert target.query("SELECT @@gtid_binlog_pos")[0][0] in ("", None)


def test_backup_under_concurrent_writes_matches_its_own_snapshot(config, source, target):
    """Writers keep committing during the backup; the reference still equals the dumped data."""
    with application_writes(source, first_id=9_000_000_000) as written:
        backup(config, "3")
    assert written[0] > 10
    result = run("restore", "--config", str(config), "--shard", "3", "--target", "dr", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["verified"] is True


def test_failing_mysqldump_leaves_no_manifest_and_no_parts(tmp_path, source):
    # A mysqldump that streams a few MiB and then dies, as on a lost connection.
    wrapper = tmp_path / "bad-mysqldump"
    wrapper.write_text("#!/bin/sh\nmysqldump \"$@\" | head -c 3000000\n"
                       "echo 'mysqldump: Lost connection to server during query' >&2\nexit 2\n")
    wrapper.chmod(0o755)
    config = write_config(tmp_path / "c.toml", shards={"3": source},
                          settings={"mysqldump": str(wrapper), "compression_threads": 0})
    result = run("backupd", "--config", str(config), "backup", "--shard", "3")
    assert result.code == 1
    assert "mysqldump failed with exit status 2" in result.stderr
    assert "Lost connection to server" in result.stderr
    assert store_files(tmp_path / "store") == []
    assert listing(config) == []


def test_sigterm_mid_backup_leaves_nothing_behind(tmp_path, source):
    # A slow mysqldump (throttled through a pipe) gives time to send SIGTERM mid-stream.
    wrapper = tmp_path / "slow-mysqldump"
    wrapper.write_text("#!/bin/sh\nmysqldump \"$@\" | (head -c 2000000; sleep 6; cat)\n")
    wrapper.chmod(0o755)
    config = write_config(tmp_path / "c.toml", shards={"3": source},
                          settings={"mysqldump": str(wrapper), "compression_threads": 0})
    proc = subprocess.Popen([str(BIN / "backupd"), "--config", str(config), "backup", "--shard", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not list((tmp_path / "store").rglob("part-*.zst")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((tmp_path / "store").rglob("part-*.zst")), "parts should be uploading by now"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert store_files(tmp_path / "store") == []


def test_truncated_dump_is_refused_even_with_exit_zero(tmp_path, source):
    wrapper = tmp_path / "short-mysqldump"
    wrapper.write_text("#!/bin/sh\nmysqldump \"$@\" | head -c 400000\nexit 0\n")
    wrapper.chmod(0o755)
    config = write_config(tmp_path / "c.toml", shards={"3": source}, settings={"mysqldump": str(wrapper)})
    result = run("backupd", "--config", str(config), "backup", "--shard", "3")
    assert result.code == 1
    assert "no 'Dump completed' trailer" in result.stderr
    assert store_files(tmp_path / "store") == []


def test_password_reaches_mysqldump_only_through_an_option_file(tmp_path, source):
    """The password only in a 0600 option file; the child's environment is minimal: credentials
    in backupd's own environment (a store's keys, another shard's password) never reach it; a
    password file others may read is refused, naming it."""
    source.execute("CREATE USER 'bk'@'localhost' IDENTIFIED BY 'pa\"ss w0rd\\\\x'")
    source.execute("GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, RELOAD, PROCESS, LOCK TABLES, "
                   "REPLICATION CLIENT, BINLOG MONITOR ON *.* TO 'bk'@'localhost'")
    (tmp_path / "pw").write_text('pa"ss w0rd\\x\n')
    (tmp_path / "pw").chmod(0o600)
    spy = tmp_path / "spy-mysqldump"
    log = tmp_path / "spy.log"
    spy.write_text(f"#!/bin/sh\necho \"ARGS: $*\" >> {log}\nenv >> {log}\n"
                   f"opt=$(echo \"$1\" | sed 's/--defaults-file=//')\nstat -c 'MODE: %a' \"$opt\" >> {log}\n"
                   "exec mysqldump \"$@\"\n")
    spy.chmod(0o755)
    config = write_config(tmp_path / "c.toml", shards={"3": {
        "socket": str(source.socket), "user": "bk", "password_file": str(tmp_path / "pw")}},
        settings={"mysqldump": str(spy)})
    before = set(Path("/tmp").glob("backupd-*/client.cnf"))
    secrets = {"AWS_SECRET_ACCESS_KEY": "aws-secret-1234", "SHARD_9_PASSWORD": "other-shard-pw-5678"}
    result = run("backupd", "--config", str(config), "backup", "--shard", "3", env=secrets)
    assert result.code == 0, result.stderr
    text = log.read_text()
    assert "pa\"ss" not in text and "w0rd" not in text
    assert "MODE: 600" in text
    assert "PATH=" in text and "aws-secret-1234" not in text and "other-shard-pw-5678" not in text
    assert not set(Path("/tmp").glob("backupd-*/client.cnf")) - before  # removed afterwards
    (tmp_path / "pw").chmod(0o644)
    refused = run("backupd", "--config", str(config), "backup", "--shard", "3")
    assert refused.code == 2 and f"shards.3.password_file: {tmp_path / 'pw'} is readable or writable by group " \
                                 f"or others (mode 0644): chmod 600" in refused.stderr, refused.stderr


def test_a_corrupt_part_of_one_table_exits_3_naming_the_table_and_nothing_of_it_is_applied(
        config, source, target, tmp_path):
    """Parallel restore: one table's part has no good copy. The error names the table and the part;
    the tables loaded before the workers stopped are reported; the bad part's rows are nowhere."""
    source.execute("CREATE TABLE edge.wide (id INT PRIMARY KEY, v VARCHAR(4000))")
    source.execute("INSERT INTO edge.wide VALUES " + ",".join(f"({i}, '{os.urandom(1000).hex()}')" for i in range(200)))
    backup_id = backup(config, "3")
    manifest = json.loads((tmp_path / "store" / "3" / backup_id / "manifest.json").read_text())
    section = next(s for s in manifest["sections"] if s["table"] == "wide")
    assert len(section["parts"]) >= 2
    parts = {p["index"]: p for p in manifest["parts"]}
    first, bad = parts[section["parts"][0]], parts[section["parts"][1]]
    path = tmp_path / "store" / bad["key"]
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 3] ^= 0x01
    path.write_bytes(bytes(blob))
    rows_before_bad = zstandard.ZstdDecompressor().decompressobj().decompress(
        (tmp_path / "store" / first["key"]).read_bytes()).count(b"\n(")  # rows in the part before it

    result = run("restore", "--config", str(config), "--shard", "3", "--target", "dr", "--jobs", "2")
    assert result.code == 3, result.stderr
    assert f"table edge.wide: part {bad['key']}" in result.stderr and "sha256" in result.stderr
    assert "tables loaded" in result.stderr and "loading edge.wide failed (no byte of an unverified part was applied)" in result.stderr
    # the rows of the part before the bad one may have been sent, none of the bad part's
    loaded = target.query("SELECT COUNT(*) FROM edge.wide")[0][0] if target.query(
        "SHOW TABLES FROM edge LIKE 'wide'") else 0
    assert loaded <= rows_before_bad


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_missing_or_truncated_part_is_found_before_touching_the_target(config, source, target, tmp_path, damage):
    backup_id = backup(config, "3")
    manifest = json.loads((tmp_path / "store" / "3" / backup_id / "manifest.json").read_text())
    last = tmp_path / "store" / manifest["parts"][-1]["key"]
    if damage == "missing":
        last.unlink()
    else:
        last.write_bytes(last.read_bytes()[:-100])
    result = run("restore", "--config", str(config), "--shard", "3", "--target", "dr")
    assert result.code == 3
    assert manifest["parts"][-1]["key"] in result.stderr
    assert ("size" in result.stderr) == (damage == "truncated")
    assert target.query("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ('app','edge')")[0][0] == 0


def test_non_empty_target_is_refused_unless_forced(config, source, target):
    target.execute("CREATE DATABASE app")
    target.execute("CREATE TABLE app.keep_me (id INT PRIMARY KEY)")
    target.execute("INSERT INTO app.keep_me VALUES (42)")
    backup(config, "3")
    result = run("restore", "--config", str(config), "--shard", "3", "--target", "dr")
    assert result.code == 1
    assert "target dr already holds database 'app'" in result.stderr
    assert target.query("SELECT id FROM app.keep_me") == [(42,)]
    assert target.query("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='edge'")[0][0] == 0

    forced = run("restore", "--config", str(config), "--shard", "3", "--target", "dr", "--force")
    assert forced.code == 0, forced.stderr
    assert fingerprints(target) == fingerprints(source)


def test_data_mismatch_exits_3_with_a_per_table_summary(config, source, target, tmp_path):
    backup_id = backup(config, "3")
    path = tmp_path / "store" / "3" / backup_id / "manifest.json"
    manifest = json.loads(path.read_text())
    victim = next(t for t in manifest["reference"]["tables"] if t["table"] == "oddities")
    victim["rows"] += 1
    path.write_bytes(seal(manifest))
    result = run("restore", "--config", str(config), "--shard", "3", "--target", "dr")
    assert result.code == 3
    assert "edge.oddities: rows" in result.stderr and "expected" in result.stderr


def test_restore_by_id_and_time(config, source, target, tmp_path):
    first = backup(config, "3")
    time.sleep(1.1)
    source.execute("INSERT INTO edge.oddities (id) VALUES (999999)")
    second = backup(config, "3")
    entries = {e["id"]: e for e in listing(config, "3")}
    assert set(entries) == {first, second}

    at = entries[first]["snapshot_at"]
    result = run("restore", "--config", str(config), "--shard", "3", "--target", "dr", "--at", at, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["backup"] == first
    assert target.query("SELECT COUNT(*) FROM edge.oddities WHERE id = 999999") == [(0,)]

    result = run("restore", "--config", str(config), "--shard", "3", "--target", "dr", "--backup", second, "--force")
    assert result.code == 0, result.stderr
    assert target.query("SELECT COUNT(*) FROM edge.oddities WHERE id = 999999") == [(1,)]

    early = run("restore", "--config", str(config), "--shard", "3", "--target", "dr", "--at", "2001-01-01T00:00:00Z")
    assert early.code == 1 and "no full backup at or before 2001-01-01" in early.stderr
