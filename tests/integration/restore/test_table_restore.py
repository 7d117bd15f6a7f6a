"""One bucket restored into a live shard: ``restore --table``, ``--force`` (an atomic swap),
``--as``; other tables never touched; refusals for what cannot be restored table by table."""

from __future__ import annotations

import json
import threading

import pytest

from tests.integration.backup.test_exact_values import round_floats
from tests.integration.support import backup, rewrite_parts, run, write_config
from tests.testbed import seed_edge_cases, seed_shard, table_fingerprint

pytestmark = pytest.mark.integration


@pytest.fixture
def source(mariadb_factory):
    server = mariadb_factory("source")
    seed_shard(server, 1, 64, target_bytes=2 * 1024 * 1024)
    seed_edge_cases(server)
    return server


@pytest.fixture
def live(mariadb_factory):
    """The target: a live copy of the shard (restored from the backup) that the tests damage."""
    return mariadb_factory("live")


def buckets(server) -> list[str]:
    return [r[0] for r in server.query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA='app' "
                                       "ORDER BY TABLE_NAME")]


def restore(config, *args, expect=0) -> dict | str:
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "live", *args)
    assert result.code == expect, result.stderr
    return json.loads(result.stdout) if "--json" in args and expect == 0 else result.stderr


class Loop:
    """Runs ``round(cursor)`` on a connection to ``server``'s ``app`` in a thread, again and
    again, for as long as the ``with`` block lasts."""

    def __init__(self, server, table: str):
        self.server, self.table = server, table
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        conn = self.server.connect(database="app", autocommit=True)
        while not self.stop.is_set():
            with conn.cursor() as cur:
                self.round(cur)
        conn.close()

    def round(self, cur) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


class Writer(Loop):
    """Commits inserts to ``table``; the ids it wrote."""

    def __init__(self, server, table: str):
        super().__init__(server, table)
        self.ids: list[int] = []

    def round(self, cur) -> None:
        i = 900_000_000 + len(self.ids)
        cur.execute(f"INSERT INTO `{self.table}` (id, data, created_at, updated_at) VALUES "
                    "(%s, '{\"w\": 1}', NOW(6), NOW(6))", (i,))
        self.ids.append(i)


class Reader(Loop):
    """Counts the rows of ``table``; every error it saw (a missing table would be one)."""

    def __init__(self, server, table: str):
        super().__init__(server, table)
        self.errors: list[str] = []
        self.counts: set[int] = set()

    def round(self, cur) -> None:
        try:
            cur.execute(f"SELECT COUNT(*) FROM `{self.table}`")
            self.counts.add(cur.fetchone()[0])
        except Exception as exc:  # recorded for the assertion
            self.errors.append(repr(exc))


def test_one_bucket_restored_into_a_live_shard_touches_nothing_else(tmp_path, source, live):
    config = write_config(tmp_path / "backupd.toml", shards={"1": source}, targets={"live": live})
    backup_id = backup(config, "1")
    at_backup = {db: table_fingerprint(source, db) for db in ("app", "edge")}
    restore(config)  # the live shard starts as the backup
    victim, busy, *rest = buckets(live)
    rows = live.query(f"SELECT COUNT(*) FROM app.`{victim}`")[0][0]
    live.execute(f"UPDATE app.`{victim}` SET data = '{{}}' ORDER BY id LIMIT 5")  # the application's bug
    live.execute(f"DELETE FROM app.`{victim}` ORDER BY id DESC LIMIT 3")
    damaged = table_fingerprint(live, "app")[victim]

    stderr = restore(config, "--table", f"app.{victim}", expect=1)
    assert f"already has base table app.{victim}; refusing to overwrite it" in stderr and "--force" in stderr
    assert table_fingerprint(live, "app")[victim] == damaged

    copy = restore(config, "--table", f"app.{victim}", "--as", "app.recovered", "--json")
    assert copy["tables"] == [{"table": f"app.{victim}", "restored_as": "app.recovered", "replaced": False,
                               "rows": rows, "triggers": 0}] and copy["backup"] == backup_id
    after_copy = table_fingerprint(live, "app")
    assert after_copy[victim] == damaged and after_copy["recovered"] == at_backup["app"][victim]
    live.execute("DROP TABLE app.recovered")

    untouched = {t: v for t, v in table_fingerprint(live, "app").items() if t not in (victim, busy)}
    with Writer(live, busy) as writer, Reader(live, victim) as reader:
        report = restore(config, "--table", f"app.{victim}", "--force", "--json")
    assert report["tables"][0]["replaced"] is True and report["verified"] is True
    assert reader.errors == [] and reader.counts <= {rows, rows - 3}  # the old table or the new one, whole
    final = table_fingerprint(live, "app")
    assert final[victim] == at_backup["app"][victim]  # equal to the source at the backup
    assert {t: v for t, v in final.items() if t not in (victim, busy)} == untouched
    assert len(writer.ids) > 0 and live.query(f"SELECT COUNT(*) FROM app.`{busy}` WHERE id >= 900000000")[0][0] == \
        len(writer.ids)  # the writes to another table during the restore are all there
    assert not [r for r in live.query("SHOW DATABASES") if r[0].startswith("backupd_")]  # no scratch left


