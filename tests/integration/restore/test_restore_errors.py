"""Restore errors say what happened, name the table, say what was applied, and never quote row data."""

from __future__ import annotations

import pytest

from tests.integration.support import backup, rewrite_parts, run, write_config
from tests.testbed import seed_edge_cases, seed_shard

pytestmark = pytest.mark.integration

ROW_DATA = ("INSERT INTO", "VALUES", "\"kind\"", "'insert'", "0x")  # what an echoed statement would show


def test_a_target_out_of_space_says_so_and_names_the_table(tmp_path, mariadb_factory):
    """The server says "The table 't' is full" (its error 28 only in its own log): the restore
    says the target ran out of space. Bound: seconds; leaves a partly loaded target, said so."""
    source = mariadb_factory("source")
    seed_shard(source, 1, 16, target_bytes=24 * 1024 * 1024)
    # a 12 MiB system tablespace that cannot grow, holding every table: a disk that fills up
    target = mariadb_factory("small", extra_args=["--innodb-file-per-table=0", "--innodb-data-file-path=ibdata1:12M"])
    config = write_config(tmp_path / "backupd.toml", shards={"1": source}, targets={"dr": target})
    backup(config, "1")
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--jobs", "2")
    assert result.code == 1, result.stderr
    assert "target dr ran out of space (its disk or tablespace is full)" in result.stderr, result.stderr
    assert "table app.bucket_" in result.stderr  # the server's own words follow ("is full", "No more room")
    assert "partially restored" in result.stderr and "tables loaded" in result.stderr
    assert not any(marker in result.stderr for marker in ROW_DATA), result.stderr


def test_a_failing_statement_is_never_quoted_with_its_rows(tmp_path, mariadb_factory):
    """A statement the server refuses is reported by its code and message, never quoted with its
    rows (the mysql client used to echo it: kilobytes of a customer's rows in a log)."""
    source = mariadb_factory("source")
    seed_edge_cases(source)
    target = mariadb_factory("target")
    config = write_config(tmp_path / "backupd.toml", shards={"1": source}, targets={"dr": target})
    backup_id = backup(config, "1")
    wrong = b"INSERT INTO `no_pk`     VALUES"  # audit_log's rows sent to the wrong table
    assert rewrite_parts(tmp_path / "store", "1", backup_id,
                         lambda sql: sql.replace(b"INSERT INTO `audit_log` VALUES", wrong)) == 1
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "-v")
    assert result.code == 1, result.stderr
    assert "table edge.audit_log: " in result.stderr
    assert "ERROR 1100: Table 'no_pk' was not locked with LOCK TABLES" in result.stderr  # its statement held rows
    assert "of 4 tables loaded" in result.stderr
    assert not any(marker in result.stderr for marker in ROW_DATA), result.stderr
