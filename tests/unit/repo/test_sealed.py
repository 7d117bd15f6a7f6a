"""Self-checking metadata beyond manifests: segment records, positions, annotations; and how the
provider's checksum of a copy is compared with a part's record."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from backupd.errors import CatalogError
from backupd.ops.checksums import provider_mismatch
from backupd.repo.annotations import annotate, read_annotation, store_verdicts
from backupd.repo.binlogs import Position, SegmentRecord
from backupd.repo.model import PartRecord
from backupd.repo.sealed import SEAL_KEY, SealBroken
from backupd.stores.base import ObjectInfo, StoreProperties
from backupd.stores.local import LocalStore
from tests.unit.repo.test_binlog_archive import record


def test_segment_records_are_sealed_and_an_edited_one_is_refused():
    honest = record("bin.000001", 4, 400, seqs=(1, 3), at=10)
    data = honest.to_json()
    assert json.loads(data)["format_version"] == 2 and SEAL_KEY in json.loads(data)
    assert SegmentRecord.from_json(data, origin="o") == honest.model_copy(update={"format_version": 2})
    lying = json.loads(data)
    lying["last_gtids"] = {"0": "0-1-99999"}
    with pytest.raises(SealBroken, match="binlog segment record a:x fails its self-check"):
        SegmentRecord.from_json(json.dumps(lying).encode(), origin="a:x")
    old = json.loads(data)
    old.pop(SEAL_KEY)
    with pytest.raises(SealBroken, match="has no content_sha256"):
        SegmentRecord.from_json(json.dumps(old).encode(), origin="o")
    old["format_version"] = 1  # written before seals: read as it is
    assert SegmentRecord.from_json(json.dumps(old).encode(), origin="o").last_gtid == "0-1-3"


def test_positions_and_annotations_are_checked_when_sealed():
    position = Position("bin.000002", 1234, last_event_at=datetime(2026, 12, 6, tzinfo=UTC))
    assert Position.from_json(position.to_json()) == position
    edited = json.loads(position.to_json())
    edited["pos"] = 99
    with pytest.raises(CatalogError):
        Position.from_json(json.dumps(edited).encode())
    assert Position.from_json(b'{"file": "bin.000002", "pos": 7}').pos == 7  # an older, unsealed one
    assert read_annotation(b'{"at": "x"}', "o") == {"at": "x"}


def test_store_verdicts_take_the_newest_audit_per_store(tmp_path):
    store = LocalStore("a", tmp_path)
    backup = "20261206T000000Z-full-abc123"
    annotate([store], "1", backup, "audit-deep-20261206T010000Z",
             {"kind": "audit", "level": "deep", "at": "20261206T010000Z", "stores": {"a": ["part-corrupt"], "b": []},
              "backups": {backup: {"a": ["part-corrupt"]}}})
    verdicts = store_verdicts([store], "1")
    assert verdicts["a"].describe() == "suspect (audit 20261206T010000Z: part-corrupt)"
    assert verdicts["a"].backups == {backup: ["part-corrupt"]} and verdicts["b"].describe() == "complete"
    annotate([store], "1", backup, "audit-sync-20261206T020000Z",
             {"kind": "audit", "level": "sync", "at": "20261206T020000Z", "stores": {"a": []}})
    verdicts = store_verdicts([store], "1")
    assert verdicts["a"].describe() == "complete" and verdicts["b"].at == "20261206T010000Z"


def test_the_providers_checksum_against_the_part_record():
    class Swiftish:
        properties = StoreProperties(etag_is_md5=True)

    class Kms:
        properties = StoreProperties(etag_is_md5=False, head_sha256=True)

    part = PartRecord(index=1, key="k", size=10, raw_size=20, sha256="a" * 64, md5="b" * 32)
    assert provider_mismatch(Swiftish(), part, ObjectInfo("k", 10, "b" * 32)) is None  # type: ignore[arg-type]
    assert "rewritten" in provider_mismatch(Swiftish(), part, ObjectInfo("k", 10, "c" * 32))  # type: ignore[arg-type]
    assert provider_mismatch(Kms(), part, ObjectInfo("k", 10, "kms-etag", "a" * 64)) is None  # type: ignore[arg-type]
    assert "sha256" in provider_mismatch(Kms(), part, ObjectInfo("k", 10, "kms-etag", "d" * 64))  # type: ignore[arg-type]
    old = part.model_copy(update={"md5": None})  # before format 5: nothing to compare with
    assert provider_mismatch(Swiftish(), old, ObjectInfo("k", 10, "c" * 32)) is None  # type: ignore[arg-type]
