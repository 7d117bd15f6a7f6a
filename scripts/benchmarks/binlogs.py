"""scripts/bench binlogs: archiving a shard's binlog under a sustained write load, and replaying it.

1. **Archiving.** On the ~1 GiB shard, writer threads insert and update 1 KiB JSON documents in a
   database of their own (a few MB/s of ROW binlog) for ``--seconds``. Two readers follow the
   server's binlog at the same time, over the replication protocol: ``backupd binlogs``
   (``flush_every = 5s``, into a local store) and ``mariadb-binlog --read-from-remote-server
   --raw --stop-never`` writing files to a local folder by hand. Every 0.5 s the server's binlog
   position is sampled, and so is how far each reader has stored: a reader's lag at a moment is
   how long ago the server was at the position it has stored (the same yardstick for both; for
   backupd also its own ``rpo_seconds``, now minus the newest archived event, the metric users
   graph). CPU seconds per MiB of binlog come from ``/proc``.
2. **Replay.** The binlog written during the load (from its first event) is replayed into a
   fresh database, ``--rounds`` times, interleaved: ``mariadb-binlog FILES | mariadb`` by hand
   next to backupd's replay of the archived segments (fetched, sha256-checked, decompressed,
   cut, ``mysqlbinlog - | mysql`` per file, then the GTID proof).
3. **One table's replay.** The same range, one of the load's tables only, into a copy under
   another database (what ``restore --table --at`` does after loading the backup): by hand,
   ``mariadb-binlog --database --table --rewrite-db FILES | mariadb``, next to backupd's
   row-event filter; both must leave the same rows.

Targets: backupd's ``rpo_seconds`` max <= ``flush_every`` + 2 s; replay <= 1.0x the hand pipeline.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from .common import BIN, REPO, Sample, fresh_target, fresh_workdir, med, source_server, timed

FLUSH_EVERY = 5.0
WRITERS = 3


def _config(work: Path, source_socket: str, target_socket: str) -> Path:
    path = work / "backupd.toml"
    path.write_text(f"""[stores.local]
