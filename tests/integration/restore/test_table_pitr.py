"""One table taken to a point in time inside the live shard: ``restore --table ... --at/--gtid``
replays only that table's rows events (from the chain's coordinates) into its verified scratch
copy, then swaps it in; other tables are never touched. What rows events cannot show is
refused with the target untouched: DDL on the table, statement-logged changes, a table with
foreign keys, and a binlog that does not match the backup (an update whose row is not there).

The target is the source itself (the live primary). The archiver flushes every second; every
command must finish within ``run``'s timeout (300 s).
"""

from __future__ import annotations

from contextlib import closing

import pytest

from tests.integration.restore.test_pitr import buckets, gtid, pitr_config, restore
from tests.integration.support import Archiver, backup, run, wait_archived, whole_second_after_now
from tests.testbed import seed_edge_cases, seed_shard, table_fingerprint

pytestmark = pytest.mark.integration


def insert(server, table: str, row_id: int, note: str) -> None:
    server.execute(f"INSERT INTO app.`{table}` (id, data, created_at, updated_at) VALUES "
                   f"({row_id}, '{{\"note\": \"{note}\"}}', NOW(6), NOW(6))")


def scratch_databases(server) -> list[str]:
    return [r[0] for r in server.query("SHOW DATABASES") if r[0].startswith("backupd_")]


def test_one_bucket_to_a_point_in_time_in_the_live_shard(tmp_path, mariadb_factory):
    """A full, binlog, an incremental, more binlog, then an application bug that overwrites a
    bucket: ``--table --at`` (the moment before the bug) gives the bucket back exactly as it
    was then, from the incremental's coordinates, counting only its own transactions (some of
    them also wrote to other tables); ``--gtid`` and ``--as`` stop exactly after a transaction;
    FLOAT values changed after the backup come back bit-exact from the rows events; every other
    table is as it was."""
    source = mariadb_factory("source")
    seed_shard(source, 0, 8, target_bytes=128 * 1024)
    seed_edge_cases(source)
    config = pitr_config(tmp_path, {"1": source}, {"live": source})
    backup(config, "1")
    archiver = Archiver(config, "1", tmp_path / "archiver.log")
    victim, other = buckets(source)[:2]

    with closing(source.connect(database="app")) as conn, conn.cursor() as cur:  # one transaction, two tables
        cur.execute(f"UPDATE `{other}` SET data = JSON_SET(data, '$.with_victim', 1) ORDER BY id LIMIT 2")
        cur.execute(f"UPDATE `{victim}` SET data = JSON_SET(data, '$.phase', 1) ORDER BY id LIMIT 3")
        cur.execute(f"INSERT INTO `{victim}` (id, data, created_at, updated_at) VALUES "
                    "(800001, '{\"phase\": 1}', NOW(6), NOW(6))")
        conn.commit()
    source.execute("UPDATE edge.floats SET f = 1/3, d = 1/3 WHERE id = (SELECT MIN(id) FROM edge.floats)")
    at_1 = whole_second_after_now()
    then_1 = {**table_fingerprint(source, "app"), "floats": table_fingerprint(source, "edge")["floats"]}
    incremental = backup_incremental(config)

    insert(source, victim, 800002, "phase 2")                                  # victim transaction 1
    source.execute(f"UPDATE app.`{victim}` SET data = '{{\"edited\": 2}}' WHERE id = 800001")  # 2
    middle, then_middle = gtid(source), table_fingerprint(source, "app")[victim]
    insert(source, other, 800003, "another table")
    source.execute(f"DELETE FROM app.`{victim}` ORDER BY id LIMIT 2")         # 3
    at_2 = whole_second_after_now()
    then_2 = table_fingerprint(source, "app")
    source.execute(f"UPDATE app.`{victim}` SET data = '{{}}'")               # the application's bug
    insert(source, other, 800004, "after the bug")
    wait_archived(config, "1", source)
    archiver.stop()
    assert then_1[victim] != then_2[victim] != table_fingerprint(source, "app")[victim]

    before = table_fingerprint(source, "app")
    report = restore(config, "--shard", "1", "--target", "live", "--table", f"app.{victim}", "--at", at_2,
                     "--force")
    after = table_fingerprint(source, "app")
    assert after[victim] == then_2[victim]
    assert {t: v for t, v in after.items() if t != victim} == {t: v for t, v in before.items() if t != victim}
    assert report["chain"][-1] == incremental and report["tables"][0]["replaced"] is True
    assert report["replay"]["tables"]["transactions"] == 3  # the victim's three, from the incremental on
    assert report["replay"]["tables"]["per_table"] == {f"app.{victim}": 3}
    assert report["tables"][0]["rows"] == then_2[victim][0] and not scratch_databases(source)

    report = restore(config, "--shard", "1", "--target", "live", "--table", f"app.{victim}", "--gtid", middle,
                     "--as", "app.at_middle")
    assert table_fingerprint(source, "app")["at_middle"] == then_middle
    assert report["replay"]["tables"]["last_gtid"] == middle and report["replay"]["tables"]["transactions"] == 2

    restore(config, "--shard", "1", "--target", "live", "--table", "edge.floats", "--at", at_1,
            "--as", "edge.floats_then")  # from the full's coordinates: the FLOAT update is a rows event
    assert table_fingerprint(source, "edge")["floats_then"] == then_1["floats"]
    assert after[victim] == table_fingerprint(source, "app")[victim]  # --as left the original alone