def test_patterns_triggers_refusals_and_a_chain_with_an_incremental(tmp_path, source, live):
    config = write_config(tmp_path / "backupd.toml", shards={"1": source}, targets={"live": live})
    backup(config, "1")
    restore(config)
    names = [b for b in buckets(live) if b.startswith("bucket_01")]
    assert len(names) >= 2
    for name in names:
        live.execute(f"DELETE FROM app.`{name}`")
    live.execute("UPDATE edge.oddities SET txt = 'damaged'")
    audit = table_fingerprint(live, "edge")["audit_log"]

    report = restore(config, "--table", "app.bucket_01*", "--table", "edge.oddities", "--force", "--json")
    assert sorted(t["table"] for t in report["tables"]) == sorted([f"app.{n}" for n in names] + ["edge.oddities"])
    fingerprints = table_fingerprint(live, "app") | table_fingerprint(live, "edge")
    expected = table_fingerprint(source, "app") | table_fingerprint(source, "edge")
    assert all(fingerprints[n] == expected[n] for n in [*names, "oddities"])
    oddities = next(t for t in report["tables"] if t["table"] == "edge.oddities")
    assert oddities["triggers"] == 1  # re-created on the restored table...
    assert table_fingerprint(live, "edge")["audit_log"] == audit  # ...after its rows: none fired

    assert "--table app.nope*: no such table in backup" in restore(config, "--table", "app.nope*", expect=2)
    assert "--as names one table" in restore(config, "--table", "app.bucket_01*", "--as", "app.x", expect=2)
    assert "--replica-of cannot be given with --table" in restore(config, "--table", "edge.oddities",
                                                                  "--replica-of", "primary", expect=2)
    assert "no binlog archive in the target's stores: cannot restore to GTID 0-1-1" in \
        restore(config, "--table", "edge.oddities", "--gtid", "0-1-1", expect=1)
    live.execute("CREATE TABLE edge.child (id INT PRIMARY KEY, o INT, FOREIGN KEY (o) REFERENCES edge.oddities (id))")
    assert "has foreign keys" in restore(config, "--table", "edge.oddities", "--force", expect=1)

    # a chain: the full, then an incremental carrying changed rows and deletes (a bucket) and a
    # whole table (no primary key)
    bucket = names[0]
    source.execute(f"UPDATE app.`{bucket}` SET data = JSON_SET(data, '$.later', 1), updated_at = NOW(6) "
                   "ORDER BY id LIMIT 3")
    source.execute(f"DELETE FROM app.`{bucket}` ORDER BY id DESC LIMIT 2")
    source.execute("INSERT INTO edge.no_pk (a, b) VALUES (99, 'after the full')")
    result = run("backupd", "--config", str(config), "backup", "--shard", "1", "--kind", "incremental")
    assert result.code == 0, result.stderr
    at_incremental = table_fingerprint(source, "app") | table_fingerprint(source, "edge")
    report = restore(config, "--table", f"app.{bucket}", "--table", "edge.no_pk", "--force", "--json")
    assert len(report["chain"]) == 2 and report["backup"] == report["chain"][1]
    restored = table_fingerprint(live, "app") | table_fingerprint(live, "edge")
    assert restored[bucket] == at_incremental[bucket] and restored["no_pk"] == at_incremental["no_pk"]
    assert restored[bucket] != expected[bucket]  # the incremental's changes are there


def test_a_table_that_differs_from_its_reference_is_never_moved_into_place(tmp_path, source, live):
    """A backup whose FLOAT rows are lossy (and whose parts and manifest agree): exit 3 naming the
    table and columns; the live table stays as it was and the scratch database is gone."""
    config = write_config(tmp_path / "backupd.toml", shards={"1": source}, targets={"live": live})
    assert rewrite_parts(tmp_path / "store", "1", backup(config, "1"), round_floats) > 0
    live.execute("CREATE DATABASE edge")
    live.execute("CREATE TABLE edge.floats (id INT PRIMARY KEY)")
    live.execute("INSERT INTO edge.floats VALUES (7)")
    stderr = restore(config, "--table", "edge.floats", "--force", expect=3)
    assert "edge.floats: digest" in stderr and "columns f, fu, twice differ" in stderr
    assert "nothing was moved into place" in stderr
    assert live.query("SELECT * FROM edge.floats") == [(7,)]
    assert not [r for r in live.query("SHOW DATABASES") if r[0].startswith("backupd_")]
