"""Incrementals against real servers: full, changes, incremental, more changes, incremental;
every point restores to exactly the source's state at that time (deletes included)."""

from __future__ import annotations

import json

import pytest

from tests.integration.support import application_writes, backup, listing, run, write_config
from tests.testbed import seed_edge_cases, seed_shard, table_fingerprint

pytestmark = pytest.mark.integration

EXTRA_TABLES = [
    # a string primary key and a composite one: deletes travel as a list of live keys
    "CREATE TABLE edge.kv (k VARCHAR(64) NOT NULL PRIMARY KEY, v TEXT, updated_at DATETIME(6) NOT NULL)",
    "CREATE TABLE edge.pairs (a INT NOT NULL, b VARBINARY(16) NOT NULL, v INT, "
    "updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), PRIMARY KEY (a, b))",
    "CREATE TABLE edge.doomed (id INT PRIMARY KEY, updated_at DATETIME(6))",
    "CREATE TABLE edge.reshaped (id INT PRIMARY KEY, updated_at DATETIME(6))",
    # FLOAT rows carried as changed rows (edge.floats, without a change column, travels whole)
    "CREATE TABLE edge.sensor (id INT PRIMARY KEY, f FLOAT, d DOUBLE, updated_at DATETIME(6) NOT NULL)",
]


@pytest.fixture
def source(mariadb_factory):
    server = mariadb_factory("source")
    seed_shard(server, 5, 64, target_bytes=512 * 1024)
    seed_edge_cases(server)
    conn = server.connect()
    with conn.cursor() as cur:
        for sql in EXTRA_TABLES:
            cur.execute(sql)
        cur.executemany("INSERT INTO edge.kv VALUES (%s, %s, NOW(6) - INTERVAL 3 DAY)",
                        [(f"key-{i:03d}", f"value {i} ✓") for i in range(200)])
        cur.executemany("INSERT INTO edge.pairs (a, b, v, updated_at) VALUES (%s, %s, %s, NOW(6) - INTERVAL 3 DAY)",
                        [(i % 10, bytes([i, 0, 255]), i) for i in range(100)])
        cur.execute("INSERT INTO edge.doomed VALUES (1, NOW(6)), (2, NOW(6))")
        cur.execute("INSERT INTO edge.reshaped VALUES (1, NOW(6))")
        cur.executemany("INSERT INTO edge.sensor VALUES (%s, %s / 3e0, %s / 7e0, NOW(6) - INTERVAL 3 DAY)",
                        [(i, i, i) for i in range(1, 51)])
    conn.close()
    return server


@pytest.fixture
def target(mariadb_factory):
    return mariadb_factory("target")


@pytest.fixture
def config(tmp_path, source, target):
    return write_config(tmp_path / "backupd.toml", shards={"5": source}, targets={"dr": target})


def state(server) -> dict:
    return {db: table_fingerprint(server, db) for db in ("app", "edge")}


def incremental(config, shard="5") -> str:
    result = run("backupd", "--config", str(config), "backup", "--shard", shard, "--kind", "incremental")
    assert result.code == 0, result.stderr
    return result.stdout.strip()


def restore(config, *args: str) -> dict:
    result = run("restore", "--config", str(config), "--shard", "5", "--target", "dr", "--force", "--json", *args)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def first_ids(server, table: str, n: int) -> list[int]:
    return [r[0] for r in server.query(f"SELECT id FROM app.`{table}` ORDER BY id LIMIT {n}")]


