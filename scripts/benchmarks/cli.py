"""scripts/bench: backupd against the plain tools it competes with, on one ~1 GiB shard.

Every job runs ``--rounds`` times, interleaved (job A, B, C, A, B, C, ...), so machine noise
hits all of them alike; the table shows medians and ratios to the baseline of each section.
Never read the absolute seconds across machines: only the ratios mean something.
"""

from __future__ import annotations

import argparse

from .audit import bench_audit
from .backup_restore import bench_backup_restore
from .binlogs import bench_binlogs
from .clouds import bench_clouds
from .disaster import bench_disaster
from .encryption import bench_encryption
from .floats import bench_floats
from .incremental import bench_incremental
from .physical import bench_physical
from .replica import bench_replica
from .sync import bench_sync


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suite", choices=["audit", "backup-restore", "binlogs", "clouds", "disaster", "encryption", "floats",
                                          "incremental", "physical", "replica", "sync"])
    parser.add_argument("--percent", type=float, default=5.0, help="incremental: rows updated, in percent")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=40.0, help="binlogs: how long the write load runs")
    parser.add_argument("--gib", type=float, default=None,
                        help="size of the generated shard (default 1.0; disaster: 0.02)")
    args = parser.parse_args()
    if args.gib is None:
        args.gib = 0.02 if args.suite == "disaster" else 1.0
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
    elif args.suite == "disaster":
        bench_disaster(args.rounds, args.gib)
    elif args.suite == "binlogs":
        bench_binlogs(args.rounds, args.gib, args.seconds)
    elif args.suite == "encryption":
        bench_encryption(args.rounds, args.gib)
    elif args.suite == "replica":
        bench_replica(args.rounds, args.gib)
    elif args.suite == "floats":
        bench_floats(args.rounds)
    else:
        bench_backup_restore(args.rounds, args.gib)
    return 0
