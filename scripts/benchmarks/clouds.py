"""scripts/bench clouds: backup to and restore from a local store, S3 (moto) and Swift."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from tests.testbed import MariaDBServer

from .common import (
    BIN,
    Sample,
    aws_cli,
    dump_command,
    fresh_target,
    fresh_workdir,
    local_and_s3_stores,
    print_table,
    s3_buckets,
    source_server,
    started_moto,
    timed,
    timed_rss,
)


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
