"""scripts/bench audit: backupd audit next to sha256sum -c and zstd -t, locally and on S3, and
the quick audit's provider-checksum check (a HEAD per part copy, no download) next to the deep
audit of the same store (target: <= 1/20 of its time, no byte of data read)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from .common import (
    BIN,
    Sample,
    aws_cli,
    bench_shard,
    fresh_workdir,
    local_and_s3_stores,
    print_table,
    source_server,
    started_moto,
    timed,
    timed_rss,
)


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

        heads: list[int] = []
        own: dict[str, list[float]] = {}  # the audit's own seconds (its report), interpreter start excluded

        def backupd_audit(*args: str) -> Sample:
            sample, out = timed_rss(audit + list(args))
            report = json.loads(out)
            assert report["ok"], out
            own.setdefault(" ".join(args), []).append(float(report["seconds"]))
            if "quick" in args:
                assert report["bytes_read"] == 0, out  # the provider check downloads nothing
                if "--heads" in args:
                    heads.append(report["heads"])
            return sample

        jobs: dict[str, Callable[[], Sample]] = {
            "sha256sum -c && zstd -t (local parts)": lambda: timed(
                f"sha256sum -c --quiet {hashes} && zstd -tq {' '.join(parts)}"),
            "backupd audit --level deep --store local": lambda: backupd_audit("--level", "deep", "--store", "local"),
            "aws s3 cp --recursive, sha256sum -c, zstd -t (S3)": lambda: timed(s3_check),
            "backupd audit --level deep --store s3": lambda: backupd_audit("--level", "deep", "--store", "s3"),
            "backupd audit --level quick (both stores)": lambda: backupd_audit("--level", "quick"),
            "backupd audit --level quick --store s3 (listed MD5s)": lambda: backupd_audit(
                "--level", "quick", "--store", "s3"),
            "backupd audit --level quick --heads --store s3 (a HEAD per copy)": lambda: backupd_audit(
                "--level", "quick", "--heads", "--store", "s3"),
        }
        results: dict[str, list[Sample]] = {name: [] for name in jobs}
        for r in range(rounds):
            for name, job in jobs.items():
                results[name].append(job())
            print(f"bench: audit round {r + 1}/{rounds} done", flush=True)
        print_table(f"Deep audit of one full ({len(parts)} parts, {backup['stored_bytes'] / 1024**2:.0f} MiB stored)",
                    list(results.items()), "sha256sum -c && zstd -t (local parts)",
                    "The by-hand S3 check needs a full-size local copy; backupd holds two parts at most.")
        quick = sorted(s.seconds for s in results["backupd audit --level quick --heads --store s3 (a HEAD per copy)"])
        deep = sorted(s.seconds for s in results["backupd audit --level deep --store s3"])
        wall = quick[len(quick) // 2] / deep[len(deep) // 2]
        quick_own = sorted(own["--level quick --heads --store s3"])
        deep_own = sorted(own["--level deep --store s3"])
        ratio = quick_own[len(quick_own) // 2] / deep_own[len(deep_own) // 2]
        listed_own = sorted(own["--level quick --store s3"])
        listed = listed_own[len(listed_own) // 2] / deep_own[len(deep_own) // 2]
        print(f"Provider checksums of every S3 copy from the listing (the quick audit's default, 0 requests per copy, "
              f"0 bytes read): {listed:.3f} of the deep audit's time as the audits report it "
              f"({listed_own[len(listed_own) // 2]:.2f} s; target <= 0.05: {'met' if listed <= 0.05 else 'NOT met'}).")
        print(f"Provider checksums of every S3 copy ({max(heads)} HEADs, 0 bytes read), against the deep audit of "
              f"the same store: {ratio:.3f} of its time as the audits report it ({quick_own[len(quick_own) // 2]:.2f} s "
              f"vs {deep_own[len(deep_own) // 2]:.2f} s; target <= 0.05: {'met' if ratio <= 0.05 else 'NOT met'}); "
              f"{wall:.2f} of its wall time, which includes starting the interpreter and importing boto3 (~1 s).")
    finally:
        moto.stop()
        source.stop()
