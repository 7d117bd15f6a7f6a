"""scripts/bench: backupd against the plain tools it competes with, on one ~1 GiB shard.

Every job runs ``--rounds`` times, interleaved (job A, B, C, A, B, C, ...), so machine noise
hits all of them alike; the table shows medians and ratios to the baseline of each section.
Never read the absolute seconds across machines: only the ratios mean something.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backupd.mysql.dump import client_version, mysqldump_args  # noqa: E402
from tests.servers.moto import MotoServer  # noqa: E402
from tests.testbed import MariaDBServer, find_free_port, seed_bulk  # noqa: E402

BENCH = REPO / ".bench"
CACHE = REPO / ".testbed" / "cache"
BIN = Path(sys.executable).parent


@dataclass
class Sample:
    seconds: float
    rss_kib: int = 0


def timed(command: str) -> Sample:
    """Run a shell pipeline (bash, pipefail); its wall seconds."""
    started = time.monotonic()
    proc = subprocess.run(["/bin/bash", "-o", "pipefail", "-c", command], capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: command failed ({proc.returncode}): {command}\n{proc.stderr.decode()[-2000:]}")
    return Sample(time.monotonic() - started)


def timed_rss(argv: list[str]) -> tuple[Sample, str]:
    """Run one program; its wall seconds, peak RSS (wait4's ru_maxrss) and stdout."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()  # type: ignore[union-attr]
    err = proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench: command failed ({proc.returncode}): {argv}\n{err.decode()[-2000:]}")
    return Sample(seconds, usage.ru_maxrss), out.decode()


def source_server(gib: float) -> MariaDBServer:
    """The cached benchmark shard (generated once), started."""
    root = BENCH / f"shard-{gib:g}g"
    ready = root / "READY"
    if not ready.exists():
        shutil.rmtree(root, ignore_errors=True)
        print(f"bench: generating a {gib:g} GiB shard once (cached in {root}) ...", flush=True)
        server = MariaDBServer.create(root, "bench-source", 1, CACHE)
        server.start()
        stats = seed_bulk(server, 0, 1, target_bytes=int(gib * 1024**3), tables_limit=64)
        server.execute("CREATE TABLE app.gtid_marker (id INT PRIMARY KEY)")  # binlogged: a GTID exists
        server.stop()
        ready.write_text(json.dumps({"rows": stats.rows, "payload_bytes": stats.payload_bytes}))
        print(f"bench: generated {stats.rows} rows, {stats.payload_bytes / 1024**2:.0f} MiB of JSON "
              f"in {stats.seconds:.0f}s", flush=True)
    server = MariaDBServer(name="bench-source", root=root.absolute(), port=find_free_port(), server_id=1)
    server.start()
    return server


def fresh_workdir(name: str) -> Path:
    """``.bench/NAME``, empty."""
    work = BENCH / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def s3_buckets(endpoint_url: str, *names: str) -> None:
    """Create ``names`` on the moto server at ``endpoint_url``."""
    import boto3
    s3 = boto3.client("s3", endpoint_url=endpoint_url, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    for name in names:
        s3.create_bucket(Bucket=name)


def started_moto(work: Path) -> MotoServer:
    """moto's S3 under ``work``, started, with the bucket "backupd"; the keys the configs name
    (BENCH_S3_KEY / BENCH_S3_SECRET) are set in the environment."""
    moto = MotoServer(work / "moto")
    moto.start()
    os.environ.update({"BENCH_S3_KEY": "testing", "BENCH_S3_SECRET": "testing"})
    s3_buckets(moto.endpoint_url, "backupd")
    return moto


def bench_shard(source: MariaDBServer, stores: list[str]) -> str:
    """``[shards.bench]`` on ``source`` (row counts as reference), backed up to ``stores``."""
    return f"""[shards.bench]
socket = "{source.socket}"
user = "root"
reference = "counts"
stores = {json.dumps(stores)}
"""


def fresh_target(n: int) -> MariaDBServer:
    root = BENCH / "targets" / f"t{n}"
    shutil.rmtree(root, ignore_errors=True)
    server = MariaDBServer.create(root, f"bench-target-{n}", 100 + n, CACHE)
    server.start()
    return server


def write_config(path: Path, source: MariaDBServer, target: MariaDBServer | None) -> None:
    store = BENCH / "store"
    text = f"""[backupd]
part_size = "64MiB"
compression_level = 3
compression_threads = 2
[stores.local]
type = "local"
path = "{store}"
[shards.digest]
socket = "{source.socket}"
user = "root"
reference = "digest"
[shards.counts]
socket = "{source.socket}"
user = "root"
reference = "counts"
"""
    if target:
        text += f"""[targets.bench]
socket = "{target.socket}"
user = "root"
read_from = ["local"]
"""
    path.write_text(text)


def dump_command(work: Path, source: MariaDBServer) -> str:
    """The same mysqldump command line backupd runs, for the plain-tool baselines."""
    option = work / "client.cnf"
    option.write_text(f"[client]\nuser=root\nsocket={source.socket}\n")
    option.chmod(0o600)
    flavour, version = client_version("mysqldump")
    return " ".join(shlex.quote(a) for a in mysqldump_args("mysqldump", str(option), flavour, version, ["app"]))


def med(samples: list[Sample]) -> float:
    return statistics.median(s.seconds for s in samples)


def print_table(title: str, rows: list[tuple[str, list[Sample]]], baseline: str, note: str = "") -> None:
    base = med(dict(rows)[baseline])
    print(f"\n{title}  (median of {len(rows[0][1])} interleaved runs; ratio = job / `{baseline}`)")
    print("| job | median s | ratio | peak RSS |")
    print("|---|---:|---:|---:|")
    for name, samples in rows:
        rss = max(s.rss_kib for s in samples)
        print(f"| {name} | {med(samples):.2f} | {med(samples) / base:.2f}x | "
              f"{f'{rss / 1024:.0f} MiB' if rss else '-'} |")
    if note:
        print(note)


def bench_backup_restore(rounds: int, gib: float) -> None:
    work = fresh_workdir("work")
    source = source_server(gib)
    config = work / "backupd.toml"
    try:
        write_config(config, source, None)
        dump = dump_command(work, source)
        zst = work / "dump.sql.zst"
        backup_jobs: dict[str, Callable[[], Sample]] = {
            "mysqldump > /dev/null": lambda: timed(f"{dump} > /dev/null"),
            "mysqldump | zstd -3 -T2 > file": lambda: timed(f"{dump} | zstd -q -3 -T2 -f -o {zst}"),
            "backupd backup (reference=digest)": lambda: timed_rss([str(BIN / "backupd"), "-q", "--config", str(config), "backup", "--shard", "digest"])[0],
            "backupd backup (reference=counts)": lambda: timed_rss([str(BIN / "backupd"), "-q", "--config", str(config), "backup", "--shard", "counts"])[0],
            "mydumper -t 2 (no compression)": lambda: timed(f"rm -rf {work}/mydumper && mydumper -S {source.socket} -u root -B app -t 2 -o {work}/mydumper"),
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
                                                    "restore: load only (most verification overlapped)": []}
        n = 0
        for r in range(rounds):
            for name in ("zstd -dc | mysql", "myloader -t 2", "restore (apply + verify digests)"):
                n += 1
                target = fresh_target(n)
                try:
                    if name == "zstd -dc | mysql":
                        restore_results[name].append(timed(f"zstd -dc {zst} | mysql -S {target.socket} -uroot"))
                    elif name == "myloader -t 2":
                        restore_results[name].append(timed(f"myloader -S {target.socket} -u root -t 2 -d {work}/mydumper"))
                    else:
                        write_config(config, source, target)
                        sample, out = timed_rss([str(BIN / "restore"), "-q", "--config", str(config), "--shard", "digest",
                                                 "--target", "bench", "--json"])
                        report = json.loads(out)
                        assert report["verified"], report
                        restore_results[name].append(sample)
                        restore_results["restore: load only (most verification overlapped)"].append(Sample(report["apply_seconds"]))
                finally:
                    target.destroy()
            print(f"bench: restore round {r + 1}/{rounds} done", flush=True)
        print_table("Restore of the same shard into a fresh server", list(restore_results.items()), "zstd -dc | mysql",
                    "`restore` applies with sql_log_bin=0 (no binlog on the target), `zstd -dc | mysql` with the "
                    "server's default (binlog on); verification computes the digest of every restored table.")
    finally:
        source.stop()


AWS_VENV = REPO / ".testbed" / "awscli-venv"


def aws_cli() -> Path:
    """The AWS CLI, in its own venv (its botocore pin must not touch the project's)."""
    binary = AWS_VENV / "bin" / "aws"
    if not binary.exists():
        print("bench: installing the AWS CLI into .testbed/awscli-venv ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(AWS_VENV)], check=True)
        subprocess.run([str(AWS_VENV / "bin" / "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", "awscli"], check=True)
    return binary


def local_and_s3_stores(path: Path, moto_url: str) -> str:
    """``[backupd]`` with 64 MiB parts, a local store at ``path`` and an S3 store on moto (the
    bucket "backupd", keys in BENCH_S3_KEY / BENCH_S3_SECRET)."""
    return f"""[backupd]
part_size = "64MiB"
[stores.local]
type = "local"
path = "{path}"
[stores.s3]
type = "s3"
bucket = "backupd"
endpoint_url = "{moto_url}"
addressing_style = "path"
access_key_env = "BENCH_S3_KEY"
secret_key_env = "BENCH_S3_SECRET"
"""


def bench_clouds(rounds: int, gib: float) -> None:
    """Backup to local, S3 (moto), Swift (libcloud) and both clouds; the hand pipeline to S3;
    restore from each store."""
    from tests.servers.swift import SwiftServer

    work = fresh_workdir("clouds")
    aws = aws_cli()
    source = source_server(gib)
    moto = started_moto(work)
    swift = SwiftServer(work / "swift")
    swift.start()
    try:
        swift.create_container("backupd")
        s3_buckets(moto.endpoint_url, "hand")
        os.environ["BENCH_SWIFT_KEY"] = swift.key  # the S3 keys: started_moto()
        config = work / "backupd.toml"
        shards = "".join(f"""[shards.{name}]
socket = "{source.socket}"
user = "root"
stores = {json.dumps(stores)}
""" for name, stores in [("local", ["local"]), ("s3", ["s3"]), ("swift", ["swift"]),
                         ("both", ["s3", "swift"])])

        def write(target: MariaDBServer | None) -> None:
            text = local_and_s3_stores(work / "store", moto.endpoint_url) + f"""[stores.swift]
type = "swift"
auth_url = "{swift.auth_url}"
user = "{swift.user}"
key_env = "BENCH_SWIFT_KEY"
container = "backupd"
{shards}"""
            if target:
                for name in ("local", "s3", "swift"):
                    text += f"""[targets.from-{name}]
socket = "{target.socket}"
user = "root"
read_from = ["{name}"]
"""
            config.write_text(text)

        write(None)
        dump = dump_command(work, source)
        backupd = [str(BIN / "backupd"), "-q", "--config", str(config), "backup", "--shard"]
        jobs: dict[str, Callable[[], Sample]] = {
            "mysqldump | zstd -3 -T2 | aws s3 cp - s3://": lambda: timed(
                f"{dump} | zstd -q -3 -T2 | AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "
                f"AWS_DEFAULT_REGION=us-east-1 {aws} --endpoint-url {moto.endpoint_url} s3 cp - s3://hand/dump.sql.zst"),
            "backupd -> local store": lambda: timed_rss(backupd + ["local"])[0],
            "backupd -> S3 (moto)": lambda: timed_rss(backupd + ["s3"])[0],
            "backupd -> Swift (libcloud)": lambda: timed_rss(backupd + ["swift"])[0],
            "backupd -> S3 + Swift at once": lambda: timed_rss(backupd + ["both"])[0],
        }
        results: dict[str, list[Sample]] = {name: [] for name in jobs}
        for r in range(rounds):
            for name, job in jobs.items():
                results[name].append(job())
            print(f"bench: cloud backup round {r + 1}/{rounds} done", flush=True)
        print_table("Backup of the shard to each store (ratio = job / the hand pipeline to one cloud)",
                    list(results.items()), "mysqldump | zstd -3 -T2 | aws s3 cp - s3://")

        restores: dict[str, list[Sample]] = {f"restore from {n}": [] for n in ("local", "s3", "swift")}
        n = 100
        for r in range(rounds):
            for name in ("local", "s3", "swift"):
                n += 1
                target = fresh_target(n)
                try:
                    write(target)
                    sample, out = timed_rss([str(BIN / "restore"), "-q", "--config", str(config),
                                             "--shard", "both" if name != "local" else "local",
                                             "--target", f"from-{name}", "--json"])
                    assert json.loads(out)["verified"]
                    restores[f"restore from {name}"].append(sample)
                finally:
                    target.destroy()
            print(f"bench: cloud restore round {r + 1}/{rounds} done", flush=True)
        print_table("Restore of the shard from each store (apply + verify)", list(restores.items()),
                    "restore from local")
    finally:
        swift.stop()
        moto.stop()
        source.stop()


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


def bench_audit(rounds: int, gib: float) -> None:
    """Deep audit (every part read back, sha256 checked, zstd frame decoded) next to the same
    checks by hand with the plain tools, from a local store and from S3 (moto); the quick audit
    (listings only) for scale."""
    work = fresh_workdir("audit")
    aws = aws_cli()
    source = source_server(gib)
    moto = started_moto(work)
    store = work / "store"
    config = work / "backupd.toml"
    config.write_text(local_and_s3_stores(store, moto.endpoint_url) + bench_shard(source, ["local", "s3"]))
    try:
        _, out = timed_rss([str(BIN / "backupd"), "-q", "--config", str(config), "backup", "--shard", "bench",
                            "--json"])
        backup = json.loads(out)
        parts = sorted(str(p) for p in (store / "bench" / backup["id"]).glob("part-*.zst"))
        hashes = work / "sha256sums"
        hashes.write_text("".join(f"{hashlib.sha256(Path(p).read_bytes()).hexdigest()}  {p}\n" for p in parts))
        copy = work / "s3-copy"
        aws_env = ("AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 "
                   f"{aws} --endpoint-url {moto.endpoint_url} --only-show-errors")
        s3_check = (f"rm -rf {copy} && {aws_env} s3 cp --recursive s3://backupd/bench/{backup['id']}/ {copy} "
                    f"--exclude '*' --include 'part-*' && cd {copy} && "
                    f"sed 's#  .*/#  #' {hashes} | sha256sum -c --quiet && zstd -tq part-*.zst && rm -rf {copy}")
        audit = [str(BIN / "backupd"), "-q", "--config", str(config), "audit", "--shard", "bench", "--json"]

        def backupd_audit(*args: str) -> Sample:
            sample, out = timed_rss(audit + list(args))
            assert json.loads(out)["ok"], out
            return sample

        jobs: dict[str, Callable[[], Sample]] = {
            "sha256sum -c && zstd -t (local parts)": lambda: timed(
                f"sha256sum -c --quiet {hashes} && zstd -tq {' '.join(parts)}"),
            "backupd audit --level deep --store local": lambda: backupd_audit("--level", "deep", "--store", "local"),
            "aws s3 cp --recursive, sha256sum -c, zstd -t (S3)": lambda: timed(s3_check),
            "backupd audit --level deep --store s3": lambda: backupd_audit("--level", "deep", "--store", "s3"),
            "backupd audit --level quick (both stores)": lambda: backupd_audit("--level", "quick"),
        }
        results: dict[str, list[Sample]] = {name: [] for name in jobs}
        for r in range(rounds):
            for name, job in jobs.items():
                results[name].append(job())
            print(f"bench: audit round {r + 1}/{rounds} done", flush=True)
        print_table(f"Deep audit of one full ({len(parts)} parts, {backup['stored_bytes'] / 1024**2:.0f} MiB stored)",
                    list(results.items()), "sha256sum -c && zstd -t (local parts)",
                    "The by-hand S3 check needs a full-size local copy; backupd holds two parts at most.")
    finally:
        moto.stop()
        source.stop()


def bench_sync(rounds: int, gib: float) -> None:
    """``backupd sync`` (a backup held by the local store only, copied to S3 with every part's
    sha256 verified on the way, manifest last) next to ``aws s3 cp --recursive`` of the same
    files (no verification) and ``aws s3 sync``; S3 is emptied before every job."""
    work = fresh_workdir("sync")
    aws = aws_cli()
    source = source_server(gib)
    moto = started_moto(work)
    store = work / "store"
    local_only, both = work / "local-only.toml", work / "both.toml"
    for config, stores in ((local_only, ["local"]), (both, ["local", "s3"])):
        config.write_text(local_and_s3_stores(store, moto.endpoint_url) + bench_shard(source, stores))
    try:
        s3_buckets(moto.endpoint_url, "hand")
        import boto3
        s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")

        def empty_s3() -> None:
            for bucket in ("backupd", "hand"):
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                    for obj in page.get("Contents", []):
                        s3.delete_object(Bucket=bucket, Key=obj["Key"])

        _, out = timed_rss([str(BIN / "backupd"), "-q", "--config", str(local_only), "backup", "--shard", "bench",
                            "--json"])
        backup = json.loads(out)
        folder = store / "bench" / backup["id"]
        aws_env = ("AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 "
                   f"{aws} --endpoint-url {moto.endpoint_url} --only-show-errors")
        sync = [str(BIN / "backupd"), "-q", "--config", str(both), "sync", "--shard", "bench"]

        def backupd_sync() -> Sample:
            sample, out = timed_rss(sync)
            assert "1 manifests copied" in out, out
            return sample

        jobs: dict[str, Callable[[], Sample]] = {
            "aws s3 cp --recursive (no verification)": lambda: timed(
                f"{aws_env} s3 cp --recursive {folder} s3://hand/bench/{backup['id']}/"),
            "aws s3 sync (no verification)": lambda: timed(f"{aws_env} s3 sync {folder} s3://hand/bench/{backup['id']}/"),
            "backupd sync local -> S3 (sha256 verified, manifest last)": backupd_sync,
        }
        results: dict[str, list[Sample]] = {name: [] for name in jobs}
        for r in range(rounds):
            for name, job in jobs.items():
                empty_s3()
                results[name].append(job())
            print(f"bench: sync round {r + 1}/{rounds} done", flush=True)
        print_table(f"Copy of one full to another store ({backup['stored_bytes'] / 1024**2:.0f} MiB stored)",
                    list(results.items()), "aws s3 cp --recursive (no verification)")
    finally:
        moto.stop()
        source.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suite", choices=["audit", "backup-restore", "clouds", "incremental", "physical", "sync"])
    parser.add_argument("--percent", type=float, default=5.0, help="incremental: rows updated, in percent")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gib", type=float, default=1.0, help="size of the generated shard")
    args = parser.parse_args()
    if args.suite == "clouds":
        bench_clouds(args.rounds, args.gib)
    elif args.suite == "incremental":
        bench_incremental(args.rounds, args.gib, args.percent)
    elif args.suite == "physical":
        bench_physical(args.rounds, args.gib)
    elif args.suite == "audit":
        bench_audit(args.rounds, args.gib)
    elif args.suite == "sync":
        bench_sync(args.rounds, args.gib)
    else:
        bench_backup_restore(args.rounds, args.gib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
