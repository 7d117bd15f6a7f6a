"""backupd audit and status against real backups in real stores; every finding from a real fault."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from backupd.config import load_config
from backupd.ops.audit import in_sample, run_audit
from backupd.repo.model import utc_now
from backupd.repo.repository import Repository
from tests.integration.support import BIN, run, slow_mysqldump, write_config
from tests.testbed import seed_shard

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(mariadb_factory, tmp_path):
    source = mariadb_factory("shard1")
    seed_shard(source, 0, 64, target_bytes=512 * 1024)
    stores = {"a": {"type": "local", "path": str(tmp_path / "a")},
              "b": {"type": "local", "path": str(tmp_path / "b")}}
    config = write_config(tmp_path / "backupd.toml", shards={"1": source}, stores=stores)
    for kind in ("full", "incremental"):
        result = run("backupd", "--config", str(config), "backup", "--shard", "1", "--kind", kind)
        assert result.code == 0, result.stderr
    return config, tmp_path, source


def audit(config: Path, *args: str) -> tuple[int, dict]:
    result = run("backupd", "--config", str(config), "audit", "--json", *args)
    assert result.code in (0, 3), result.stderr
    return result.code, json.loads(result.stdout)


def checks(report: dict) -> list[tuple[str, str | None, str | None]]:
    return sorted((f["check"], f["store"], (f["part"] or "").rsplit("/", 1)[-1] or None) for f in report["findings"])


def backup_dirs(store: Path) -> list[Path]:
    return sorted(p for p in (store / "1").iterdir() if p.name[0].isdigit())


def test_a_clean_fleet_audits_clean_and_status_shows_it(fleet):
    config, tmp_path, _ = fleet
    for level in ("quick", "deep"):
        code, report = audit(config, "--level", level)
        assert code == 0 and report["ok"] and report["findings"] == [], report
        assert report["backups"] == 2 and report["parts_checked"] > 4
    assert report["bytes_read"] > 0 and report["throughput"] > 0
    text = run("backupd", "--config", str(config), "audit")
    assert text.code == 0 and "everything holds" in text.stdout
    status = json.loads(run("backupd", "--config", str(config), "status", "--json").stdout)
    assert status[0]["shard"] == "1" and status[0]["newest_full"] and status[0]["newest_incremental"]
    assert status[0]["stores_complete"] == ["a", "b"] and status[0]["stores_degraded"] == []
    assert status[0]["next_due"].startswith("incremental in ")


def test_every_fault_is_found_and_named(fleet):
    config, tmp_path, _ = fleet
    full_dir, inc_dir = backup_dirs(tmp_path / "a")
    # a part deleted from store b
    missing = sorted((tmp_path / "b" / "1" / inc_dir.name).glob("part-*.zst"))[-1]
    missing.unlink()
    # a byte flipped in a part of store a (same size: only a deep audit can see it)
    flipped = sorted(full_dir.glob("part-*.zst"))[0]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x40
    flipped.write_bytes(bytes(data))
    code, quick = audit(config)
    assert code == 3
    assert checks(quick) == [("part-missing", "b", missing.name)]
    finding = quick["findings"][0]
    assert finding["shard"] == "1" and finding["backup"] == inc_dir.name

    code, deep = audit(config, "--level", "deep")
    assert code == 3
    assert checks(deep) == [("part-corrupt", "a", flipped.name), ("part-missing", "b", missing.name)]
    corrupt = next(f for f in deep["findings"] if f["check"] == "part-corrupt")
    assert "sha256" in corrupt["message"] and corrupt["backup"] == full_dir.name

    # a garbled manifest in store b beside a good one in a: a mismatch naming b (never fatal)
    (tmp_path / "b" / "1" / full_dir.name / "manifest.json").write_text("{garbled")
    code, quick = audit(config)
    assert code == 3
    assert [c for c, *_ in checks(quick)] == ["manifest-mismatch", "part-missing"]
    mismatch = next(f for f in quick["findings"] if f["check"] == "manifest-mismatch")
    assert mismatch["hint"] == "backupd sync --shard 1 --verify replaces the bad copy with the good one"
    assert mismatch["store"] == "b" and mismatch["backup"] == full_dir.name
    # store b alone can no longer restore the shard: its incremental has no readable base
    code, only_b = audit(config, "--store", "b")
    assert [c for c, *_ in checks(only_b)] == ["manifest-unreadable", "no-chain", "part-missing"]

    text = run("backupd", "--config", str(config), "audit")
    assert text.code == 3 and "manifest-mismatch" in text.stdout and "hint: backupd sync" in text.stdout


def test_old_backups_and_orphans_with_a_fake_clock(fleet):
    config, tmp_path, source = fleet
    loaded = load_config(config)
    assert run_audit(Repository(loaded)).ok
    later = run_audit(Repository(loaded), clock=lambda: utc_now() + timedelta(days=2))
    assert sorted(f.check for f in later.findings) == ["rpo-backup", "rpo-full"]
    assert all(f.shard == "1" and f.backup for f in later.findings)

    # a backup killed after its first parts: an orphan, reported once it is a day old
    slow = write_config(tmp_path / "slow.toml", shards={"1": source},
                        stores={"a": {"type": "local", "path": str(tmp_path / "a")}},
                        settings={"mysqldump": str(slow_mysqldump(tmp_path, 60))})
    process = subprocess.Popen([str(BIN / "backupd"), "--config", str(slow), "backup", "--shard", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(backup_dirs(tmp_path / "a")) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(backup_dirs(tmp_path / "a")) == 3
    assert run_audit(Repository(loaded)).ok  # younger than orphan_age: a backup may still be running
    orphaned = run_audit(Repository(loaded), clock=lambda: utc_now() + timedelta(days=2))
    orphan = [f for f in orphaned.findings if f.check == "orphan"]
    assert len(orphan) == 1 and orphan[0].store == "a" and "uncommitted backup" in orphan[0].message


def test_a_shard_without_backups_has_no_chain(mariadb_factory, tmp_path):
    source = mariadb_factory("shard9")
    config = write_config(tmp_path / "backupd.toml", shards={"9": source})
    code, report = audit(config)
    assert code == 3 and [f["check"] for f in report["findings"]] == ["no-chain"]
    result = run("backupd", "--config", str(config), "audit", "--level", "drill-ish")
    assert result.code == 2
    result = run("backupd", "--config", str(config), "audit", "--shard", "7")
    assert result.code == 2 and "unknown shard '7'" in result.stderr


def test_samples_cover_everything_over_days():
    keys = [f"local:1/20261126T080000Z-full-abc123/part-{i:06d}.zst" for i in range(1, 400)]
    for percent in (10.0, 25.0, 33.0):
        covered: set[str] = set()
        days = int(100 // percent) + 1
        for day in range(20_000, 20_000 + days):
            chosen = [k for k in keys if in_sample(k, percent, day)]
            assert abs(len(chosen) - len(keys) * percent / 100) < len(keys) * 0.1
            covered.update(chosen)
        assert covered == set(keys)


def test_drills_restore_verify_and_annotate(fleet, mariadb_factory):
    config, tmp_path, source = fleet
    scratch = mariadb_factory("scratch")
    text = config.read_text()
    text += (f'[targets.scratch]\nsocket = "{scratch.socket}"\nuser = "root"\nread_from = ["a", "b"]\n'
             '[drill]\ntarget = "scratch"\n')
    config.write_text(text)
    full_dir, inc_dir = backup_dirs(tmp_path / "a")
    manifest_before = (inc_dir / "manifest.json").read_bytes()
    for _ in range(2):  # the scratch target is replaced at every drill
        result = run("backupd", "--config", str(config), "audit", "--level", "drill", "--json")
        assert result.code == 0, result.stderr
        report = json.loads(result.stdout)
        [drill] = report["drills"]
        assert drill["verified"] and drill["chain"] == [full_dir.name, inc_dir.name] and drill["seconds"] > 0
    assert (inc_dir / "manifest.json").read_bytes() == manifest_before  # never changed
    annotations = sorted((inc_dir / "annotations").glob("drill-*.json"))
    assert annotations and json.loads(annotations[-1].read_text())["verified"] is True
    assert (tmp_path / "b" / "1" / inc_dir.name / "annotations").is_dir()
    status = json.loads(run("backupd", "--config", str(config), "status", "--json").stdout)
    assert status[0]["last_drill"]["verified"] is True and status[0]["last_deep_audit"] is None
    assert run("backupd", "--config", str(config), "audit", "--level", "deep").code == 0
    status = json.loads(run("backupd", "--config", str(config), "status", "--json").stdout)
    assert status[0]["last_deep_audit"]["ok"] is True and status[0]["last_deep_audit"]["level"] == "deep"
    assert run_audit(Repository(load_config(config))).ok  # annotations are not orphans or findings

    for store in ("a", "b"):  # every copy of a part corrupted: the drill must fail
        part = sorted((tmp_path / store / "1" / full_dir.name).glob("part-*.zst"))[0]
        data = bytearray(part.read_bytes())
        data[len(data) // 2] ^= 0x01
        part.write_bytes(bytes(data))
    result = run("backupd", "--config", str(config), "audit", "--level", "drill")
    assert result.code == 3
    assert "FAILED" in result.stdout and "part-000001.zst" in result.stdout
    status = json.loads(run("backupd", "--config", str(config), "status", "--json").stdout)
    assert status[0]["last_drill"]["verified"] is False
    assert "FAILED" in run("backupd", "--config", str(config), "status").stdout


def test_drill_without_a_drill_target_is_a_usage_error(fleet):
    config, _, _ = fleet
    result = run("backupd", "--config", str(config), "audit", "--level", "drill")
    assert result.code == 2 and "[drill] target" in result.stderr


def test_a_truncated_part_and_an_unreachable_store_are_found(fleet):
    config, tmp_path, _ = fleet
    full_dir, _ = backup_dirs(tmp_path / "a")
    part = sorted(full_dir.glob("part-*.zst"))[0]
    part.write_bytes(part.read_bytes()[:-1])
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens: a cloud that is down
    config.write_text(config.read_text() + f'[stores.down]\ntype = "s3"\nbucket = "b"\n'
                      f'endpoint_url = "http://127.0.0.1:{port}"\naccess_key_env = "AUDIT_KEY"\n'
                      'secret_key_env = "AUDIT_KEY"\nretry_budget = "1s"\nconnect_timeout = "1s"\n')
    result = run("backupd", "--config", str(config), "audit", "--json", env={"AUDIT_KEY": "testing"})
    assert result.code == 3, result.stderr
    report = json.loads(result.stdout)
    assert checks(report) == [("part-size", "a", part.name), ("store-unreachable", "down", None)]
    assert "cannot be listed" in next(f["message"] for f in report["findings"] if f["check"] == "store-unreachable")
