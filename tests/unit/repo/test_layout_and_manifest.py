import json
from datetime import timedelta

import pytest

from backupd.errors import CatalogError, UnsupportedFormat
from backupd.repo import layout
from backupd.repo.model import Manifest
from backupd.repo.sealed import SEAL_KEY, SealBroken, seal
from tests.unit.manifests import NOW, full, incremental, make_manifest, physical_full, physical_incremental


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
    for version in (9, 0, None, "1"):
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
        Manifest.from_json(seal(document), origin="o")


def test_a_manifest_altered_after_writing_fails_its_self_check():
    """One part's sha256 changed (still a valid manifest): the copy is refused, naming it; the
    same document resealed, or with whitespace changed, reads."""
    manifest = make_manifest()
    document = json.loads(manifest.to_json())
    assert document["format_version"] == 5 and len(document[SEAL_KEY]) == 64
    document["parts"][0]["sha256"] = "f" * 64
    with pytest.raises(SealBroken, match="manifest s3:7/x/manifest.json fails its self-check"):
        Manifest.from_json(json.dumps(document).encode(), origin="s3:7/x/manifest.json")
    assert Manifest.from_json(seal(document), origin="o").parts[0].sha256 == "f" * 64
    compact = json.dumps(json.loads(manifest.to_json()), separators=(",", ":")).encode()
    assert Manifest.from_json(compact, origin="o") == manifest
    assert Manifest.copy_digest(compact) == Manifest.copy_digest(manifest.to_json()) != \
        Manifest.copy_digest(json.dumps(document).encode())
    document.pop(SEAL_KEY)
    with pytest.raises(SealBroken, match="has no content_sha256"):
        Manifest.from_json(json.dumps(document).encode(), origin="o")


def _downgraded(manifest: Manifest, version: int) -> dict:
    """``manifest`` as a release before the seal wrote it."""
    document = json.loads(manifest.to_json())
    document.pop(SEAL_KEY)
    document["format_version"] = version
    return document


def test_format_1_manifests_are_still_read():
    document = _downgraded(make_manifest(), 1)
    for table in document["reference"]["tables"]:
        table.pop("schema_digest")
    document.pop("incremental")
    assert Manifest.from_json(json.dumps(document).encode(), origin="o").id == make_manifest().id


def test_incremental_manifest_round_trip_and_consistency():
    base = full(timedelta(0))
    inc = incremental(timedelta(hours=1), base)
    again = Manifest.from_json(inc.to_json(), origin="o")
    assert again == inc and again.window.since == NOW + timedelta(hours=1) - timedelta(hours=24)
    assert again.summary()["window_since"] == "2026-11-25T09:00:00Z"
    document = json.loads(inc.to_json())
    document["incremental"] = None
    with pytest.raises(CatalogError, match="incremental"):
        Manifest.from_json(seal(document), origin="o")
    document = json.loads(base.to_json())
    document["incremental"] = json.loads(inc.to_json())["incremental"]
    with pytest.raises(CatalogError, match="incremental"):
        Manifest.from_json(seal(document), origin="o")
    document = json.loads(inc.to_json())
    document["parent_id"] = None
    with pytest.raises(CatalogError, match="parent_id"):
        Manifest.from_json(seal(document), origin="o")


def test_lock_keys():
    assert layout.lock_key("7", 3) == "7/locks/000000000003.json"
    assert layout.lock_generation(layout.lock_key("7", 3)) == 3
    assert layout.parse_key(layout.lock_key("7", 3)) is None  # never mistaken for a backup
    assert layout.lock_generation("7/20261126T080000Z-full-abc123/manifest.json") is None


def test_physical_manifests_round_trip_and_older_formats_are_read():
    inc = physical_incremental(timedelta(hours=1), physical_full(timedelta(0)))
    document = json.loads(inc.to_json())
    assert document["format_version"] == 5 and document["physical"]["from_lsn"] == 1000
    assert Manifest.from_json(inc.to_json(), origin="o") == inc
    assert "physical" not in json.loads(full(timedelta(0)).to_json())
    assert Manifest.from_json(json.dumps(_downgraded(inc, 3)).encode(), origin="o").physical == inc.physical
    assert Manifest.from_json(json.dumps(_downgraded(full(timedelta(0)), 2)).encode(), origin="o").kind == "full"
    document["physical"]["from_lsn"] = 0  # an incremental that copied everything is not one
    with pytest.raises(CatalogError, match="from_lsn"):
        Manifest.from_json(seal(document), origin="o")


def test_exact_references_and_column_digests_round_trip():
    """Exact digests (FLOAT by its binary value) and per-column digests are kept; a format-4
    manifest (unsealed) is still read with them."""
    old = full(timedelta(0))
    assert "column_digests" not in json.loads(old.to_json())["reference"]["tables"][0]
    table = old.reference.tables[0].model_copy(update={"column_digests": {"f": "0123abcd"}})
    reference = old.reference.model_copy(update={"digest_algorithm": "crc32-crc32c-sum64-exact", "tables": [table]})
    exact = old.model_copy(update={"reference": reference})
    document = json.loads(exact.to_json())
    assert document["reference"]["tables"][0]["column_digests"] == {"f": "0123abcd"}
    assert Manifest.from_json(exact.to_json(), origin="o").reference.tables[0].column_digests == {"f": "0123abcd"}
    assert Manifest.from_json(json.dumps(_downgraded(exact, 4)).encode(), origin="o").reference == exact.reference