type = "local"
path = "{work / 'store'}"
[shards.bench]
socket = "{source_socket}"
user = "root"
reference = "counts"
[targets.bench]
socket = "{target_socket}"
user = "root"
read_from = ["local"]
[binlogs]
flush_every = "{FLUSH_EVERY:g}s"
""")
    return path


class Load:
    """Writer threads: multi-row inserts of ~1 KiB JSON documents and updates, as fast as the
    pacing allows (``rows_per_second`` in all)."""

    def __init__(self, server, rows_per_second: int):
        self.server = server
        self.stop = threading.Event()
        self.rows = 0
        self.pace = rows_per_second / WRITERS
        server.execute("DROP DATABASE IF EXISTS load_db")
        server.execute("CREATE DATABASE load_db")
        for n in range(WRITERS):
            server.execute(f"CREATE TABLE load_db.bucket_{n} (id BIGINT PRIMARY KEY, data JSON, "
                           "updated_at DATETIME(6) NOT NULL)")
        self.threads = [threading.Thread(target=self._write, args=(n,)) for n in range(WRITERS)]

    def _write(self, n: int) -> None:
        conn = self.server.connect(database="load_db")
        rng = random.Random(n)
        next_id, started = 1, time.monotonic()
        with conn.cursor() as cur:
            while not self.stop.is_set():
                rows = [(next_id + i, json.dumps({"n": next_id + i, "blob": f"{rng.getrandbits(128):032x}" * 28}))
                        for i in range(50)]
                cur.executemany(f"INSERT INTO bucket_{n} (id, data, updated_at) VALUES (%s, %s, NOW(6))", rows)
                cur.execute(f"UPDATE bucket_{n} SET updated_at = NOW(6) WHERE id = %s", (max(1, next_id - 7),))
                next_id += 50
                self.rows += 50
                ahead = (next_id / self.pace) - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        conn.close()

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children still alive."""
    total = _cpu_seconds(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        try:
            total += _tree_cpu(int(child))
        except FileNotFoundError:
            pass
    return total


def _stored_by_hand(folder: Path) -> tuple[str, int] | None:
    files = sorted(p for p in folder.iterdir() if p.name.startswith("bin."))
    return (files[-1].name, files[-1].stat().st_size) if files else None


def _stored_by_backupd(store: Path) -> tuple[tuple[str, int] | None, datetime | None]:
    try:
        document = json.loads((store / "binlogs" / "bench" / "position.json").read_text())
    except (OSError, ValueError):
        return None, None
    times = [datetime.fromisoformat(document[k].replace("Z", "+00:00")) for k in ("caught_up_at", "last_event_at")
             if document.get(k)]
    return (document["file"], int(document["pos"])), max(times) if times else None


def _lag(history: list[tuple[float, tuple[str, int]]], stored: tuple[str, int] | None, now: float) -> float | None:
    """How long ago the server was at a position at or before ``stored`` (None before the first)."""
    if stored is None:
        return None
    reached = [t for t, position in history if position <= stored]
    return now - max(reached) if reached else None


def _row(name: str, values: list[float]) -> str:
    return f"| {name} | {statistics.median(values):.2f} | {max(values):.2f} |"


def bench_binlogs(rounds: int, gib: float, seconds: float = 40.0, rows_per_second: int = 3000) -> None:
    work = fresh_workdir("binlogs")
    source = source_server(gib)
    target = fresh_target(300)
    config = _config(work, str(source.socket), str(target.socket))
    by_hand = work / "by-hand"
    by_hand.mkdir()
    archiver = hand = None
    try:
        subprocess.run([str(BIN / "backupd"), "-q", "--config", str(config), "backup", "--shard", "bench"],
                       check=True, capture_output=True)
        file, pos = source.query("SHOW MASTER STATUS")[0][:2]
        start = (str(file), int(pos))
        archiver = subprocess.Popen([str(BIN / "backupd"), "-q", "--config", str(config), "binlogs", "--shard",
                                     "bench"], stdout=subprocess.DEVNULL, stderr=open(work / "archiver.log", "wb"))
        hand = subprocess.Popen(["mariadb-binlog", "--read-from-remote-server", "--raw", "--stop-never",
                                 f"--socket={source.socket}", "--user=root", f"--result-file={by_hand}/",
                                 "--stop-never-slave-server-id=424242", start[0]],
                                stdout=subprocess.DEVNULL, stderr=open(work / "by-hand.log", "wb"))
        time.sleep(2)
        cpu_before = {"backupd": _tree_cpu(archiver.pid), "hand": _tree_cpu(hand.pid)}
        history: list[tuple[float, tuple[str, int]]] = []
        lags: dict[str, list[float]] = {"backupd binlogs: lag behind the server": [],
                                        "backupd binlogs: rpo_seconds (its metric)": [],
                                        "mariadb-binlog --raw --stop-never: lag behind the server": []}
        print(f"bench: {seconds:.0f}s of writes ({rows_per_second} rows/s of ~1 KiB JSON) ...", flush=True)
        load = Load(source, rows_per_second)
        file, pos = source.query("SHOW MASTER STATUS")[0][:2]
        after_ddl = (str(file), int(pos))  # one table's replay starts after the load's DDL
        with load:
            ends = time.monotonic() + seconds
            while time.monotonic() < ends:
                now = time.monotonic()
                file, pos = source.query("SHOW MASTER STATUS")[0][:2]
                history.append((now, (str(file), int(pos))))
                stored, until = _stored_by_backupd(work / "store")
                for name, value in (("backupd binlogs: lag behind the server", _lag(history, stored, now)),
                                    ("mariadb-binlog --raw --stop-never: lag behind the server",
                                     _lag(history, _stored_by_hand(by_hand), now))):
                    if value is not None and now - history[0][0] > FLUSH_EVERY + 2:
                        lags[name].append(value)
                if until is not None and now - history[0][0] > FLUSH_EVERY + 2:
                    lags["backupd binlogs: rpo_seconds (its metric)"].append(
                        (datetime.now(UTC) - until).total_seconds())
                time.sleep(0.5)
            rows = load.rows
        time.sleep(FLUSH_EVERY + 2)
        cpu = {"backupd": _tree_cpu(archiver.pid) - cpu_before["backupd"],
               "hand": _tree_cpu(hand.pid) - cpu_before["hand"]}
        binlog_mib = sum(p.stat().st_size for p in by_hand.iterdir() if p.name.startswith("bin.")) / 1024**2
        print(f"\nArchiving under load: {rows} rows in {seconds:.0f}s, {binlog_mib:.0f} MiB of binlog "
              f"(flush_every = {FLUSH_EVERY:g}s; sampled every 0.5 s)")
        print("| reader | median s | max s |")
        print("|---|---:|---:|")
        for name, values in lags.items():
            print(_row(name, values))
        print(f"CPU: backupd binlogs {cpu['backupd'] / binlog_mib * 1000:.0f} ms per MiB of binlog, "
              f"mariadb-binlog by hand {cpu['hand'] / binlog_mib * 1000:.0f} ms per MiB "
              f"({cpu['backupd'] / max(cpu['hand'], 1e-3):.1f}x)")
        print(f"Target: backupd's rpo_seconds max <= flush_every + 2 s = {FLUSH_EVERY + 2:g} s.")
        archiver.terminate()
        archiver.wait(timeout=60)
        hand.terminate()
        hand.wait(timeout=30)
        _bench_replay(rounds, work, config, source, target, start, after_ddl, by_hand)
    finally:
        for process in (archiver, hand):
            if process is not None and process.poll() is None:
                process.kill()
        target.destroy()
        source.execute("DROP DATABASE IF EXISTS load_db")
        source.execute("FLUSH BINARY LOGS")  # the cached shard keeps no binlog of the load
        newest = source.query("SHOW MASTER STATUS")[0][0]
        source.execute(f"PURGE BINARY LOGS TO '{newest}'")
        source.stop()
        shutil.rmtree(work / "store", ignore_errors=True)
        shutil.rmtree(by_hand, ignore_errors=True)


def _bench_replay(rounds: int, work: Path, config: Path, source, target, start: tuple[str, int],
                  after_ddl: tuple[str, int], by_hand: Path) -> None:
    """backupd's replay of the archived segments vs mariadb-binlog FILES | mariadb, interleaved."""
    import sys

    sys.path.insert(0, str(REPO))
    from backupd.config import load_config
    from backupd.repo.binlogs import BinlogArchive
    from backupd.repo.repository import Repository
    from restore.replay import PointInTime, ReplayPlan, replay

    repo = Repository(load_config(config))
    bench_target = repo.target("bench")
    archive = BinlogArchive(bench_target.stores, "bench").load()
    records = archive.replay_path(*start)
    files = sorted(p for p in by_hand.iterdir() if p.name.startswith("bin.") and p.name >= start[0])
    option = work / "target.cnf"
    option.write_text(f"[client]\nuser=root\nsocket={target.socket}\n")
    manifest = repo.catalog().backups("bench")[-1]
    plan = ReplayPlan("bench", manifest, start, records, PointInTime())
    hand = (f"mariadb-binlog --start-position={start[1]} {' '.join(str(f) for f in files)} | "
            f"mariadb --defaults-file={option} --binary-mode")
    samples: dict[str, list[Sample]] = {"mariadb-binlog FILES | mariadb (by hand)": [], "backupd replay": []}
    raw_mib = sum(r.raw_size for r in records) / 1024**2
    transactions = 0
    for r in range(rounds):
        for name in samples:
            target.execute("DROP DATABASE IF EXISTS load_db")
            if name == "backupd replay":
                started = time.monotonic()
                report = replay(repo.config.settings, bench_target, plan)
                samples[name].append(Sample(time.monotonic() - started))
                transactions = report.transactions
            else:
                samples[name].append(timed(hand))
        print(f"bench: replay round {r + 1}/{rounds} done", flush=True)
    _print_ratios(f"Replay of the load's binlog ({raw_mib:.0f} MiB, {len(records)} segments, {transactions} "
                  f"transactions; median of {rounds} interleaved runs; ratio = job / by hand)", samples,
                  "mariadb-binlog FILES | mariadb (by hand)", "Target: backupd replay <= 1.0x the hand pipeline.")
    table_plan = ReplayPlan("bench", manifest, after_ddl, archive.replay_path(*after_ddl), PointInTime())
    _bench_table_replay(rounds, repo, bench_target, table_plan, target, files, after_ddl, option)


def _bench_table_replay(rounds: int, repo, bench_target, plan, target, files: list[Path], start: tuple[str, int],
                        option: Path) -> None:
    """One table's changes only, re-addressed to ``scratch.bucket_0``: by hand vs backupd's filter."""
    from restore.replay import replay

    scratch = "bench_scratch"
    hand = (f"mariadb-binlog --start-position={start[1]} --database=load_db --table=bucket_0 "
            f"--rewrite-db='load_db->{scratch}' {' '.join(str(f) for f in files)} | "
            f"mariadb --defaults-file={option} --binary-mode")
    samples: dict[str, list[Sample]] = {"mariadb-binlog --table --rewrite-db FILES | mariadb (by hand)": [],
                                        "backupd replay of one table (rows events filtered)": []}
    rows: dict[str, int] = {}
    for r in range(rounds):
        for name in samples:
            target.execute(f"DROP DATABASE IF EXISTS {scratch}")
            target.execute(f"CREATE DATABASE {scratch}")
            target.execute(f"CREATE TABLE {scratch}.bucket_0 (id BIGINT PRIMARY KEY, data JSON, "
                           "updated_at DATETIME(6) NOT NULL)")
            if name.startswith("backupd"):
                started = time.monotonic()
                replay(repo.config.settings, bench_target, plan, {("load_db", "bucket_0"): (scratch, "bucket_0")})
                samples[name].append(Sample(time.monotonic() - started))
            else:
                samples[name].append(timed(hand))
            rows[name] = int(target.query(f"SELECT COUNT(*) FROM {scratch}.bucket_0")[0][0])
        print(f"bench: one-table replay round {r + 1}/{rounds} done", flush=True)
    target.execute(f"DROP DATABASE IF EXISTS {scratch}")
    if len(set(rows.values())) != 1:
        raise SystemExit(f"bench: the one-table replays disagree: {rows}")
    _print_ratios(f"Replay of one table's changes (load_db.bucket_0, {next(iter(rows.values()))} rows after; "
                  f"median of {rounds} interleaved runs; ratio = job / by hand)", samples,
                  "mariadb-binlog --table --rewrite-db FILES | mariadb (by hand)",
                  "Target: <= 1.0x the hand pipeline (which refuses nothing: DDL and statements pass its filters).")


def _print_ratios(title: str, samples: dict[str, list[Sample]], baseline: str, target: str) -> None:
    """A median-and-ratio table of ``samples`` against ``baseline``, then the target."""
    base = med(samples[baseline])
    print(f"\n{title}")
    print("| job | median s | ratio |")
    print("|---|---:|---:|")
    for name, values in samples.items():
        print(f"| {name} | {med(values):.2f} | {med(values) / base:.2f}x |")
    print(target)
