"""scripts/bench replica: a backup read on the replica next to the same backup read on the
primary and to ``mysqldump | zstd`` on the primary, while an application writes to the primary:
how long each takes, and what the primary's writers feel (commits per second, p99 and worst
commit latency). The replica is a copy of the cached shard replicating from it over TCP (GTID).

On this bench machine the primary and the replica share the same two cores and disk, so reading
the replica cannot relieve the primary's hardware as it does across hosts; what it does remove
here is the backup's own work on the primary: the commit block of the snapshot hand-off (the
worst commit latency) and the dump's queries on its buffer pool.
"""

from __future__ import annotations

import shutil
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.testbed import MariaDBServer, find_free_port

from .common import BENCH, BIN, Sample, dump_command, fresh_workdir, med, source_server, timed, timed_rss


@dataclass
class WriterLoad:
    """Commit latencies (seconds) of the application's writes during one job."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


@contextmanager
def application_writes(primary: MariaDBServer) -> Iterator[WriterLoad]:
    """One connection committing an insert and an update in turn, as fast as it can."""
    load, stop = WriterLoad(), threading.Event()

    def write() -> None:
        conn = primary.connect(database="app")
        n = 0
        with conn.cursor() as cursor:
            while not stop.is_set():
                n += 1
                started = time.perf_counter()
                if n % 2:
                    cursor.execute("INSERT INTO bench_writes (note) VALUES (%s)", (f"write {n}",))
                else:
                    cursor.execute("UPDATE bench_writes SET note = %s ORDER BY id DESC LIMIT 1", (f"update {n}",))
                load.latencies.append(time.perf_counter() - started)
        conn.close()

    thread = threading.Thread(target=write, daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        yield load
    finally:
        stop.set()
        thread.join()
        load.seconds = time.monotonic() - started


def replica_of(primary: MariaDBServer, gib: float) -> MariaDBServer:
    """A copy of the shard's files (the primary stopped for the copy) replicating from it."""
    root = BENCH / f"replica-{gib:g}g"
    shutil.rmtree(root, ignore_errors=True)
    primary.stop()
    shutil.copytree(primary.root, root, symlinks=True,
                    ignore=shutil.ignore_patterns("*.sock", "*.pid", "server.json"))
    primary.start()
    replica = MariaDBServer(name="bench-replica", root=root, port=find_free_port(), server_id=2)
    replica.start()
    primary.execute("CREATE USER IF NOT EXISTS 'repl'@'127.0.0.1' IDENTIFIED BY 'bench-repl'")
    primary.execute("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
    primary.execute("CREATE TABLE IF NOT EXISTS app.bench_writes (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                    "note VARCHAR(64) NOT NULL)")
    position = primary.query("SELECT BINLOG_GTID_POS(%s, 4)", (primary.query("SHOW MASTER STATUS")[0][0],))
    replica.execute("SET GLOBAL gtid_slave_pos = %s", (position[0][0] or "",))
    replica.execute(f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, MASTER_USER='repl', "
                    "MASTER_PASSWORD='bench-repl', MASTER_USE_GTID=slave_pos")
    replica.execute("START SLAVE")
    target = primary.query("SELECT @@gtid_binlog_pos")[0][0]
    assert replica.query("SELECT MASTER_GTID_WAIT(%s, 300)", (target,))[0][0] == 0, "the replica did not catch up"
    return replica


def bench_replica(rounds: int, gib: float) -> None:
    work = fresh_workdir("replica")
    primary = source_server(gib)
    replica = replica_of(primary, gib)
    config = work / "backupd.toml"
    config.write_text(f"""[backupd]
part_size = "64MiB"
compression_level = 3
compression_threads = 2
[stores.local]
type = "local"
path = "{work / 'store'}"
[shards.primary]
socket = "{primary.socket}"
user = "root"
databases = ["app"]
reference = "counts"
[shards.replica]
socket = "{primary.socket}"
user = "root"
databases = ["app"]
reference = "counts"
backup_from = "replica"
replicas = [{{socket = "{replica.socket}"}}]
""")
    dump = dump_command(work, primary)

    def backupd(shard: str) -> Callable[[], Sample]:
        return lambda: timed_rss([str(BIN / "backupd"), "-q", "--config", str(config), "backup", "--shard", shard])[0]

    jobs: dict[str, Callable[[], Sample]] = {
        "no backup (the writer alone, 20 s)": lambda: (time.sleep(20), Sample(20.0))[1],
        "mysqldump | zstd -3 -T2 on the primary": lambda: timed(f"{dump} | zstd -q -3 -T2 -f -o {work / 'd.zst'}"),
        "backupd backup, read on the primary": backupd("primary"),
        "backupd backup, read on the replica": backupd("replica"),
    }
    seconds: dict[str, list[Sample]] = {name: [] for name in jobs}
    loads: dict[str, list[WriterLoad]] = {name: [] for name in jobs}
    try:
        for r in range(rounds):
            for name, job in jobs.items():
                shutil.rmtree(work / "store", ignore_errors=True)
                with application_writes(primary) as load:
                    seconds[name].append(job())
                loads[name].append(load)
            print(f"bench: round {r + 1}/{rounds} done", flush=True)
    finally:
        replica.destroy()
        primary.stop()
    baseline = "mysqldump | zstd -3 -T2 on the primary"
    idle = "no backup (the writer alone, 20 s)"
    base = med(seconds[baseline])
    idle_rate = statistics.median(load.per_second for load in loads[idle])
    print(f"\nA backup while the application writes to the primary  (median of {rounds} interleaved runs; "
          f"ratio = job / `{baseline}`; the writer's rate as a share of its rate with no backup)")
    print("| job | median s | ratio | primary commits/s | share of idle | p99 commit ms | worst commit ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in jobs:
        rate = statistics.median(load.per_second for load in loads[name])
        p99 = statistics.median(load.quantile(0.99) for load in loads[name]) * 1000
        worst = statistics.median(max(load.latencies, default=0.0) for load in loads[name]) * 1000
        cell = name.replace("|", "\\|")
        ratio = "-" if name == idle else f"{med(seconds[name]) / base:.2f}x"
        print(f"| {cell} | {med(seconds[name]):.2f} | {ratio} | {rate:.0f} | {rate / idle_rate:.2f} | {p99:.1f} | "
              f"{worst:.1f} |")
    print("Primary and replica share this machine's 2 cores and disk: across hosts, reading the replica leaves "
          "the primary's CPU and I/O alone too.")
