"""Driver of scripts/demo: run the main job on the embedded default and summarise it."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
CONFIG = REPO / "config" / "backupd.toml"
BIN = Path(sys.executable).parent
SHARDS = ["1", "2", "3", "4"]


def sh(*args: str, capture: bool = True) -> str:
    proc = subprocess.run(list(args), cwd=REPO, text=True,
                          stdout=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        sys.exit(f"demo: {' '.join(args[:3])} ... failed with exit code {proc.returncode}")
    return proc.stdout or ""


def mib(n: float) -> str:
    return f"{n / 1024**2:.1f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the servers running")
    parser.add_argument("--mib-per-shard", default="4")
    args = parser.parse_args()

    print("demo: starting 4 MariaDB shards and an empty local-dr instance under .demo/ ...", flush=True)
    sh(sys.executable, "-m", "tests.testbed", "start", "--root", str(DEMO), "--shards", "4",
       "--targets", "local-dr", "--mib-per-shard", args.mib_per_shard, capture=False)
    for name in [f"shard{s}" for s in SHARDS] + ["local-dr"]:
        if not (DEMO / name / "mysqld.sock").exists():
            sys.exit(f"demo: {DEMO / name / 'mysqld.sock'} missing (is the repository path too "
                     "long for a unix socket?)")
    shutil.rmtree(DEMO / "store", ignore_errors=True)
    try:
        backups = {}
        started = time.monotonic()
        for shard in SHARDS:
            t0 = time.monotonic()
            backup_id = sh(str(BIN / "backupd"), "--config", str(CONFIG), "backup", "--shard", shard).strip()
            backups[shard] = (backup_id, time.monotonic() - t0)
        backup_wall = time.monotonic() - started
        listing = {e["id"]: e for e in json.loads(sh(str(BIN / "backupd"), "--config", str(CONFIG), "list", "--json"))}
        restore = json.loads(sh(str(BIN / "restore"), "--config", str(CONFIG), "--shard", "2",
                                "--target", "local-dr", "--json"))
    finally:
        if not args.keep:
            sh(sys.executable, "-m", "tests.testbed", "stop", "--root", str(DEMO))

    print("\nbackups taken (store: .demo/store)")
    print(f"  {'shard':<6} {'backup id':<30} {'raw':>10} {'stored':>10} {'ratio':>6} {'parts':>5} {'time':>7}")
    raw = stored = 0
    for shard, (backup_id, seconds) in backups.items():
        e = listing[backup_id]
        raw, stored = raw + e["raw_bytes"], stored + e["stored_bytes"]
        print(f"  {shard:<6} {backup_id:<30} {mib(e['raw_bytes']):>10} {mib(e['stored_bytes']):>10} "
              f"{e['raw_bytes'] / e['stored_bytes']:>5.2f}x {e['parts']:>5} {seconds:>6.1f}s")
    print(f"  {'all':<6} {'':<30} {mib(raw):>10} {mib(stored):>10} {raw / stored:>5.2f}x {'':>5} {backup_wall:>6.1f}s")
    print(f"\nrestore of shard 2 into local-dr: backup {restore['backup']}, {restore['tables']} tables, "
          f"{restore['rows']} rows")
    print(f"  apply {restore['apply_seconds']:.2f}s, verify {restore['verify_seconds']:.2f}s "
          f"({mib(restore['raw_bytes'] / max(restore['apply_seconds'], 1e-9))}/s)")
    verdict = "VERIFIED: every table's row count and content digest equal the backup's" \
        if restore["verified"] else "NOT VERIFIED: " + "; ".join(restore["failures"])
    print(f"  {verdict} ({restore['verification_mode']})")
    if args.keep:
        print("\nservers left running; stop them with: scripts/testbed stop --root .demo")
    return 0 if restore["verified"] else 3


if __name__ == "__main__":
    sys.exit(main())
