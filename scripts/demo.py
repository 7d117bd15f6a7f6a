"""Driver of scripts/demo: run the main job on the embedded default and summarise it.

Four local shards: the scheduled job takes a full of each (``backupd run --once``; shard 4's is
physical, with mariabackup), the application writes to shards 2 and 4, hourly incrementals
follow, shard 2 is rebuilt in the local-dr instance from its full and incremental, verified
against the incremental's snapshot, and shard 4's lost replica is rebuilt in one command
(physical restore, verified, attached as a replica of shard 4 and caught up)."""

from __future__ import annotations

import argparse
import json
import os
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
REPL_PASSWORD_ENV = "BACKUPD_DEMO_REPL_PASSWORD"  # shards.4.replication_password_env


def sh(*args: str, capture: bool = True, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(list(args), cwd=REPO, text=True, env={**os.environ, **(env or {})},
                          stdout=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        sys.exit(f"demo: {' '.join(args[:3])} ... failed with exit code {proc.returncode}")
    return proc.stdout or ""


def mib(n: float) -> str:
    return f"{n / 1024**2:.1f} MiB"


def write_some_changes(socket: Path) -> str:
    """Update, insert and delete rows in a shard's bucket tables, as its application would."""
    import pymysql

    conn = pymysql.connect(unix_socket=str(socket), user="root", database="app", autocommit=True)
    counts = {"updated": 0, "inserted": 0, "deleted": 0}
    with conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        for (table,) in cur.fetchall()[:32]:
            counts["updated"] += cur.execute(f"UPDATE `{table}` SET data = JSON_SET(data, '$.demo', 1), "
                                             "updated_at = NOW(6) ORDER BY id LIMIT 2")
            counts["deleted"] += cur.execute(f"DELETE FROM `{table}` ORDER BY id DESC LIMIT 1")
            counts["inserted"] += cur.execute(f"INSERT INTO `{table}` (id, data, created_at, updated_at) "
                                              f"SELECT MAX(id) + 1000, '{{\"demo\": true}}', NOW(6), NOW(6) FROM `{table}`")
    conn.close()
    return ", ".join(f"{n} rows {what}" for what, n in counts.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the servers running")
    parser.add_argument("--mib-per-shard", default="4")
    args = parser.parse_args()

    print("demo: starting 4 MariaDB shards and empty local-dr and local-replica instances under "
          ".demo/ ...", flush=True)
    sh(sys.executable, "-m", "tests.testbed", "start", "--root", str(DEMO), "--shards", "4",
       "--targets", "local-dr,local-replica", "--mib-per-shard", args.mib_per_shard, capture=False)
    for name in [f"shard{s}" for s in SHARDS] + ["local-dr", "local-replica"]:
        if not (DEMO / name / "mysqld.sock").exists():
            sys.exit(f"demo: {DEMO / name / 'mysqld.sock'} missing (is the repository path too "
                     "long for a unix socket?)")
    shutil.rmtree(DEMO / "store", ignore_errors=True)
    repl_password = "demo-replication"
    shard4 = DEMO / "shard4" / "mysqld.sock"
    sql(shard4, "CREATE USER IF NOT EXISTS 'repl'@'127.0.0.1' IDENTIFIED BY %s", repl_password)
    sql(shard4, "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
    backupd = [str(BIN / "backupd"), "--config", str(CONFIG)]
    try:
        # 1. the scheduled job, as cron or a systemd timer would run it: every shard is due a full
        started = time.monotonic()
        sh(*backupd, "run", "--once", capture=False)
        full_wall = time.monotonic() - started
        # 2. an hour of the application's writes on shards 2 and 4: updates, inserts, deletes
        changed = write_some_changes(DEMO / "shard2" / "mysqld.sock")
        write_some_changes(shard4)
        # 3. hourly incrementals (the daemon takes them every incremental_every)
        started = time.monotonic()
        for shard in SHARDS:
            sh(*backupd, "backup", "--shard", shard, "--kind", "incremental")
        incremental_wall = time.monotonic() - started
        listing = json.loads(sh(*backupd, "list", "--json"))
        # 4. disaster: rebuild shard 2 elsewhere from full + incremental, verified
        restore = json.loads(sh(str(BIN / "restore"), "--config", str(CONFIG), "--shard", "2",
                                "--target", "local-dr", "--json"))
        # 5. shard 4 lost its replica: rebuild redundancy in one command (physical restore,
        #    verified, attached as a replica of shard 4 from the backup's GTID, caught up)
        replica = json.loads(sh(str(BIN / "restore"), "--config", str(CONFIG), "--shard", "4",
                                "--target", "local-replica", "--replica-of", "4", "--json",
                                env={REPL_PASSWORD_ENV: repl_password}))
        write_some_changes(shard4)  # the application goes on; the replica follows
        print("\nthe catalog (backupd list):", flush=True)
        sh(*backupd, "list", capture=False)
    finally:
        if not args.keep:
            sh(sys.executable, "-m", "tests.testbed", "stop", "--root", str(DEMO))

    print("\nbackups taken (store: .demo/store)")
    print(f"  {'shard':<6} {'kind':<12} {'backup id':<38} {'raw':>10} {'stored':>10} {'ratio':>6}")
    for kind, wall in (("full", full_wall), ("incremental", incremental_wall)):
        raw = stored = 0
        for e in (e for e in listing if e["kind"] == kind):
            raw, stored = raw + e["raw_bytes"], stored + e["stored_bytes"]
            print(f"  {e['shard']:<6} {kind:<12} {e['id']:<38} {mib(e['raw_bytes']):>10} "
                  f"{mib(e['stored_bytes']):>10} {e['raw_bytes'] / e['stored_bytes']:>5.2f}x")
        print(f"  {'all':<6} {kind:<12} {'':<38} {mib(raw):>10} {mib(stored):>10} {raw / stored:>5.2f}x  "
              f"in {wall:.1f}s")
    print(f"\nshard 2 changed after its full: {changed}")
    print(f"restore of shard 2 into local-dr: {' + '.join(restore['chain'])}")
    print(f"  state as of {restore['snapshot_at']}: {restore['tables']} tables, {restore['rows']} rows; "
          f"apply {restore['apply_seconds']:.2f}s, verify {restore['verify_seconds']:.2f}s")
    verdict = "VERIFIED: every table's row count and content digest equal the incremental's snapshot" \
        if restore["verified"] else "NOT VERIFIED: " + "; ".join(restore["failures"])
    print(f"  {verdict} ({restore['verification_mode']})")
    print(f"shard 4's replica rebuilt in local-replica: {' + '.join(replica['chain'])} "
          f"({replica['method']}), verified: {replica['verified']}; replicating from "
          f"{replica['replica']['source']} from GTID {replica['replica']['start'] or '(none)'}, caught up "
          f"in {replica['replica']['catchup_seconds']:.2f}s; redundancy rebuilt in "
          f"{replica['replica']['rebuild_seconds']:.1f}s")
    if args.keep:
        print("\nservers left running; stop them with: scripts/testbed stop --root .demo")
    return 0 if restore["verified"] and replica["verified"] else 3


def sql(socket: Path, statement: str, *args: str) -> None:
    import pymysql

    conn = pymysql.connect(unix_socket=str(socket), user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, args or None)
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
