"""The README's commands and the test bed's CLI, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.support import backup, run

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def run_testbed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.testbed", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=300)


def test_testbed_cli_starts_a_fleet_and_writes_a_working_config(tmp_path):
    root = tmp_path / "fleet"
    started = run_testbed("start", "--root", str(root), "--shards", "2", "--targets", "us-west",
                      "--mib-per-shard", "1", "--buckets", "16")
    try:
        assert started.returncode == 0, started.stderr
        config = root / "backupd.toml"
        assert config.exists()
        backup(config, "2")
        result = run("restore", "--config", str(config), "--shard", "2", "--target", "us-west", "--json")
        assert result.code == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["verified"] and report["tables"] == 8  # 16 buckets over 2 shards
    finally:
        stopped = run_testbed("stop", "--root", str(root), "--destroy")
    assert stopped.returncode == 0, stopped.stderr
    status = run_testbed("status", "--root", str(root))
    assert status.returncode == 1


def test_demo_runs_and_reruns():
    for _ in range(2):
        proc = subprocess.run([sys.executable, "scripts/demo.py", "--mib-per-shard", "1"], cwd=REPO,
                              text=True, capture_output=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "VERIFIED" in proc.stdout
        assert proc.stdout.count("-full-") >= 5  # 4 backups listed + the restored one
        assert proc.stdout.count("-incremental-") >= 5
        assert "restore of shard 2 into local-dr: " in proc.stdout and " + " in proc.stdout
    listing = json.loads(run("backupd", "list", "--json",
                             env={"BACKUPD_CONFIG": str(REPO / "config" / "backupd.toml")}).stdout)
    assert sorted({e["shard"] for e in listing}) == ["1", "2", "3", "4"]
    assert sorted({e["kind"] for e in listing}) == ["full", "incremental"]
