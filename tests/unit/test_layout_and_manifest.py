import json
from datetime import datetime, timezone

import pytest

from backupd import layout
from backupd.errors import CatalogError, UnsupportedFormat
from backupd.model import (Codec, Coordinates, Manifest, PartRecord, Reference, ServerInfo,
                           StoreStatus, TableReference)

NOW = datetime(2026, 11, 26, 8, 0, 0, tzinfo=timezone.utc)


def test_backup_ids_sort_by_time_and_are_unique():
    a = layout.new_backup_id("full", NOW)
    b = layout.new_backup_id("full", NOW.replace(hour=9))
    assert a.startswith("20261126T080000Z-full-") and a < b
    assert len({layout.new_backup_id("full", NOW) for _ in range(200)}) == 200


def test_keys_round_trip():
    bid = "20261126T080000Z-full-abc123"
    assert layout.part_key("7", bid, 1) == f"7/{bid}/part-000001.zst"
    assert layout.manifest_key("7", bid) == f"7/{bid}/manifest.json"
    assert layout.parse_key(layout.part_key("7", bid, 42)) == layout.ParsedKey("7", bid, "part", "part-000042.zst")
    assert layout.parse_key(layout.manifest_key("7", bid)).kind == "manifest"
    assert layout.parse_key(layout.annotation_key("7", bid, "drill")) == layout.ParsedKey("7", bid, "annotation", "drill")
    for junk in ["7/notanid/manifest.json", "7/manifest.json", f"7/{bid}/other.txt", f"7/{bid}/part-1.zst", ""]:
        assert layout.parse_key(junk) is None
    with pytest.raises(ValueError):
        layout.part_key("7", bid, 0)


def make_manifest(**overrides) -> Manifest:
    bid = "20261126T080000Z-full-abc123"
    fields = dict(
        id=bid, shard="7", kind="full", method="mysqldump", started_at=NOW, finished_at=NOW,
        snapshot_at=NOW, databases=["app"],
        coordinates=Coordinates(binlog_file="bin.000003", binlog_pos=1234, gtid="0-1-99"),
        server=ServerInfo(vendor="mariadb", version="10.11.19-MariaDB"), codec=Codec(level=3),
        parts=[PartRecord(index=1, key=layout.part_key("7", bid, 1), size=10, raw_size=30, sha256="a" * 64)],
        raw_bytes=30, stored_bytes=10,
        reference=Reference(mode="digest", digest_algorithm="md5-sum64",
                            tables=[TableReference(database="app", table="bucket_0007", rows=3, digest="00ff")]),
        stores={"local": StoreStatus(state="complete")})
    fields.update(overrides)
    return Manifest(**fields)


def test_manifest_round_trip():
    manifest = make_manifest()
    again = Manifest.from_json(manifest.to_json(), origin="test")
    assert again == manifest
    assert again.complete_stores == ["local"]
    assert again.compression_ratio == 3.0
    summary = again.summary()
    for key in ("id", "shard", "kind", "started_at", "finished_at", "raw_bytes", "stored_bytes", "stores"):
        assert key in summary
    assert summary["started_at"] == "2026-11-26T08:00:00Z"


def test_manifest_refuses_unknown_versions():
    document = json.loads(make_manifest().to_json())
    for version in (2, 0, None, "1"):
        document["format_version"] = version
        with pytest.raises(UnsupportedFormat, match="format_version"):
            Manifest.from_json(json.dumps(document).encode(), origin="s3:7/x/manifest.json")


@pytest.mark.parametrize("data,match", [
    (b"{not json", "not valid JSON"), (b"[]", "not a JSON object"),
    (b'{"format_version": 1, "id": "x"}', "invalid"),
])
def test_manifest_rejects_garbage(data, match):
    with pytest.raises(CatalogError, match=match):
        Manifest.from_json(data, origin="local:7/x/manifest.json")


def test_manifest_rejects_bad_part_hash():
    document = json.loads(make_manifest().to_json())
    document["parts"][0]["sha256"] = "xyz"
    with pytest.raises(CatalogError, match="parts.0.sha256"):
        Manifest.from_json(json.dumps(document).encode(), origin="o")
