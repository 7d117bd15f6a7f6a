"""The daemon against real servers: what is due comes from the catalog, crashes and restarts,
graceful and forced shutdown, config reload, two daemons on one fleet, retention."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.support import BIN, daemon_config, listing, run, slow_mysqldump, store_files, write_config
from tests.testbed import seed_shard

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(mariadb_factory):
    servers = {}
    for sid in ("1", "2"):
        servers[sid] = mariadb_factory(f"shard{sid}")
        seed_shard(servers[sid], int(sid) - 1, 64, target_bytes=1024 * 1024)
    return servers


class Daemon:
    """``backupd run`` in the background, stderr to a file."""

    def __init__(self, config: Path, log: Path, *args: str):
        self.log = log
        self.handle = open(log, "wb")
        self.process = subprocess.Popen([str(BIN / "backupd"), "--config", str(config), "run", *args],
                                        stdout=subprocess.DEVNULL, stderr=self.handle)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, predicate, timeout: float = 60, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited ({self.process.returncode}) waiting for {what}:\n{self.text()}")
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.text()}")

    def children(self) -> list[int]:
        return [int(p) for p in Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()]

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.handle.close()
        return code


@pytest.fixture
def daemons():
    started: list[Daemon] = []

    def start(config: Path, log: Path, *args: str) -> Daemon:
        daemon = Daemon(config, log, *args)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()
        daemon.handle.close()


def manifests(store: Path) -> list[str]:
    return [f for f in store_files(store) if f.endswith("manifest.json")]


def parts(store: Path) -> list[str]:
    return [f for f in store_files(store) if f.endswith(".zst")]


def test_run_once_takes_what_the_catalog_says_is_due(tmp_path, fleet):
    # the cadence changes between runs instead of racing a short interval against a busy machine
    config = daemon_config(tmp_path, fleet, schedule={"full_every": "1h", "incremental_every": "1h"})
    first = run("backupd", "--config", str(config), "run", "--once", "--json")
    assert first.code == 0, first.stderr
    assert sorted((e["shard"], e["kind"]) for e in listing(config)) == [("1", "full"), ("2", "full")]
    events = [json.loads(line) for line in first.stdout.splitlines()]  # one object per finished job
    assert sorted((e["shard"], e["result"], e["kind"]) for e in events if e["event"] == "backup") == \
        [("1", "committed", "full"), ("2", "committed", "full")]
    assert all(e["ok"] for e in events if e["event"] == "audit")
    assert events[-1] == {"event": "done", "failed_jobs": 0, "failed_checks": 0, "exit_code": 0}
    again = run("backupd", "--config", str(config), "run", "--once")
    assert again.code == 0 and "nothing is due" in again.stderr
    assert len(listing(config)) == 2
    time.sleep(1.1)
    daemon_config(tmp_path, fleet, schedule={"full_every": "1h", "incremental_every": "1s"})
    later = run("backupd", "--config", str(config), "run", "--once")
    assert later.code == 0, later.stderr
    kinds = sorted((e["shard"], e["kind"]) for e in listing(config))
    assert kinds == [("1", "full"), ("1", "incremental"), ("2", "full"), ("2", "incremental")]


def test_kill_9_mid_backup_then_restart_cleans_orphans_and_redoes_it(tmp_path, fleet, daemons):
    shards = {"1": fleet["1"]}
    config = daemon_config(tmp_path, shards, settings={"mysqldump": str(slow_mysqldump(tmp_path, 60)),
                                                        "part_size": "64KiB"})
    store = tmp_path / "store"
    daemon = daemons(config, tmp_path / "first.log")
    daemon.wait_for(lambda: parts(store), what="parts of the first full")
    backup_process = daemon.children()
    assert backup_process, "the backup runs in a child process"
    # a crash of the whole host: daemon and backup die at once, nothing cleans up
    for pid in [daemon.process.pid, *backup_process]:
        os.kill(pid, signal.SIGKILL)
    daemon.process.wait()
    time.sleep(0.5)
    orphans = parts(store)
    assert orphans and manifests(store) == []
    assert store_files(store / "1" / "locks")  # the dead run's lease is still there
    left = [d for pid in backup_process for d in Path("/tmp").glob(f"backupd-{pid}-*")]
    assert left  # and its 0600 option file, which no one could remove

    daemon_config(tmp_path, shards, settings={"part_size": "64KiB"})  # a healthy mysqldump now
    restarted = run("backupd", "--config", str(config), "run", "--once")
    assert restarted.code == 0, restarted.stderr
    assert "orphaned" in restarted.stderr
    [entry] = listing(config)
    assert entry["kind"] == "full"
    assert not set(orphans) & set(parts(store))  # the dead run's parts are gone
    assert len(manifests(store)) == 1
    assert store_files(store / "1" / "locks") == []
    assert not any(d.exists() for d in left)  # removed by the next run


def test_a_backup_does_not_outlive_its_daemon(tmp_path, fleet, daemons):
    config = daemon_config(tmp_path, {"1": fleet["1"]}, settings={
        "mysqldump": str(slow_mysqldump(tmp_path, 60)), "part_size": "64KiB"})
    store = tmp_path / "store"
    daemon = daemons(config, tmp_path / "daemon.log")
    daemon.wait_for(lambda: parts(store), what="parts")
    [child] = daemon.children()
    daemon.process.kill()  # the daemon alone: its child is told (PR_SET_PDEATHSIG) and aborts cleanly
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists()
    assert parts(store) == [] and manifests(store) == []


def test_sigterm_lets_a_running_backup_finish_within_the_grace(tmp_path, fleet, daemons):
    config = daemon_config(tmp_path, {"1": fleet["1"]}, schedule={"shutdown_grace": "60s"},
                           settings={"mysqldump": str(slow_mysqldump(tmp_path, 3)), "part_size": "64KiB"})
    store = tmp_path / "store"
    daemon = daemons(config, tmp_path / "daemon.log")
    daemon.wait_for(lambda: parts(store), what="parts")
    assert daemon.stop() == 0
    assert "waiting up to" in daemon.text()
    [entry] = listing(config)
    assert entry["kind"] == "full"


def test_sigterm_aborts_backups_still_running_after_the_grace(tmp_path, fleet, daemons):
    config = daemon_config(tmp_path, {"1": fleet["1"]}, schedule={"shutdown_grace": "1s"},
                           settings={"mysqldump": str(slow_mysqldump(tmp_path, 60)), "part_size": "64KiB"})
    store = tmp_path / "store"
    daemon = daemons(config, tmp_path / "daemon.log")
    daemon.wait_for(lambda: parts(store), what="parts")
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 30
    assert "aborting 1 running backups" in daemon.text()
    assert store_files(store / "1") == []  # no manifest, no part, no lease


def test_second_signal_aborts_at_once(tmp_path, fleet, daemons):
    config = daemon_config(tmp_path, {"1": fleet["1"]}, schedule={"shutdown_grace": "10m"},
                           settings={"mysqldump": str(slow_mysqldump(tmp_path, 60)), "part_size": "64KiB"})
    store = tmp_path / "store"
    daemon = daemons(config, tmp_path / "daemon.log")
    daemon.wait_for(lambda: parts(store), what="parts")
    daemon.process.send_signal(signal.SIGINT)
    daemon.wait_for(lambda: "waiting up to" in daemon.text(), what="graceful stop")
    time.sleep(0.5)
    assert daemon.process.poll() is None  # still waiting for the backup
    daemon.process.send_signal(signal.SIGINT)
    assert daemon.process.wait(timeout=30) == 0
    assert store_files(store / "1") == []


def test_sighup_reloads_and_a_bad_config_keeps_the_old_one(tmp_path, fleet, daemons):
    config = daemon_config(tmp_path, {"1": fleet["1"]}, schedule={"full_every": "1h", "incremental_every": "1h"})
    daemon = daemons(config, tmp_path / "daemon.log")
    daemon.wait_for(lambda: [e for e in listing(config) if e["shard"] == "1"], what="shard 1's full")
    good = config.read_text()
    config.write_text(good.replace("[schedule]", "[schedule]\nbogus = 1"))
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda: "keeping the running configuration" in daemon.text(), what="rejected reload")
    assert "schedule.bogus: unknown key" in daemon.text()
    assert daemon.process.poll() is None
    daemon_config(tmp_path, fleet, schedule={"full_every": "1h", "incremental_every": "1h"})  # adds shard 2
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda: [e for e in listing(config) if e["shard"] == "2"], what="shard 2 after reload")
    assert daemon.stop() == 0
    assert sorted(e["shard"] for e in listing(config)) == ["1", "2"]


def test_two_daemons_on_one_fleet_never_double_a_backup(tmp_path, fleet, daemons):
    config = daemon_config(tmp_path, fleet, schedule={"concurrency": 2},
                           settings={"mysqldump": str(slow_mysqldump(tmp_path, 2))})
    a = daemons(config, tmp_path / "a.log", "--once")
    b = daemons(config, tmp_path / "b.log", "--once")
    assert a.process.wait(timeout=120) == 0, a.text()
    assert b.process.wait(timeout=120) == 0, b.text()
    assert sorted(e["shard"] for e in listing(config)) == ["1", "2"]
    text = a.text() + b.text()
    assert "skipped" in text  # the loser of each shard saw the lock or the new backup


def test_prune_keeps_the_newest_chain_and_deletes_manifest_then_parts(tmp_path, fleet, mariadb_factory):
    target = mariadb_factory("target")
    config = write_config(tmp_path / "backupd.toml", shards={"1": fleet["1"]}, targets={"dr": target})
    config.write_text(config.read_text() + "[retention]\nfull_days = 0\n")
    for kind in ("full", "incremental", "full", "incremental"):
        result = run("backupd", "--config", str(config), "backup", "--shard", "1", "--kind", kind)
        assert result.code == 0, result.stderr
    old_full, old_inc, new_full, new_inc = [e["id"] for e in listing(config)]
    dry = run("backupd", "--config", str(config), "prune", "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    verdicts = {v["id"]: v for v in json.loads(dry.stdout)["verdicts"]}
    assert [i for i, v in verdicts.items() if not v["keep"]] == [old_full, old_inc]
    assert "newest full" in verdicts[new_full]["reasons"]
    assert len(listing(config)) == 4  # a dry run deletes nothing
    result = run("backupd", "--config", str(config), "prune")
    assert result.code == 0, result.stderr
    assert [e["id"] for e in listing(config)] == [new_full, new_inc]
    assert not (tmp_path / "store" / "1" / old_full).exists() and not (tmp_path / "store" / "1" / old_inc).exists()
    restored = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--json")
    assert restored.code == 0, restored.stderr
    assert json.loads(restored.stdout)["chain"] == [new_full, new_inc]


def test_one_shot_backup_respects_the_lock(tmp_path, fleet):
    config = daemon_config(tmp_path, {"1": fleet["1"]}, settings={
        "mysqldump": str(slow_mysqldump(tmp_path, 60)), "part_size": "64KiB"})
    store = tmp_path / "store"
    first = subprocess.Popen([str(BIN / "backupd"), "--config", str(config), "backup", "--shard", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not parts(store) and time.monotonic() < deadline:
            time.sleep(0.1)
        second = run("backupd", "--config", str(config), "backup", "--shard", "1")
        assert second.code == 1
        assert "shard 1: a backup is already running: the lock is held by host" in second.stderr
        polite = run("backupd", "--config", str(config), "backup", "--shard", "1", "--if-due", "--json")
        assert polite.code == 0 and json.loads(polite.stdout)["result"] == "skipped"
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    assert first.returncode == 143
    assert store_files(store / "1") == []  # aborted: no parts, no manifest, no lease


def test_daemon_audits_after_backups_and_runs_deep_audits_and_drills(tmp_path, fleet, mariadb_factory, daemons):
    scratch = mariadb_factory("scratch")
    config = daemon_config(tmp_path, {"1": fleet["1"]}, targets={"scratch": scratch},
                           schedule={"full_every": "1h", "incremental_every": "1h", "catalog_refresh": "1s"},
                           audit={"after_backup": True, "deep_every": "1h", "deep_sample": 100},
                           extra='[drill]\ntarget = "scratch"\nevery = "1h"\n')
    daemon = daemons(config, tmp_path / "daemon.log")
    daemon.wait_for(lambda: "quick audit: everything holds" in daemon.text(), what="quick audit")
    daemon.wait_for(lambda: "drill verified" in daemon.text(), timeout=120, what="drill")
    daemon.wait_for(lambda: "deep audit: everything holds" in daemon.text(), timeout=120, what="deep audit")
    time.sleep(3)  # more maintenance rounds: each ran once, and is not due again for an hour
    text = daemon.text()
    assert text.count("starting audit drill") == 1 and text.count("starting audit deep") == 1, text
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=60) == 0
    backup_dir = next(p for p in (tmp_path / "store" / "1").iterdir() if p.name[0].isdigit())
    names = sorted(p.name for p in (backup_dir / "annotations").iterdir())
    assert [n.split("-2")[0] for n in names] == ["audit-deep", "audit-quick", "drill"]  # every audit records its verdict
    # a restarted daemon reads when they last ran from the annotations: nothing is repeated
    again = daemons(config, tmp_path / "again.log")
    time.sleep(4)
    assert "starting audit" not in again.text(), again.text()


def test_run_once_also_runs_due_deep_audits_and_drills_and_exits_3_on_a_finding(tmp_path, fleet, mariadb_factory):
    scratch = mariadb_factory("scratch")

    def configure(deep_every: str) -> Path:
        return daemon_config(tmp_path, {"1": fleet["1"]}, targets={"scratch": scratch},
                             schedule={"full_every": "1h", "incremental_every": "1h"},
                             audit={"after_backup": True, "deep_every": deep_every, "deep_sample": 100},
                             extra='[drill]\ntarget = "scratch"\nevery = "1h"\n')

    config = configure("1h")
    first = run("backupd", "--config", str(config), "run", "--once")
    assert first.code == 0, first.stderr
    for outcome in ("quick audit: everything holds", "drill verified", "deep audit: everything holds"):
        assert outcome in first.stderr, first.stderr
    again = run("backupd", "--config", str(config), "run", "--once")
    assert again.code == 0 and "nothing is due" in again.stderr
    assert "starting audit" not in again.stderr, again.stderr  # the annotations say they ran
    # a byte flipped in a stored part; the next due deep audit finds it, and cron sees exit 3
    part = next((tmp_path / "store" / "1").glob("*/part-000001.zst"))
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    configure("1s")
    time.sleep(1.1)
    later = run("backupd", "--config", str(config), "run", "--once")
    assert later.code == 3, later.stderr
    assert "part-corrupt" in later.stderr and later.stderr.count("starting audit deep") == 1


def test_a_deep_audit_finding_makes_the_daemon_repair_the_copy_from_a_good_one(tmp_path, fleet):
    """Two stores; a byte flipped in one store's part: the next due deep audit finds it (exit 3
    for cron), and the daemon then runs sync --verify, which replaces the copy from the other
    store: the stores hold the same bytes again and a deep audit is clean."""
    stores = {"a": {"type": "local", "path": str(tmp_path / "a")}, "b": {"type": "local", "path": str(tmp_path / "b")}}

    def configure(deep_every: str) -> Path:
        return daemon_config(tmp_path, {"1": fleet["1"]}, stores=stores,
                             schedule={"full_every": "1h", "incremental_every": "1h"},
                             audit={"after_backup": False, "deep_every": deep_every, "deep_sample": 100})

    config = configure("1h")
    first = run("backupd", "--config", str(config), "run", "--once")
    assert first.code == 0 and "deep audit: everything holds" in first.stderr, first.stderr
    part = next((tmp_path / "b" / "1").glob("*/part-000001.zst"))
    good = (tmp_path / "a" / part.relative_to(tmp_path / "b")).read_bytes()
    part.write_bytes(bytes(b ^ 0xFF if i == len(good) // 2 else b for i, b in enumerate(good)))
    configure("1s")
    time.sleep(1.1)
    later = run("backupd", "--config", str(config), "run", "--once")
    assert later.code == 3 and "part-corrupt" in later.stderr, later.stderr
    assert "starting sync --verify" in later.stderr and "every store is whole" in later.stderr, later.stderr
    assert part.read_bytes() == good
    deep = run("backupd", "--config", str(config), "audit", "--level", "deep")
    assert deep.code == 0, deep.stdout


def test_the_daemon_keeps_one_binlog_archiver_per_shard_and_stops_it(tmp_path, fleet, daemons):
    """[binlogs] enabled: `backupd run` starts the shard's archiver, restarts it after a kill -9
    (within 30 s), a one-shot archiver of the same shard is refused by the lease, and SIGTERM
    stops the daemon (within 60 s) with the archiver's lease released and every write archived."""
    config = daemon_config(tmp_path, {"1": fleet["1"]}, extra='[binlogs]\nenabled = true\nflush_every = "1s"\n')
    daemon = daemons(config, tmp_path / "daemon.log")
    daemon.wait_for(lambda: "shard 1: starting its binlog archiver" in daemon.text(), what="the archiver")

    def archiver_pids() -> list[int]:
        return [pid for pid in daemon.children()
                if b"binlogs" in Path(f"/proc/{pid}/cmdline").read_bytes()]

    daemon.wait_for(lambda: "binlogs/1/position.json" in store_files(tmp_path / "store"), what="the archiver to read")
    fleet["1"].execute("CREATE TABLE app.daemon_t (id INT PRIMARY KEY)")
    daemon.wait_for(lambda: any(f.startswith("binlogs/1/") and f.endswith(".zst")
                                for f in store_files(tmp_path / "store")), what="a segment")
    os.kill(archiver_pids()[0], signal.SIGKILL)
    daemon.wait_for(lambda: "binlog archiver exited with status -9" in daemon.text(), what="the exit")
    daemon.wait_for(lambda: daemon.text().count("starting its binlog archiver") >= 2, timeout=30, what="a restart")
    daemon.wait_for(lambda: bool(archiver_pids()), what="the new archiver")
    time.sleep(1.5)  # it holds the lease now
    second = run("backupd", "--config", str(config), "binlogs", "--shard", "1", timeout=60)
    assert second.code == 1 and "a binlog archiver is already running" in second.stderr, second.stderr
    fleet["1"].execute("INSERT INTO app.daemon_t VALUES (1), (2)")
    file, pos = fleet["1"].query("SHOW MASTER STATUS")[0][:2]
    daemon.wait_for(lambda: json.loads(run("backupd", "--config", str(config), "status", "--json").stdout)[0]
                    ["binlogs"]["position"] == f"{file}:{pos}", what="the archive to catch up")
    assert daemon.stop(timeout=60) == 0
    assert "stopping 1 binlog archiver(s)" in daemon.text()
    assert not [f for f in store_files(tmp_path / "store") if "/binlog-locks/" in f], "the lease was not released"
