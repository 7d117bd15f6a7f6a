"""Manifests for unit tests of pure logic (planner, chains, retention, scheduler)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from backupd.repo import layout
from backupd.repo.model import (
    Codec,
    Coordinates,
    Incremental,
    Manifest,
    PartRecord,
    Physical,
    Reference,
    ServerInfo,
    StoreStatus,
    TableChange,
    TableReference,
    Window,
)

NOW = datetime(2026, 11, 26, 8, 0, 0, tzinfo=UTC)
TABLES = [("app", "bucket_0007", "s1"), ("app", "bucket_0015", "s1")]


def make_manifest(**overrides) -> Manifest:
    bid = overrides.get("id", "20261126T080000Z-full-abc123")
    shard = overrides.get("shard", "7")
    fields = dict(
        id=bid, shard=shard, kind="full", method="mysqldump", started_at=NOW, finished_at=NOW,
        snapshot_at=NOW, databases=["app"],
        coordinates=Coordinates(binlog_file="bin.000003", binlog_pos=1234, gtid="0-1-99"),
        server=ServerInfo(vendor="mariadb", version="10.11.19-MariaDB"), codec=Codec(level=3),
        parts=[PartRecord(index=1, key=layout.part_key(shard, bid, 1), size=10, raw_size=30, sha256="a" * 64)],
        raw_bytes=30, stored_bytes=10,
        reference=reference(),
        stores={"local": StoreStatus(state="complete")})
    fields.update(overrides)
    return Manifest(**fields)


def reference(tables=TABLES) -> Reference:
    return Reference(mode="digest", digest_algorithm="md5-sum64",
                     tables=[TableReference(database=d, table=t, rows=3, digest="00ff", schema_digest=s)
                             for d, t, s in tables])


def full(at: timedelta | datetime, shard: str = "7", tables=TABLES) -> Manifest:
    """A full whose snapshot is at ``NOW + at`` (or at ``at``)."""
    moment = at if isinstance(at, datetime) else NOW + at
    bid = f"{moment:%Y%m%dT%H%M%SZ}-full-{_tag(moment, shard)}"
    return make_manifest(id=bid, shard=shard, started_at=moment, finished_at=moment,
                         snapshot_at=moment, reference=reference(tables))


def incremental(at: timedelta | datetime, base: Manifest, *, window: timedelta = timedelta(hours=24),
                tables=TABLES, modes: dict[str, str] | None = None) -> Manifest:
    """An incremental at ``NOW + at`` on ``base`` whose window reaches ``window`` back."""
    moment = at if isinstance(at, datetime) else NOW + at
    bid = f"{moment:%Y%m%dT%H%M%SZ}-incremental-{_tag(moment, base.shard, base.id)}"
    modes = modes or {}
    changes = [TableChange(database=d, table=t, mode=modes.get(t, "changed"),
                           column="updated_at" if modes.get(t, "changed") == "changed" else None)
               for d, t, _ in tables]
    return make_manifest(id=bid, shard=base.shard, kind="incremental", parent_id=base.id,
                         started_at=moment, finished_at=moment, snapshot_at=moment,
                         reference=reference(tables),
                         incremental=Incremental(window=Window(since=moment - window, until=moment),
                                                 tables=changes))


def _tag(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:6]


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