def backup_incremental(config) -> str:
    result = run("backupd", "--config", str(config), "backup", "--shard", "1", "--kind", "incremental")
    assert result.code == 0, result.stderr
    return result.stdout.strip()


def test_what_rows_events_cannot_show_is_refused_and_the_target_untouched(tmp_path, mariadb_factory):
    """After the backup: an ALTER of one table, a row inserted with the binlog off and then
    updated (the binlog no longer matches the backup), a statement-logged UPDATE, and a table
    with a foreign key. Restoring each table to a point after its change fails (exit 1 naming
    the transaction and what it did, or the server's "can't find record"; exit 2 for the foreign
    key) and leaves the live shard as it was, with no scratch database; to a point before the
    change it works."""
    source = mariadb_factory("source")
    seed_shard(source, 0, 8, target_bytes=64 * 1024)
    source.execute("CREATE TABLE app.parent (id INT PRIMARY KEY)")
    source.execute("CREATE TABLE app.child (id INT PRIMARY KEY, parent_id INT, "
                   "FOREIGN KEY (parent_id) REFERENCES app.parent (id) ON DELETE CASCADE)")
    source.execute("INSERT INTO app.parent VALUES (1), (2)")
    source.execute("INSERT INTO app.child VALUES (10, 1), (20, 2)")
    config = pitr_config(tmp_path, {"1": source}, {"live": source})
    backup(config, "1")
    archiver = Archiver(config, "1", tmp_path / "archiver.log")
    altered, diverged, by_statement = buckets(source)[:3]

    insert(source, altered, 700001, "before the alter")
    at_before = whole_second_after_now()
    source.execute(f"ALTER TABLE app.`{altered}` ADD COLUMN note VARCHAR(20)")
    alter_gtid = gtid(source)
    with closing(source.connect(database="app", autocommit=True)) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION sql_log_bin = 0")
        cur.execute(f"INSERT INTO `{diverged}` (id, data, created_at, updated_at) VALUES "
                    "(700002, '{}', NOW(6), NOW(6))")
        cur.execute("SET SESSION sql_log_bin = 1")
        cur.execute(f"UPDATE `{diverged}` SET data = '{{\"x\": 1}}' WHERE id = 700002")
        diverged_gtid = gtid(source)
        cur.execute("SET SESSION binlog_format = 'STATEMENT'")
        cur.execute(f"UPDATE `{by_statement}` SET data = '{{\"y\": 1}}' ORDER BY id LIMIT 1")
        statement_gtid = gtid(source)
    source.execute("DELETE FROM app.parent WHERE id = 1")  # cascades to app.child, unlogged
    wait_archived(config, "1", source)
    archiver.stop()
    live = {db: table_fingerprint(source, db) for db in ("app",)}

    def refused(table: str, *args: str, code: int = 1) -> str:
        result = run("restore", "--config", str(config), "--shard", "1", "--target", "live", "--table",
                     f"app.{table}", "--as", "app.restored", *args)
        assert result.code == code, result.stderr
        assert {"app": table_fingerprint(source, "app")} == live and not scratch_databases(source)
        return result.stderr

    stderr = refused(altered)
    assert f"transaction {alter_gtid}" in stderr and "changed the table's definition (ALTER statement)" in stderr
    assert "cannot replay app." + altered in stderr
    stderr = refused(diverged, "--gtid", diverged_gtid)
    assert "Can't find record" in stderr, stderr
    assert "BINLOG" not in stderr  # the statement the client echoes holds row images
    stderr = refused(by_statement)
    assert f"transaction {statement_gtid}" in stderr and "binlog_format is not ROW" in stderr
    stderr = refused("child", code=2)
    assert "app.child has foreign keys" in stderr

    restore(config, "--shard", "1", "--target", "live", "--table", f"app.{altered}", "--at", at_before,
            "--as", "app.restored")
    assert source.query("SELECT COUNT(*) FROM app.restored WHERE id = 700001")[0][0] == 1
