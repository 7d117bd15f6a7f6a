"""scripts/bench incremental: an incremental after a write-heavy hour, next to mysqldump --where;
restore of full + incremental."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections.abc import Callable

from tests.testbed import MariaDBServer, find_free_port

from .common import (
    BENCH,
    BIN,
    Sample,
    dump_command,
    fresh_target,
    fresh_workdir,
    print_table,
    source_server,
    timed,
    timed_rss,
    write_config,
)


def aged_source(gib: float) -> MariaDBServer:
    """A working copy of the benchmark shard whose rows were all last updated a week ago (so
    an incremental carries only what the benchmark changes). The aged datadir is made once and
    cached; each run starts from a fresh copy of it."""
    base = BENCH / f"shard-{gib:g}g"
    aged = BENCH / f"shard-{gib:g}g-aged"
    if not (aged / "READY").exists():
        source_server(gib).stop()  # generates the shard if needed
        shutil.rmtree(aged, ignore_errors=True)
        subprocess.run(["cp", "-a", "--sparse=always", str(base), str(aged)], check=True)
        (aged / "READY").unlink()
        server = MariaDBServer(name="bench-aged", root=aged.absolute(), port=find_free_port(), server_id=1)
        server.start()
        print("bench: ageing the shard's rows by a week (once) ...", flush=True)
        conn = server.connect()
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")
            cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA='app' "
                        "AND TABLE_NAME LIKE 'bucket%'")
            for (table,) in cur.fetchall():
                cur.execute(f"UPDATE app.`{table}` SET created_at = created_at - INTERVAL 7 DAY, "
                            "updated_at = updated_at - INTERVAL 7 DAY")
        conn.close()
        server.stop()
        (aged / "READY").write_text((base / "READY").read_text())
    work = BENCH / "incremental" / "source"
    shutil.rmtree(work, ignore_errors=True)
    work.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", "--sparse=always", str(aged), str(work)], check=True)
    server = MariaDBServer(name="bench-incremental", root=work.absolute(), port=find_free_port(), server_id=1)
    server.start()
    return server


def change_rows(source: MariaDBServer, percent: float) -> int:
    """Update ``percent`` of every bucket table's rows (data and updated_at), delete 0.1% and
    insert as many: the hour of a write-heavy application."""
    conn = source.connect()
    changed = 0
    with conn.cursor() as cur:
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA='app' "
                    "AND TABLE_NAME LIKE 'bucket%'")
        modulo = round(100 / percent)
        for (table,) in cur.fetchall():
            changed += cur.execute(f"UPDATE app.`{table}` SET data = JSON_SET(data, '$.bench_rev', 1), "
                                   f"updated_at = NOW(6) WHERE id % {modulo} = 0")
            cur.execute(f"DELETE FROM app.`{table}` WHERE id % 1000 = 7")
            cur.execute(f"INSERT INTO app.`{table}` (id, data, created_at, updated_at) "
                        f"SELECT id + 5000000, data, NOW(6), NOW(6) FROM app.`{table}` WHERE id % 1000 = 8")
    conn.close()
    return changed


def bench_incremental(rounds: int, gib: float, percent: float) -> None:
    """An incremental after updating ``percent`` of the rows, next to mysqldump --where | zstd;
    restore of full + incremental next to the full alone."""
    work = fresh_workdir("incremental/work")
    shutil.rmtree(BENCH / "store", ignore_errors=True)
    source = aged_source(gib)
    config = work / "backupd.toml"
    try:
        write_config(config, source, None)
        fulls = {shard: json.loads(timed_rss([str(BIN / "backupd"), "-q", "--config", str(config), "backup",
                                              "--shard", shard, "--json"])[1])
                 for shard in ("digest", "counts")}
        changed = change_rows(source, percent)
        since = source.query("SELECT NOW(6) - INTERVAL 24 HOUR")[0][0]
        dump = dump_command(work, source).replace(" --routines --triggers --events", "")
        # the plain tool cannot skip tables without the column (backupd copies them whole)
        where = shlex.quote(f"--where=updated_at >= '{since}'") + " --ignore-table=app.gtid_marker"
        zst = work / "changed.sql.zst"
        incrementals: dict[str, list[dict]] = {"digest": [], "counts": []}

        def incremental(shard: str) -> Sample:
            sample, out = timed_rss([str(BIN / "backupd"), "-q", "--config", str(config), "backup",
                                     "--shard", shard, "--kind", "incremental", "--json"])
            incrementals[shard].append(json.loads(out))
            return sample

        jobs: dict[str, Callable[[], Sample]] = {
            "mysqldump --where | zstd -3 -T2 > file": lambda: timed(
                f"{dump.replace(' --databases', ' --no-create-info --replace ' + where + ' --databases')} "
                f"| zstd -q -3 -T2 -f -o {zst}"),
            "backupd incremental (reference=digest)": lambda: incremental("digest"),
            "backupd incremental (reference=counts)": lambda: incremental("counts"),
            "backupd full (reference=digest), for scale": lambda: timed_rss(
                [str(BIN / "backupd"), "-q", "--config", str(config), "backup", "--shard", "digest"])[0],
        }
        results: dict[str, list[Sample]] = {name: [] for name in jobs}
        for r in range(rounds):
            for name, job in jobs.items():
                results[name].append(job())
            print(f"bench: incremental round {r + 1}/{rounds} done", flush=True)
        hand_bytes = zst.stat().st_size
        inc = incrementals["digest"][-1]
        full = fulls["digest"]
        print_table(f"Incremental after updating {percent:g}% of {full['raw_bytes'] / 1024**3:.2f} GiB "
                    f"({changed} rows; plus 0.1% deleted and 0.1% inserted)",
                    list(results.items()), "mysqldump --where | zstd -3 -T2 > file",
                    f"\nBytes stored: mysqldump --where | zstd {hand_bytes / 1024**2:.1f} MiB (1.00x); "
                    f"backupd incremental {inc['stored_bytes'] / 1024**2:.1f} MiB "
                    f"({inc['stored_bytes'] / hand_bytes:.2f}x; it also carries the live keys that "
                    f"make deletes restorable, which the plain dump misses); the full it applies to "
                    f"{full['stored_bytes'] / 1024**2:.0f} MiB.")

        restores: dict[str, list[Sample]] = {"restore full alone": [], "restore full + incremental": []}
        n = 200
        for r in range(rounds):
            for name, backup_id in (("restore full alone", full["id"]),
                                    ("restore full + incremental", inc["id"])):
                n += 1
                target = fresh_target(n)
                try:
                    write_config(config, source, target)
                    sample, out = timed_rss([str(BIN / "restore"), "-q", "--config", str(config), "--shard",
                                             "digest", "--target", "bench", "--backup", backup_id, "--json"])
                    assert json.loads(out)["verified"]
                    restores[name].append(sample)
                finally:
                    target.destroy()
            print(f"bench: incremental restore round {r + 1}/{rounds} done", flush=True)
        print_table("Restore into a fresh server, verified (ratio = job / the full alone)",
                    list(restores.items()), "restore full alone")
    finally:
        source.destroy()
