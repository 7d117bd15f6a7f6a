"""FLOAT and the other values whose text could lose information: restored bit-exact and verified,
and a lossy round trip fails verification naming the table and the column."""

from __future__ import annotations

import json
import re
import struct
import subprocess

import pytest

from backupd.config import EndpointConfig
from backupd.mysql.connection import connect
from backupd.mysql.reference import CRC_SUM64, CRC_SUM64_EXACT, compute_reference
from backupd.repo.sealed import seal
from restore.verify import TableVerifier
from tests.integration.support import backup, rewrite_parts, run, write_config
from tests.testbed import seed_edge_cases

pytestmark = pytest.mark.integration

EXACT_COLUMNS = ("id, CAST(f AS DOUBLE), CAST(fu AS DOUBLE), CAST(f4 AS DOUBLE), d, twice, dec_wide, tm, ts, "
                 "bits + 0, ST_AsBinary(g), note")


@pytest.fixture
def source(mariadb_factory):
    server = mariadb_factory("source")
    seed_edge_cases(server)
    return server


@pytest.fixture
def target(mariadb_factory):
    return mariadb_factory("target")


def exact_rows(server) -> list[tuple]:
    """Every value of edge.floats, FLOAT read through DOUBLE: equal lists mean equal bits."""
    return server.query(f"SELECT {EXACT_COLUMNS} FROM edge.floats ORDER BY id")


def test_floats_and_other_lossy_types_restore_bit_exact_and_verified(tmp_path, source, target):
    config = write_config(tmp_path / "backupd.toml", shards={"1": source}, targets={"dr": target})
    backup(config, "1")
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr")
    assert result.code == 0, result.stderr

    assert exact_rows(target) == exact_rows(source)
    third = target.query("SELECT CAST(f AS DOUBLE) FROM edge.floats WHERE id = 1")[0][0]
    assert struct.pack("<f", third) == struct.pack("<f", 1 / 3)  # the float nearest 1/3, every bit
    smallest = target.query("SELECT CAST(f AS DOUBLE), d FROM edge.floats WHERE id = 5")[0]
    assert smallest == (1.401298464324817e-45, 5e-324)  # subnormals survive
    # the rows were loaded before the trigger existed: it fired on the source only
    assert target.query("SELECT COUNT(*) FROM edge.audit_log") == source.query("SELECT COUNT(*) FROM edge.audit_log")


def round_floats(sql: bytes) -> bytes:
    """The exact FLOAT literals backupd writes, rounded to 6 decimals as a lossy dump would
    (``0.3333333432674408e0`` becomes ``0.3333330000000000e0``; the length stays)."""
    return re.sub(rb"(\d\.\d{6})(\d+)e0", lambda m: m.group(1) + b"0" * len(m.group(2)) + b"e0", sql)


def test_a_lossy_round_trip_fails_verification_naming_the_table_and_the_column(tmp_path, source, target):
    config = write_config(tmp_path / "backupd.toml", shards={"1": source}, targets={"dr": target})
    backup_id = backup(config, "1")
    assert rewrite_parts(tmp_path / "store", "1", backup_id, round_floats) > 0  # parts and manifest agree
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr")
    assert result.code == 3, result.stderr
    assert f"restored data differs from backup {backup_id}" in result.stderr
    assert "edge.floats: digest" in result.stderr and "columns f, fu, twice differ" in result.stderr  # FLOAT(10,4) keeps its 4 decimals
    assert exact_rows(target) != exact_rows(source)


def test_the_previous_digest_misses_a_plain_mysqldump_copy_and_the_exact_one_names_the_columns(source, target):
    """The bug this digest fixes: mysqldump writes FLOAT with 6 digits and the old digest, which
    read FLOAT the same lossy way, called the copy equal (without the generated DOUBLE column,
    which computed from the changed FLOAT would show the change)."""
    source.execute("ALTER TABLE edge.floats DROP COLUMN twice")
    dump = subprocess.run(["mysqldump", "--no-defaults", f"--socket={source.socket}", "-uroot", "--hex-blob", "--routines",
                           "--databases", "edge"], check=True, capture_output=True).stdout
    subprocess.run(["mysql", "--no-defaults", f"--socket={target.socket}", "-uroot"], input=dump, check=True)
    source_endpoint = EndpointConfig(socket=str(source.socket), user="root")
    target_endpoint = EndpointConfig(socket=str(target.socket), user="root")
    conn = connect(source_endpoint, label="source")
    try:
        old = compute_reference([conn], ["edge"], "digest", label="source", algorithm=CRC_SUM64)
        exact = compute_reference([conn], ["edge"], "digest", label="source", algorithm=CRC_SUM64_EXACT)
    finally:
        conn.close()

    blind = TableVerifier(target_endpoint, old, label="target").finish()
    assert blind.ok, blind.failures  # blind to the change
    report = TableVerifier(target_endpoint, exact, label="target").finish()
    assert [f.split(":")[0] for f in report.failures] == ["edge.floats"]
    assert "columns f, fu differ" in report.failures[0]  # f4 is FLOAT(10,4): 4 decimals survive


def test_a_backup_with_the_previous_digest_still_restores_and_verifies_with_it(tmp_path, source, target):
    """A format-2 manifest (written before exact digests) keeps its algorithm: the restore
    computes the old digest on the target, and still catches a difference it can see."""
    config = write_config(tmp_path / "backupd.toml", shards={"1": source}, targets={"dr": target})
    backup_id = backup(config, "1")
    conn = connect(EndpointConfig(socket=str(source.socket), user="root"), label="source")
    try:
        old = compute_reference([conn], ["edge"], "digest", label="source", algorithm=CRC_SUM64)
    finally:
        conn.close()
    path = tmp_path / "store" / "1" / backup_id / "manifest.json"
    document = json.loads(path.read_text())
    document["format_version"] = 2
    document["reference"] = old.model_dump(mode="json", exclude_none=True)
    path.write_bytes(seal(document))

    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["verified"] is True and exact_rows(target) == exact_rows(source)

    document["reference"]["tables"][0]["digest"] = "0" * 16  # edge.audit_log
    path.write_bytes(seal(document))
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--force")
    assert result.code == 3 and "edge.audit_log: digest" in result.stderr, result.stderr
