"""The ops kit in config/: the Grafana dashboard graphs metrics backupd sends, carbon's stanzas
match them, the systemd units run real commands. A renamed metric fails here, not on a wall."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path

from backupd.metrics import (
    age_samples,
    audit_samples,
    backup_samples,
    binlog_samples,
    drill_samples,
    failure_samples,
    restore_samples,
    store_samples,
)

CONFIG = Path(__file__).resolve().parents[2] / "config"


def sent_paths() -> list[str]:
    """Every Graphite path backupd sends (under its default prefix), for one shard and store."""
    samples = [*backup_samples("7", "full", seconds=1, raw_bytes=2, stored_bytes=1),
               *backup_samples("7", "incremental", seconds=1, raw_bytes=2, stored_bytes=1),
               *failure_samples("7", "full"), *age_samples("7", 1.0, 1.0),
               *binlog_samples("7", rpo_seconds=1.0, segments=1, stored_bytes=1),
               *audit_samples("quick", {"7": 0}, 1.0, 0), *audit_samples("deep", {"7": 1}, 1.0, 10),
               *restore_samples("7", "dr", seconds=1, raw_bytes=1, verified=True, rebuild_seconds=2),
               *restore_samples("7", "dr", seconds=1, raw_bytes=1, verified=False),
               *drill_samples("7", seconds=1, verified=True), *store_samples({"s3": {"retries": 1, "errors": 0}})]
    return [f"backupd.{s.path}" for s in samples]


def graphite_patterns(target: str) -> list[re.Pattern[str]]:
    """The series paths a Graphite target reads (functions stripped, wildcards and the
    dashboard's variables as one path element)."""
    found = re.findall(r"\$prefix(?:\.[A-Za-z0-9_*$]+)+", target)
    return [re.compile("^" + re.escape(path).replace(r"\$prefix", "backupd").replace(r"\$shard", "[^.]+")
                       .replace(r"\*", "[^.]+") + "$") for path in found]


def test_every_dashboard_series_is_one_backupd_sends_and_the_key_ones_are_graphed():
    dashboard = json.loads((CONFIG / "grafana" / "backupd.json").read_text())
    paths = sent_paths()
    graphed = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            patterns = graphite_patterns(target["target"])
            assert patterns, f"panel {panel['title']!r}: no backupd series in {target['target']!r}"
            for pattern in patterns:
                matching = [p for p in paths if pattern.match(p)]
                assert matching, f"panel {panel['title']!r}: {pattern.pattern} matches nothing backupd sends"
                graphed.update(matching)
    for wanted in ("newest_backup_age_seconds", "newest_full_age_seconds", "binlogs.rpo_seconds",
                   "backup.full.duration_seconds", "backup.full.failure", "audit.deep.findings",
                   "drill.verified", "restore.duration_seconds", "stores.s3.errors"):
        assert any(wanted in p for p in graphed), f"the dashboard does not graph {wanted}"


def test_carbon_stanzas_match_what_backupd_sends():
    schemas = configparser.ConfigParser()
    schemas.read(CONFIG / "graphite" / "storage-schemas.conf")
    assert all(re.match(schemas["backupd"]["pattern"], p) for p in sent_paths())
    aggregation = configparser.ConfigParser()
    aggregation.read(CONFIG / "graphite" / "storage-aggregation.conf")

    def method(path: str) -> str:
        return next(aggregation[s]["aggregationMethod"] for s in aggregation.sections()
                    if re.match(aggregation[s]["pattern"], path))

    assert method("backupd.shards.7.backup.full.failure") == "last"  # a running total
    assert method("backupd.shards.7.newest_backup_age_seconds") == "max"  # a late backup is never averaged away
    assert all(method(p) for p in sent_paths())


def test_the_systemd_units_run_backupd():
    for name, command in (("backupd.service", "backupd run"), ("backupd-once.service", "backupd run --once --json")):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.read(CONFIG / name)
        assert unit["Service"]["ExecStart"].endswith(command), name
    timer = configparser.ConfigParser(interpolation=None)
    timer.read(CONFIG / "backupd-once.timer")
    assert timer["Timer"]["OnUnitInactiveSec"] and timer["Install"]["WantedBy"] == "timers.target"
