"""Pure logic of physical backups and replicas: tool files, chains, disk space, GTID positions."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest

from backupd.config import load_config
from backupd.errors import CatalogError, SourceError, UsageError
from backupd.policy.chain import applies_to, why_not_applicable
from backupd.policy.planner import plan_restore
from backupd.repo.model import Manifest, Physical
from backupd.sources.physical import read_backup_info
from restore.physical import space_problem, user_databases_in
from restore.replica import gtid_reached, parse_gtid_list, resolve_source
from tests.unit.manifests import NOW, full, incremental, make_manifest

INFO = """uuid = b2714c0e
tool_name = mariabackup
tool_version = 10.11.19-MariaDB
server_version = 10.11.19-MariaDB-0+deb12u1-log
binlog_pos = filename 'bin.000004', position '8822', GTID of the last change '0-1-17,1-5-3'
"""
CHECKPOINTS = "backup_type = incremental\nfrom_lsn = 44404\nto_lsn = 2670202\nlast_lsn = 2670202\n"


@pytest.mark.parametrize("prefix", ["xtrabackup_", "mariadb_backup_"])
def test_backup_info_from_either_file_name(tmp_path, prefix):
    (tmp_path / f"{prefix}checkpoints").write_text(CHECKPOINTS)
    (tmp_path / f"{prefix}info").write_text(INFO)
    info = read_backup_info(tmp_path, label="shard 7")
    assert (info.from_lsn, info.to_lsn) == (44404, 2670202)
    assert info.coordinates.binlog_file == "bin.000004" and info.coordinates.binlog_pos == 8822
    assert info.coordinates.gtid == "0-1-17,1-5-3" and info.tool_version == "10.11.19-MariaDB"


def test_backup_info_without_binlog_or_files_is_an_error(tmp_path):
    with pytest.raises(SourceError, match="no checkpoints file"):
        read_backup_info(tmp_path, label="shard 7")
    (tmp_path / "xtrabackup_checkpoints").write_text(CHECKPOINTS)
    (tmp_path / "xtrabackup_info").write_text(INFO.replace("binlog_pos", "no_binlog"))
    with pytest.raises(SourceError, match="log_bin"):
        read_backup_info(tmp_path, label="shard 7")


def physical_full(at: timedelta, to_lsn: int = 1000) -> Manifest:
    base = full(at)
    return base.model_copy(update={"method": "mariabackup",
                                   "physical": Physical(tool="mariabackup", from_lsn=0, to_lsn=to_lsn)})


def physical_incremental(at: timedelta, base: Manifest, from_lsn: int | None = None) -> Manifest:
    assert base.physical is not None
    moment = NOW + at
    return make_manifest(id=f"{moment:%Y%m%dT%H%M%SZ}-incremental-p{int(at.total_seconds())}", kind="incremental",
                         method="mariabackup", parent_id=base.id, started_at=moment, finished_at=moment,
                         snapshot_at=moment, physical=Physical(tool="mariabackup", to_lsn=5000,
                                                               from_lsn=from_lsn or base.physical.to_lsn))


def test_physical_incremental_applies_only_to_its_own_full():
    first, second = physical_full(timedelta(0)), physical_full(timedelta(hours=8), to_lsn=2000)
    inc = physical_incremental(timedelta(hours=9), second)
    assert applies_to(inc, second)
    assert "applies only to its base full" in why_not_applicable(inc, first)
    assert "starts at LSN" in why_not_applicable(physical_incremental(timedelta(hours=9), second, 7), second)
    logical = full(timedelta(hours=8, minutes=30))
    assert "not both physical" in why_not_applicable(inc, logical)
    assert "not both physical" in why_not_applicable(incremental(timedelta(hours=9), logical), second)
    plan = plan_restore([first, second, logical, inc], "7")
    assert [m.id for m in plan.steps] == [second.id, inc.id]


def test_physical_manifest_is_format_3_and_logical_stays_2():
    inc = physical_incremental(timedelta(hours=1), physical_full(timedelta(0)))
    document = json.loads(inc.to_json())
    assert document["format_version"] == 3 and document["physical"]["from_lsn"] == 1000
    assert Manifest.from_json(inc.to_json(), origin="o") == inc
    logical = json.loads(full(timedelta(0)).to_json())
    assert logical["format_version"] == 2 and "physical" not in logical
    document["physical"]["from_lsn"] = 0  # an incremental that copied everything is not one
    with pytest.raises(CatalogError, match="from_lsn"):
        Manifest.from_json(json.dumps(document).encode(), origin="o")


def test_space_problem_names_the_shortfall():
    assert space_problem({"/restore": 100}, {"/restore": 100}) is None
    message = space_problem({"/restore": 3 * 1024**3, "/data": 10}, {"/restore": 1024**3, "/data": 99})
    assert message == "/restore has 1.0 GiB free, the restore needs 3.0 GiB there"


def test_user_databases_in_a_datadir(tmp_path):
    for name in ("mysql", "performance_schema", "sys", "#innodb_temp", "lost+found", "app", "edge"):
        (tmp_path / name).mkdir()
    (tmp_path / "ibdata1").write_bytes(b"")
    assert user_databases_in(tmp_path) == ["app", "edge"]
    assert user_databases_in(tmp_path / "missing") == []


def test_gtid_positions():
    assert parse_gtid_list("0-1-100,1-2-7") == {0: 100, 1: 7}
    assert parse_gtid_list("") == {}
    assert gtid_reached("0-1-100,1-2-7", "0-1-100")
    assert gtid_reached("0-2-101", "0-1-100")  # a failover changed the server id, not the sequence
    assert not gtid_reached("0-1-99,1-2-7", "0-1-100,1-2-7")
    assert not gtid_reached("0-1-100", "0-1-100,1-2-1")
    assert gtid_reached("", "")


CONFIG = """
[stores.local]
type = "local"
path = "store"
[shards.7]
port = 3307
user = "backup"
replication_user = "repl"
replication_password_env = "UNIT_REPL_PW"
[shards.8]
port = 3308
user = "backup"
"""


def test_replica_source_from_a_shard_or_host_port(tmp_path, monkeypatch):
    path = tmp_path / "backupd.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    with pytest.raises(UsageError, match="UNIT_REPL_PW is not set"):
        resolve_source(config, "7", "7")
    monkeypatch.setenv("UNIT_REPL_PW", "pw")
    source = resolve_source(config, "7", "7")
    assert (source.host, source.port, source.user, source.password.reveal()) == ("127.0.0.1", 3307, "repl", "pw")
    source = resolve_source(config, "7", "10.0.0.5:3306")
    assert (source.host, source.port, source.user) == ("10.0.0.5", 3306, "repl")
    with pytest.raises(UsageError, match="shards.8.replication_user"):
        resolve_source(config, "8", "8")
    with pytest.raises(UsageError, match="neither a configured shard"):
        resolve_source(config, "7", "nine")
    os.environ.pop("UNIT_REPL_PW", None)
