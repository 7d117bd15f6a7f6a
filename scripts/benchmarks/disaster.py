"""scripts/bench disaster: what a dead cloud costs, and a fleet restore in parallel.

A small shard (``--gib``, default 0.02) is backed up to a local store and to moto's S3 behind a
loopback proxy (``tests/servers/faulty_proxy.py``); the S3 store ("cloud") comes first
everywhere: the shard's stores, the lock, the target's ``read_from``. Then, with backupd's
default timeouts, restores and backups run with the cloud healthy, refusing connections, hanging
(accepting, never answering) and stalling mid-download, next to the same job with the cloud
healthy. Finally a fleet of 4 shards is restored into 4 servers with ``--parallel-shards 1``
and ``2``. Targets: every dead-store row within 20 s of healthy; ``--parallel-shards 2`` at most
0.65x of ``1``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable

from tests.servers.faulty_proxy import FaultyProxy

from .common import BIN, Sample, fresh_target, fresh_workdir, med, source_server, started_moto, timed_rss

MODES = ("pass", "refuse", "hang", "stall")
NAMES = {"pass": "healthy", "refuse": "refuses connections", "hang": "hangs (accepts, never answers)",
         "stall": "stalls mid-download"}
FLEET = 4


def _config(work_store: str, proxy: FaultyProxy, source_socket: str, targets: list[str], *, read_from: list[str]) -> str:
    text = f"""[backupd]
part_size = "4MiB"
[stores.cloud]
type = "s3"
bucket = "backupd"
endpoint_url = "{proxy.url}"
addressing_style = "path"
access_key_env = "BENCH_S3_KEY"
secret_key_env = "BENCH_S3_SECRET"
[stores.local]
type = "local"
path = "{work_store}"
"""
    for n in range(1, FLEET + 1):
        text += f'[shards.{n}]\nsocket = "{source_socket}"\nuser = "root"\nreference = "counts"\n'
    text += f'[targets.dr]\nuser = "root"\nread_from = {json.dumps(read_from)}\n'
    for n, socket in enumerate(targets, start=1):
        text += f'[targets.dr.shards.{n}]\nsocket = "{socket}"\n'
    return text


def _print(title: str, rows: list[tuple[str, list[Sample]]], baseline: str, note: str) -> None:
    base = med(dict(rows)[baseline])
    print(f"\n{title}  (median of {len(rows[0][1])} interleaved runs; ratio and extra seconds against `{baseline}`)")
    print("| job | median s | ratio | extra s |")
    print("|---|---:|---:|---:|")
    for name, samples in rows:
        print(f"| {name} | {med(samples):.2f} | {med(samples) / base:.2f}x | {med(samples) - base:+.1f} |")
    print(note)


def bench_disaster(rounds: int, gib: float) -> None:
    work = fresh_workdir("disaster")
    source = source_server(gib)
    moto = started_moto(work)
    targets = [fresh_target(200 + n) for n in range(1, FLEET + 1)]
    proxy = FaultyProxy(moto.port)
    store = str(work / "store")
    config, local_only = work / "backupd.toml", work / "local-only.toml"
    sockets = [str(t.socket) for t in targets]
    config.write_text(_config(store, proxy, str(source.socket), sockets, read_from=["cloud", "local"]))
    local_only.write_text(_config(store, proxy, str(source.socket), sockets, read_from=["local"]))

    def backupd(*args: str, cfg: str = str(config)) -> Sample:
        return timed_rss([str(BIN / "backupd"), "-q", "--config", cfg, *args])[0]

    def restore(*args: str, cfg: str = str(config)) -> Sample:
        sample, out = timed_rss([str(BIN / "restore"), "-q", "--config", cfg, "--target", "dr", "--force",
                                 "--json", *args])
        report = json.loads(out)
        assert report.get("verified", report.get("ok")), report
        return sample

    def with_mode(mode: str, job: Callable[[], Sample]) -> Sample:
        proxy.mode = mode
        try:
            return job()
        finally:
            proxy.mode = "pass"

    try:
        healthy = {}  # each shard's first backup, taken with the cloud healthy: in both stores
        for n in range(1, FLEET + 1):
            out = timed_rss([str(BIN / "backupd"), "-q", "--config", str(config), "backup", "--shard", str(n),
                             "--json"])[1]
            healthy[n] = json.loads(out)["id"]
        first = ("--shard", "1", "--backup", healthy[1])  # dead-store backups below commit to local only
        restores: dict[str, list[Sample]] = {"restore, read_from = [local] only": []}
        restores.update({f"restore, cloud {NAMES[m]}": [] for m in MODES})
        backups: dict[str, list[Sample]] = {f"backup, cloud {NAMES[m]}": [] for m in MODES}
        for r in range(rounds):
            restores["restore, read_from = [local] only"].append(restore(*first, cfg=str(local_only)))
            for mode in MODES:
                restores[f"restore, cloud {NAMES[mode]}"].append(with_mode(mode, lambda: restore(*first)))
                backups[f"backup, cloud {NAMES[mode]}"].append(with_mode(mode, lambda: backupd("backup", "--shard", "1")))
            print(f"bench: dead-store round {r + 1}/{rounds} done", flush=True)
        _print("Restore of one shard with its preferred store dead", list(restores.items()),
               "restore, cloud healthy",
               "Target: every dead-store row within 20 s of healthy. Hanging costs the answer timeout (5 s) "
               "once; stalling costs the read timeout (15 s) once, then the part comes from the other store.")
        _print("Backup of one shard to two stores, one of them dead (commits DEGRADED)", list(backups.items()),
               "backup, cloud healthy", "Target: every dead-store row within 20 s of healthy.")

        fleet: dict[str, list[Sample]] = {"fleet restore, --parallel-shards 1": [],
                                          "fleet restore, --parallel-shards 2": []}
        for r in range(rounds):
            for parallel in ("1", "2"):
                fleet[f"fleet restore, --parallel-shards {parallel}"].append(
                    restore("--all-shards", "--parallel-shards", parallel, cfg=str(local_only)))
            print(f"bench: fleet round {r + 1}/{rounds} done", flush=True)
        _print(f"Fleet restore of {FLEET} shards into {FLEET} servers", list(fleet.items()),
               "fleet restore, --parallel-shards 1", "Target: --parallel-shards 2 at most 0.65x of 1.")
    finally:
        proxy.close()
        moto.stop()
        for target in targets:
            target.destroy()
        source.stop()
        shutil.rmtree(work / "store", ignore_errors=True)
        os.environ.pop("BENCH_S3_KEY", None)
