"""scripts/bench backup-restore: backupd next to mysqldump (| zstd) and mydumper; restore next to
``zstd -dc | mysql`` and myloader; one bucket restored into the live shard next to the whole one."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable

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


def bench_backup_restore(rounds: int, gib: float) -> None:
    work = fresh_workdir("work")
    source = source_server(gib)
    config = work / "backupd.toml"
    try:
        write_config(config, source, None)
        one_stream = work / "one-stream.toml"
        write_config(one_stream, source, None)
        one_stream.write_text(one_stream.read_text().replace("[backupd]\n", "[backupd]\ndump_streams = 1\n", 1))
        dump = dump_command(work, source)
        zst = work / "dump.sql.zst"
        backup_jobs: dict[str, Callable[[], Sample]] = {
            "mysqldump > /dev/null": lambda: timed(f"{dump} > /dev/null"),
            "mysqldump | zstd -3 -T2 > file": lambda: timed(f"{dump} | zstd -q -3 -T2 -f -o {zst}"),
            "backupd backup (reference=digest)": lambda: timed_rss([str(BIN / "backupd"), "-q", "--config", str(config), "backup", "--shard", "digest"])[0],
            "backupd backup (reference=counts)": lambda: timed_rss([str(BIN / "backupd"), "-q", "--config", str(config), "backup", "--shard", "counts"])[0],
            "backupd backup (reference=digest, dump_streams = 1)": lambda: timed_rss([str(BIN / "backupd"), "-q", "--config", str(one_stream), "backup", "--shard", "digest"])[0],
            "mydumper -t 2 (no compression)": lambda: timed(f"rm -rf {work}/mydumper && mydumper -S {source.socket} -u root -B app -t 2 -o {work}/mydumper"),
            "mydumper -t 2, then zstd -3 -T2 of its files": lambda: timed(
                f"rm -rf {work}/mydumper-z && mydumper -S {source.socket} -u root -B app -t 2 -o {work}/mydumper-z "
                f"&& zstd -q -3 -T2 --rm -r {work}/mydumper-z"),
        }
        results: dict[str, list[Sample]] = {name: [] for name in backup_jobs}
        for r in range(rounds):
            for name, job in backup_jobs.items():
                results[name].append(job())
                shutil.rmtree(BENCH / "store", ignore_errors=True) if "backupd" in name and r < rounds - 1 else None
            print(f"bench: backup round {r + 1}/{rounds} done", flush=True)
        raw = json.loads(subprocess.run([str(BIN / "backupd"), "--config", str(config), "list", "--json"],
                                        capture_output=True, text=True, check=True).stdout)
        newest = [e for e in raw if e["shard"] == "digest"][-1]
        print_table(f"Backup of one shard: {newest['raw_bytes'] / 1024**3:.2f} GiB of SQL, "
                    f"{newest['stored_bytes'] / 1024**2:.0f} MiB stored ({newest['raw_bytes'] / newest['stored_bytes']:.2f}x)",
                    list(results.items()), "mysqldump | zstd -3 -T2 > file")

        restore_results: dict[str, list[Sample]] = {"zstd -dc | mysql": [], "myloader -t 2": [],
                                                    "restore (apply + verify digests)": [],
                                                    "restore: load only (most verification overlapped)": [],
                                                    "restore --jobs 1 (apply + verify digests)": [],
                                                    "restore --table (one bucket, --force, into the live shard)": []}
        tables = [r[0] for r in source.query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                                             "TABLE_SCHEMA = 'app' ORDER BY TABLE_NAME")]
        bucket = tables[0]
        n = 0
        for r in range(rounds):
            for name in ("zstd -dc | mysql", "myloader -t 2", "restore (apply + verify digests)",
                         "restore --jobs 1 (apply + verify digests)"):
                n += 1
                target = fresh_target(n)
                try:
                    if name == "zstd -dc | mysql":
                        restore_results[name].append(timed(f"zstd -dc {zst} | mysql -S {target.socket} -uroot"))
                    elif name == "myloader -t 2":
                        restore_results[name].append(timed(f"myloader -S {target.socket} -u root -t 2 -d {work}/mydumper"))
                    elif name.startswith("restore --jobs 1"):
                        write_config(config, source, target)
                        sample, out = timed_rss([str(BIN / "restore"), "-q", "--config", str(config), "--shard", "digest",
                                                 "--target", "bench", "--json", "--jobs", "1"])
                        assert json.loads(out)["verified"]
                        restore_results[name].append(sample)
                    else:
                        write_config(config, source, target)
                        sample, out = timed_rss([str(BIN / "restore"), "-q", "--config", str(config), "--shard", "digest",
                                                 "--target", "bench", "--json"])
                        report = json.loads(out)
                        assert report["verified"], report
                        restore_results[name].append(sample)
                        restore_results["restore: load only (most verification overlapped)"].append(Sample(report["apply_seconds"]))
                        sample, out = timed_rss([str(BIN / "restore"), "-q", "--config", str(config), "--shard", "digest",
                                                 "--target", "bench", "--table", f"app.{bucket}", "--force", "--json"])
                        assert json.loads(out)["verified"]
                        restore_results["restore --table (one bucket, --force, into the live shard)"].append(sample)
                finally:
                    target.destroy()
            print(f"bench: restore round {r + 1}/{rounds} done", flush=True)
        print_table("Restore of the same shard into a fresh server", list(restore_results.items()), "myloader -t 2",
                    "`restore` loads over one connection per core (2 here) and sql_log_bin=0 (no binlog on the "
                    "target), `zstd -dc | mysql` with the server's default (binlog on); verification computes the "
                    "digest of every restored table; the one-bucket restore loads, verifies and swaps one of the "
                    f"{len(tables)} tables.")
    finally:
        source.stop()
