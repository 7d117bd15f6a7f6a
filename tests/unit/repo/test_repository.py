"""The repository opens each store once and resolves shards and targets once."""

from __future__ import annotations

from pathlib import Path

import pytest

from backupd.config import load_config
from backupd.errors import PermanentStoreError, UsageError
from backupd.repo.repository import Repository
from backupd.stores.base import Payload

CONFIG = """
[stores.a]
type = "local"
path = "a"
[stores.b]
type = "local"
path = "b"
[schedule]
lock_store = "b"
[shards.7]
user = "backup"
stores = ["a"]
[targets.dr]
user = "restore"
read_from = ["b", "a"]
"""


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    (tmp_path / "c.toml").write_text(CONFIG)
    return Repository(load_config(tmp_path / "c.toml"))


def test_every_caller_gets_the_same_opened_store(repo):
    shard, target = repo.shard("7"), repo.target("dr")
    assert [s.name for s in shard.stores] == ["a"] and [s.name for s in shard.lock_stores] == ["b", "a"]
    assert [s.name for s in target.stores] == ["b", "a"]
    assert shard.stores[0] is repo.store("a") is target.stores[1] is repo.catalog().stores[0]
    assert shard.label == "shard 7" and target.label == "target dr"


def test_statistics_count_every_operation_on_a_store(repo):
    repo.shard("7").stores[0].put("7/x", Payload.from_bytes(b"x"))
    repo.catalog().entries("7")
    assert repo.store_stats() == {"a": {"retries": 0, "errors": 0}, "b": {"retries": 0, "errors": 0}}
    with pytest.raises(PermanentStoreError):  # a store error through one caller...
        repo.shard("7").stores[0].get("../escape")
    with pytest.raises(PermanentStoreError):  # ...and through another: the same counter
        repo.catalog().stores[0].stat("/absolute")
    assert repo.store_stats()["a"]["errors"] == 2


def test_unknown_names_are_usage_errors_listing_the_known_ones(repo):
    with pytest.raises(UsageError, match="unknown shard '9' .configured shards: 7."):
        repo.shard("9")
    with pytest.raises(UsageError, match="unknown target 'west' .configured targets: dr."):
        repo.target("west")
