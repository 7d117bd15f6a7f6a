"""The daemon's protocol with its children: one encoding per result, errors that name the job."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from backupd.config import load_config
from backupd.ops.audit import AuditReport, Finding
from backupd.protocol import (
    MAINTENANCE,
    BackupOutcome,
    ChildOutputError,
    DrillOutcome,
    JobKind,
    decode,
    encode,
    samples,
)
from backupd.repo.annotations import DrillRecord

COMMITTED = BackupOutcome("committed", "3", "incremental", id="20261204T080000Z-incremental-abcdef",
                          parent_id="20261204T000000Z-full-123456", seconds=12.5, raw_bytes=1000, stored_bytes=200,
                          degraded={"s3": "unreachable"}, store_stats={"s3": {"retries": 4, "errors": 2}})
AUDIT = AuditReport("deep", datetime(2026, 12, 4, 8, tzinfo=UTC), ["3"], ["local", "s3"], backups=2,
                    parts_checked=8, bytes_read=4096, seconds=1.5, sample_percent=10.0,
                    findings=[Finding("part-corrupt", "sha256 differs", shard="3", backup="b", store="s3",
                                      part="3/b/part-000001.zst")])
DRILL = DrillOutcome([DrillRecord("3", "scratch", "20261204T080000Z", "b", ["a", "b"], False, 9.0,
                                  failure="restored data differs", exit_code=3)])


@pytest.mark.parametrize("kind, outcome", [
    (JobKind.INCREMENTAL, COMMITTED),
    (JobKind.FULL, BackupOutcome("skipped", "3", "full", reason="nothing due")),
    (JobKind.AUDIT_DEEP, AUDIT),
    (JobKind.DRILL, DRILL),
])
def test_every_result_round_trips_through_its_one_encoding(kind, outcome):
    decoded = decode(kind, "3", encode(outcome))
    if isinstance(outcome, AuditReport):  # ``newest`` is where to annotate, never sent
        assert decoded.to_json() == outcome.to_json()
    else:
        assert decoded == outcome


@pytest.mark.parametrize("kind, output, why", [
    (JobKind.FULL, "", "printed: nothing"),
    (JobKind.FULL, "Traceback (most recent call last):", "JSONDecodeError"),
    (JobKind.INCREMENTAL, '{"result": "committed"}', "KeyError"),
    (JobKind.FULL, '{"result": "exploded", "shard": "3", "kind": "full"}', "'exploded'"),
    (JobKind.AUDIT_QUICK, '[1, 2]', "not a JSON object"),
    (JobKind.AUDIT_DEEP, '{"level": "deep", "findings": [{"nope": 1}]}', "ValueError"),
    (JobKind.DRILL, '{"level": "quick", "drills": []}', "expected 'drill'"),
])
def test_a_malformed_child_output_is_an_error_naming_the_job(kind, output, why):
    with pytest.raises(ChildOutputError) as error:
        decode(kind, "3", output)
    assert error.value.message.startswith(f"shard 3: the {kind.description} job printed no valid result")
    assert why in error.value.message


def test_job_kinds_say_their_child_command(tmp_path: Path):
    (tmp_path / "c.toml").write_text('[stores.s]\ntype = "local"\npath = "s"\n[audit]\ndeep_sample = 25\n'
                                     '[drill]\ntarget = "t"\n[targets.t]\nuser = "u"\nread_from = ["s"]\n')
    config = load_config(tmp_path / "c.toml")
    assert JobKind.backup("incremental").command("7", config) == [
        "backup", "--shard", "7", "--kind", "incremental", "--if-due", "--json"]
    assert JobKind.AUDIT_DEEP.command("7", config)[-5:] == ["--level", "deep", "--sample", "25", "--heads"]
    assert JobKind.REPAIR.command("7", config) == ["sync", "--shard", "7", "--verify"]
    assert JobKind.DRILL.command("7", config)[-2:] == ["--level", "drill"]
    assert JobKind.PRUNE.command("7", config) == ["prune", "--shard", "7"]
    assert [k.every(config) for k in MAINTENANCE] == [7 * 86400.0, 86400.0]
    assert all(k.is_maintenance for k in MAINTENANCE) and not JobKind.AUDIT_QUICK.is_maintenance


def test_results_become_metrics_in_one_place():
    names = {s.name: s.value for s in samples(COMMITTED)}
    assert names["backupd_backup_success_total"] == 1 and names["backupd_store_retries_total"] == 4
    assert [s.name for s in samples(BackupOutcome.failed("3", "full"))] == ["backupd_backup_failure_total"]
    assert samples(BackupOutcome("skipped", "3", "full")) == []
    findings = [s for s in samples(AUDIT) if s.name == "backupd_audit_findings"]
    assert [(s.labels, s.value) for s in findings] == [((("shard", "3"), ("level", "deep")), 1)]
    verified = [s for s in samples(DRILL) if s.name == "backupd_drill_verified"]
    assert [s.value for s in verified] == [0]