def test_full_and_two_incrementals_restore_each_point_exactly(config, source, target):
    tables = [r[0] for r in source.query("SELECT TABLE_NAME FROM information_schema.TABLES "
                                         "WHERE TABLE_SCHEMA='app' ORDER BY TABLE_NAME")]
    full_id = backup(config, "5")
    at_full = state(source)

    # changes: updates, inserts, deletes in the middle and at both ends of the key range,
    # string and composite keys, a row inserted and deleted again, a trigger-firing insert
    a, b = tables[0], tables[1]
    ids = first_ids(source, a, 6)
    source.execute(f"UPDATE app.`{a}` SET data = JSON_SET(data, '$.changed', 1), updated_at = NOW(6) "
                   f"WHERE id IN ({ids[0]}, {ids[3]})")
    source.execute(f"DELETE FROM app.`{a}` WHERE id IN ({ids[1]}, {ids[2]})")
    source.execute(f"DELETE FROM app.`{b}` ORDER BY id DESC LIMIT 2")
    source.execute(f"DELETE FROM app.`{b}` ORDER BY id LIMIT 1")
    source.execute(f"INSERT INTO app.`{a}` (id, data, created_at, updated_at) VALUES "
                   f"({ids[1]}, '{{\"reborn\": true}}', NOW(6), NOW(6)), (9000000001, '{{}}', NOW(6), NOW(6))")
    source.execute("DELETE FROM edge.kv WHERE k IN ('key-000', 'key-100', 'key-199')")
    source.execute("UPDATE edge.kv SET v = 'new ✓✓', updated_at = NOW(6) WHERE k = 'key-050'")
    source.execute("DELETE FROM edge.pairs WHERE a = 3")
    source.execute("INSERT INTO edge.pairs (a, b, v) VALUES (42, 'x', 1)")
    source.execute("INSERT INTO edge.oddities (id, txt) VALUES (5001, 'fires the trigger on the source')")
    source.execute("DELETE FROM edge.no_pk LIMIT 1")
    source.execute("UPDATE edge.sensor SET f = f * 1e-30, d = d / 9e0, updated_at = NOW(6) WHERE id <= 10")
    source.execute("UPDATE edge.floats SET f = 2e0 / 3e0 WHERE id = 2")
    first_id = incremental(config)
    at_first = state(source)
    assert at_first != at_full

    # more changes, and the schema moves: a table dropped, one altered, one created, a view added
    source.execute(f"UPDATE app.`{b}` SET updated_at = NOW(6), data = JSON_SET(data, '$.v', 2) ORDER BY id LIMIT 5")
    source.execute(f"DELETE FROM app.`{a}` WHERE id = {ids[4]}")
    source.execute("DROP TABLE edge.doomed")
    source.execute("ALTER TABLE edge.reshaped ADD COLUMN note VARCHAR(20) DEFAULT 'x'")
    source.execute("CREATE TABLE edge.born (id INT PRIMARY KEY, updated_at DATETIME(6))")
    source.execute("INSERT INTO edge.born VALUES (1, NOW(6))")
    source.execute("CREATE VIEW edge.v_kv AS SELECT k FROM edge.kv")
    second_id = incremental(config)
    at_second = state(source)

    entries = {e["id"]: e for e in listing(config, "5")}
    assert entries[first_id]["kind"] == "incremental" and entries[first_id]["parent_id"] == full_id
    assert entries[second_id]["restores_on"] == full_id
    assert entries[first_id]["raw_bytes"] < entries[full_id]["raw_bytes"]
    manifest = json.loads(run("backupd", "--config", str(config), "list", "--json").stdout)
    assert all(m["window_since"] for m in manifest if m["kind"] == "incremental")

    report = restore(config)  # default: the newest point
    assert report["chain"] == [full_id, second_id] and report["verified"] is True
    assert state(target) == at_second
    assert target.query("SHOW TABLES FROM edge LIKE 'doomed'") == []
    assert [r[0] for r in target.query("SELECT note FROM edge.reshaped")] == ["x"]
    assert target.query("SELECT COUNT(*) FROM edge.v_kv")[0][0] == 197
    # restoring wrote nothing to the target's binlog and fired no trigger
    assert target.query("SELECT @@gtid_binlog_pos")[0][0] in ("", None)

    report = restore(config, "--backup", first_id)
    assert report["chain"] == [full_id, first_id] and report["verified"] is True
    assert state(target) == at_first  # the oracle reads FLOAT by its every bit
    assert target.query("SELECT CAST(f AS DOUBLE) FROM edge.sensor WHERE id = 3") == \
        source.query("SELECT CAST(f AS DOUBLE) FROM edge.sensor WHERE id = 3")
    assert target.query(f"SELECT COUNT(*) FROM app.`{a}` WHERE id IN ({ids[2]}, {ids[1]})")[0][0] == 1
    assert target.query("SHOW TABLES FROM edge LIKE 'born'") == []
    assert target.query("SELECT COUNT(*) FROM edge.doomed")[0][0] == 2

    between = entries[first_id]["snapshot_at"]
    report = restore(config, "--at", between)
    assert report["chain"] == [full_id, first_id] and state(target) == at_first

    report = restore(config, "--backup", full_id)
    assert report["chain"] == [full_id] and state(target) == at_full


def test_incremental_taken_under_concurrent_writes_verifies(config, source, target):
    backup(config, "5")
    with application_writes(source, first_id=8_000_000_000, deletes=True) as done:
        incremental_id = incremental(config)
    assert done[0] > 10
    report = restore(config)
    assert report["chain"][-1] == incremental_id and report["verified"] is True


def test_rows_changed_behind_the_change_column_fail_verification(config, source, target):
    """An application that changes a row without touching updated_at: the incremental cannot
    see it, and the restore says so (exit 3, naming the table) instead of passing it off."""
    backup(config, "5")
    source.execute("UPDATE edge.kv SET v = 'sneaky' WHERE k = 'key-007'")  # updated_at untouched
    incremental(config)
    result = run("restore", "--config", str(config), "--shard", "5", "--target", "dr")
    assert result.code == 3
    assert "edge.kv: digest" in result.stderr


def test_incremental_needs_a_full(config, source):
    result = run("backupd", "--config", str(config), "backup", "--shard", "5", "--kind", "incremental")
    assert result.code == 1
    assert "shard 5: no committed logical full backup to base an incremental on" in result.stderr
    assert "backupd backup --shard 5 --kind full" in result.stderr
