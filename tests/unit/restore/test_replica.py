"""Replica attachment logic: GTID positions and where --replica-of points."""

from __future__ import annotations

import os

import pytest

from backupd.config import load_config
from backupd.errors import UsageError
from restore.replica import gtid_reached, parse_gtid_list, resolve_source


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
