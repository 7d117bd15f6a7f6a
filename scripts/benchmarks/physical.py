"""scripts/bench physical: mariabackup backups and restores next to the same steps by hand, and a
replica rebuilt from S3."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
from collections.abc import Callable

from tests.testbed import MariaDBServer

from .common import (
    BIN,
    Sample,
    fresh_target,
    fresh_workdir,
    local_and_s3_stores,
    print_table,
    source_server,
    started_moto,
    timed,
    timed_rss,
)


def bench_physical(rounds: int, gib: float) -> None:
    """Physical backup next to ``mariabackup | zstd``; physical restore next to the same steps
    by hand and to a logical restore; a replica rebuilt end to end from a remote store (S3)."""
    work = fresh_workdir("physical")
    source = source_server(gib)
    source.execute("CREATE USER IF NOT EXISTS 'repl'@'127.0.0.1' IDENTIFIED BY 'bench-repl'")
    source.execute("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
    os.environ["BENCH_REPL_PW"] = "bench-repl"
    moto = started_moto(work)
    config = work / "backupd.toml"
    store = work / "store"

    def write(target: MariaDBServer | None = None) -> None:
        text = local_and_s3_stores(store, moto.endpoint_url)
        for name, extra in (("physical", 'reference = "digest"'), ("physical-counts", 'reference = "counts"')):
            text += f"""[shards.{name}]
socket = "{source.socket}"
user = "root"
method = "mariabackup"
datadir = "{source.datadir}"
{extra}
stores = ["local"]
replication_user = "repl"
replication_password_env = "BENCH_REPL_PW"
"""
        text += f"""[shards.remote]
socket = "{source.socket}"
user = "root"
method = "mariabackup"
datadir = "{source.datadir}"
stores = ["s3"]
replication_user = "repl"
replication_password_env = "BENCH_REPL_PW"
[shards.logical]
socket = "{source.socket}"
user = "root"
stores = ["local"]
"""
        if target is not None:
            start, stop = target.control_commands()
            for name, read_from in (("local", "local"), ("s3", "s3")):
                text += f"""[targets.{name}]
