"""scripts/bench sync: backupd sync to S3 next to aws s3 cp --recursive and aws s3 sync."""

from __future__ import annotations

import json
from collections.abc import Callable

from .common import (
    BIN,
    Sample,
    aws_cli,
    bench_shard,
    fresh_workdir,
    local_and_s3_stores,
    print_table,
    s3_buckets,
    source_server,
    started_moto,
    timed,
    timed_rss,
)


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
