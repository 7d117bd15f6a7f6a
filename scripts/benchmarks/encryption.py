"""scripts/bench encryption: what client-side encryption costs, backup and verified restore, next
to the same jobs unencrypted and to the plain tools (``mysqldump | zstd``, ``zstd -dc | mysql``)."""

from __future__ import annotations

import json
import shutil
import subprocess

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


def bench_encryption(rounds: int, gib: float) -> None:
    work = fresh_workdir("encryption")
    source = source_server(gib)
    key = work / "owner.key"
    generated = subprocess.run([str(BIN / "backupd"), "keys", "generate", "--out", str(key)], capture_output=True,
                               text=True, check=True).stdout
    public = next(line.split(": ", 1)[1] for line in generated.splitlines() if line.startswith("public key: "))
    plain, encrypted = work / "plain.toml", work / "encrypted.toml"
    zst = work / "dump.sql.zst"
    dump = dump_command(work, source)

    def configs(target=None) -> None:  # type: ignore[no-untyped-def]
        write_config(plain, source, target)
        write_config(encrypted, source, target)
        text = encrypted.read_text().replace(str(BENCH / "store"), str(work / "encrypted-store"))
        encrypted.write_text(text + f'[encryption]\nrecipients = ["{public}"]\nprivate_key_file = "{key}"\n')

    try:
        configs()
        backup_jobs = {
            "mysqldump | zstd -3 -T2 > file": lambda: timed(f"{dump} | zstd -q -3 -T2 -f -o {zst}"),
            "backupd backup": lambda: timed_rss([str(BIN / "backupd"), "-q", "--config", str(plain), "backup",
                                                 "--shard", "digest"])[0],
            "backupd backup, encrypted": lambda: timed_rss([str(BIN / "backupd"), "-q", "--config", str(encrypted),
                                                            "backup", "--shard", "digest"])[0],
        }
        results: dict[str, list[Sample]] = {name: [] for name in backup_jobs}
        for r in range(rounds):
            for name, job in backup_jobs.items():
                if "backupd" in name:  # one backup per store, each round: the restores below read the last
                    shutil.rmtree(work / "encrypted-store" if "encrypted" in name else BENCH / "store",
                                  ignore_errors=True)
                results[name].append(job())
            print(f"bench: backup round {r + 1}/{rounds} done", flush=True)
        print_table("Backup of one shard, plain and encrypted", list(results.items()), "backupd backup",
                    "encrypted: every part sealed with XChaCha20-Poly1305 (libsodium secretstream, 1 MiB chunks) "
                    "as it is cut, the data key wrapped for one X25519 recipient.")

        restores: dict[str, list[Sample]] = {"zstd -dc | mysql": [], "restore (apply + verify)": [],
                                             "restore, encrypted (decrypt + apply + verify)": []}
        n = 0
        for r in range(rounds):
            for name in restores:
                n += 1
                target = fresh_target(n)
                try:
                    configs(target)
                    if name == "zstd -dc | mysql":
                        restores[name].append(timed(f"zstd -dc {zst} | mysql -S {target.socket} -uroot"))
                        continue
                    config = encrypted if "encrypted" in name else plain
                    sample, out = timed_rss([str(BIN / "restore"), "-q", "--config", str(config), "--shard", "digest",
                                             "--target", "bench", "--json"])
                    assert json.loads(out)["verified"], out
                    restores[name].append(sample)
                finally:
                    target.destroy()
            print(f"bench: restore round {r + 1}/{rounds} done", flush=True)
        print_table("Verified restore of the same shard into a fresh server", list(restores.items()),
                    "restore (apply + verify)")
    finally:
        source.stop()
