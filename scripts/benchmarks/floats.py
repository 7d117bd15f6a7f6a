"""scripts/bench floats: what writing FLOAT rows exactly costs, where such columns exist.

Two databases hold the same 1M sensor rows: ``floats`` with FLOAT columns (their rows are written
by the server as exact literals, ``backupd/mysql/exact_rows.py``) and ``doubles`` with DOUBLE
columns (which mysqldump writes exactly itself). Each is backed up by backupd and by
``mysqldump | zstd -3 -T2``; the ratio of backupd on ``floats`` to backupd on ``doubles`` is the
cost of the exact rows, and ``mysqldump`` on ``floats`` is the lossy baseline.
"""

from __future__ import annotations

import shutil

from tests.testbed import MariaDBServer

from .common import BENCH, BIN, CACHE, Sample, fresh_workdir, print_table, timed, timed_rss

ROWS = 1_000_000


def _server() -> MariaDBServer:
    root = BENCH / "floats-source"
    shutil.rmtree(root, ignore_errors=True)
    server = MariaDBServer.create(root, "bench-floats", 1, CACHE)
    server.start()
    try:
        for database, kind in (("floats", "FLOAT"), ("doubles", "DOUBLE")):
            server.execute(f"CREATE DATABASE {database}")
            server.execute(f"CREATE TABLE {database}.sensor (id BIGINT PRIMARY KEY, a {kind}, b {kind}, c {kind}, "
                           "label VARCHAR(32), at DATETIME(6))")
            server.execute(f"INSERT INTO {database}.sensor SELECT seq, seq / 3e0, SIN(seq), seq * 1.1e-7, "
                           f"CONCAT('sensor-', seq % 97), '2026-01-01' + INTERVAL seq SECOND "
                           f"FROM {database}.seq_1_to_{ROWS}")
    except BaseException:
        server.destroy()  # a bench that fails leaves no server running
        raise
    return server


def bench_floats(rounds: int) -> None:
    work = fresh_workdir("floats")
    server = _server()
    try:
        config = work / "backupd.toml"
        config.write_text(f"""[backupd]
part_size = "64MiB"
[stores.local]
type = "local"
path = "{work / 'store'}"
[shards.floats]
socket = "{server.socket}"
user = "root"
databases = ["floats"]
[shards.doubles]
socket = "{server.socket}"
user = "root"
databases = ["doubles"]
""")
        dump = (f"mysqldump --no-defaults -S {server.socket} -uroot --single-transaction --quick --hex-blob "
                "--databases")
        jobs = {
            "mysqldump floats | zstd -3 -T2 (FLOAT written with 6 digits: lossy)":
                lambda: timed(f"{dump} floats | zstd -q -3 -T2 -f -o {work}/floats.sql.zst"),
            "mysqldump doubles | zstd -3 -T2": lambda: timed(f"{dump} doubles | zstd -q -3 -T2 -f -o {work}/d.sql.zst"),
            "backupd backup doubles (mysqldump writes the rows)": lambda: timed_rss(
                [str(BIN / "backupd"), "-q", "--config", str(config), "backup", "--shard", "doubles"])[0],
            "backupd backup floats (the server writes exact rows)": lambda: timed_rss(
                [str(BIN / "backupd"), "-q", "--config", str(config), "backup", "--shard", "floats"])[0],
        }
        results: dict[str, list[Sample]] = {name: [] for name in jobs}
        for r in range(rounds):
            for name, job in jobs.items():
                results[name].append(job())
            print(f"bench: floats round {r + 1}/{rounds} done", flush=True)
        print_table(f"Backup of {ROWS:,} sensor rows (3 FLOAT or DOUBLE columns, a label, a time)",
                    list(results.items()), "backupd backup doubles (mysqldump writes the rows)")
    finally:
        server.destroy()