socket = "{target.socket}"
user = "root"
read_from = ["{read_from}"]
datadir = "{target.datadir}"
restore_dir = "{work / 'scratch'}"
start_command = {json.dumps(start)}
stop_command = {json.dumps(stop)}
"""
        config.write_text(text)

    def backupd(*args: str) -> tuple[Sample, dict]:
        sample, out = timed_rss([str(BIN / "backupd"), "-q", "--config", str(config), *args, "--json"])
        return sample, json.loads(out)

    def restore(*args: str) -> tuple[Sample, dict]:
        sample, out = timed_rss([str(BIN / "restore"), "-q", "--config", str(config), *args, "--json"])
        report = json.loads(out)
        assert report["verified"], report
        return sample, report

    try:
        write()
        option = work / "client.cnf"
        option.write_text(f"[client]\nuser=root\nsocket={source.socket}\n")
        option.chmod(0o600)
        xbstream = work / "hand.xbstream.zst"
        hand_backup = (f"mariabackup --defaults-file={option} --backup --stream=xbstream --datadir={source.datadir} "
                       f"--target-dir={work / 'hand-tmp'} 2>/dev/null | zstd -q -3 -T2 -f -o {xbstream}")
        backups: dict[str, list[dict]] = {"physical": [], "physical-counts": []}

        def physical(shard: str) -> Sample:
            sample, report = backupd("backup", "--shard", shard)
            backups[shard].append(report)
            return sample

        jobs: dict[str, Callable[[], Sample]] = {
            "mariabackup --stream=xbstream | zstd -3 -T2 > file": lambda: timed(hand_backup),
            "backupd physical backup (reference=digest)": lambda: physical("physical"),
            "backupd physical backup (reference=counts)": lambda: physical("physical-counts"),
        }
        results: dict[str, list[Sample]] = {name: [] for name in jobs}
        for r in range(rounds):
            for name, job in jobs.items():
                results[name].append(job())
            print(f"bench: physical backup round {r + 1}/{rounds} done", flush=True)
        full = backups["physical"][-1]
        print_table(f"Physical backup of the shard: {full['raw_bytes'] / 1024**3:.2f} GiB xbstream, "
                    f"{full['stored_bytes'] / 1024**2:.0f} MiB stored ({full['raw_bytes'] / full['stored_bytes']:.2f}x)",
                    list(results.items()), "mariabackup --stream=xbstream | zstd -3 -T2 > file",
                    "backupd also pins and computes the reference (row counts, and digests with "
                    "reference=digest) at the copy's exact binlog position.")
        backupd("backup", "--shard", "logical")
        backupd("backup", "--shard", "remote")

        # what a DBA verifies by hand: CHECKSUM TABLE of every table, compared with the source's
        tables = ", ".join(f"app.`{name}`" for (name,) in source.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'app' "
            "AND table_type = 'BASE TABLE' ORDER BY table_name"))
        checksums = work / "source-checksums.txt"
        checksums.write_text("".join(f"{t}\t{c}\n" for t, c in source.query(f"CHECKSUM TABLE {tables}")))

        def by_hand(target: MariaDBServer, verify: bool = False) -> Sample:
            start, stop = target.control_commands()
            scratch = work / "hand-restore"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            quoted = lambda argv: " ".join(shlex.quote(a) for a in argv)  # noqa: E731
            check = (f" && diff -q {checksums} <(mysql --no-defaults -uroot -S {target.socket} -N -e "
                     f"{shlex.quote(f'CHECKSUM TABLE {tables}')})") if verify else ""
            return timed(f"zstd -dc {xbstream} | mbstream -x -C {scratch} && "
                         f"mariabackup --no-defaults --prepare --target-dir={scratch} --use-memory=256M 2>/dev/null && "
                         f"{quoted(stop)} && rm -rf {target.datadir}/* && "
                         f"mariabackup --no-defaults --move-back --target-dir={scratch} --datadir={target.datadir} 2>/dev/null && "
                         f"{quoted(start)} && rm -rf {scratch}{check}")

        restores: dict[str, list[Sample]] = {name: [] for name in (
            "by hand: zstd -dc | mbstream -x, prepare, stop, move-back, start",
            "by hand, then CHECKSUM TABLE of every table compared with the source's",
            "restore (physical: fetch + extract + prepare + start + verify)",
            "restore (physical): the same steps as by hand, without the verification",
            "restore (logical: apply + verify)",
            "restore --replica-of from S3, until caught up")}
        phases: list[dict] = []
        rebuild: list[dict] = []
        n = 300
        verify_seconds: list[float] = []
        for r in range(rounds):
            for name in restores:
                if "without the verification" in name:
                    continue  # taken from the physical restore's own report
                n += 1
                target = fresh_target(n)
                try:
                    write(target)
                    if name.startswith("by hand"):
                        restores[name].append(by_hand(target, verify="CHECKSUM" in name))
                    elif "physical" in name:
                        sample, report = restore("--shard", "physical", "--target", "local", "--force")
                        phases.append(report["phases"])
                        verify_seconds.append(report["verify_seconds"])
                        restores[name].append(sample)
                        restores["restore (physical): the same steps as by hand, without the verification"].append(
                            Sample(sum(report["phases"].values())))
                    elif "logical" in name:
                        restores[name].append(restore("--shard", "logical", "--target", "local")[0])
                    else:
                        sample, report = restore("--shard", "remote", "--target", "s3", "--force",
                                                 "--replica-of", "physical")
                        rebuild.append(report["replica"])
                        restores[name].append(sample)
                finally:
                    target.destroy()
            print(f"bench: physical restore round {r + 1}/{rounds} done", flush=True)
        median_phases = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
        print_table("Restore of the shard into a fresh server (ratio = job / the by-hand physical steps)",
                    list(restores.items()), "by hand: zstd -dc | mbstream -x, prepare, stop, move-back, start",
                    "Physical restore phases (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in median_phases.items())
                    + f"; verification (every table's rows and digest, on the started server) "
                    f"{statistics.median(verify_seconds):.2f}"
                    + f"; replica catch-up median {statistics.median(r['catchup_seconds'] for r in rebuild):.2f} s "
                    "(the source is idle: the bench measures the rebuild, not a write load).")
    finally:
        moto.stop()
        source.stop()
