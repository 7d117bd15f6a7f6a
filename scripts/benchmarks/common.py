"""What the suites share: timing, the cached source shard, fresh targets and work folders, moto,
config snippets, the mysqldump baseline command line and the table printer."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from backupd.mysql.dump import client_version, common_args  # noqa: E402
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
    """A plain mysqldump of the shard with backupd's flags (one snapshot, one stream), for the
    plain-tool baselines."""
    option = work / "client.cnf"
    option.write_text(f"[client]\nuser=root\nsocket={source.socket}\n")
    option.chmod(0o600)
    flavour, version = client_version("mysqldump")
    args = common_args("mysqldump", str(option), flavour, version) + \
        ["--routines", "--triggers", "--events", "--databases", "app"]
    return " ".join(shlex.quote(a) for a in args)


def med(samples: list[Sample]) -> float:
    return statistics.median(s.seconds for s in samples)


def print_table(title: str, rows: list[tuple[str, list[Sample]]], baseline: str, note: str = "") -> None:
    base = med(dict(rows)[baseline])
    print(f"\n{title}  (median of {len(rows[0][1])} interleaved runs; ratio = job / `{baseline}`)")
    print("| job | median s | ratio | peak RSS |")
    print("|---|---:|---:|---:|")
    for name, samples in rows:
        rss = max(s.rss_kib for s in samples)
        cell = name.replace("|", "\\|")  # a shell pipe in a job's name must not split the Markdown row
        print(f"| {cell} | {med(samples):.2f} | {med(samples) / base:.2f}x | "
              f"{f'{rss / 1024:.0f} MiB' if rss else '-'} |")
    if note:
        print(note)



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
