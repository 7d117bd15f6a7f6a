"""Run a local fleet of MariaDB shards by hand.

    python -m tests.testbed start --root DIR --shards N [--mib-per-shard 4]
                                  [--targets local-dr,...] [--edge-cases] [--cache DIR]
    python -m tests.testbed status --root DIR [--json]
    python -m tests.testbed stop --root DIR [--destroy]

``start`` creates servers ``shard1..shardN`` (server ids 1..N, seeded with shard ``i-1`` of
``N``) and one empty server per target name (server ids 1001, 1002, ...), all under
``DIR/<name>``, and writes ``DIR/testbed.json``. Re-running ``start`` stops and deletes the
servers listed in an existing ``testbed.json`` first. ``stop`` is idempotent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tests.testbed.config import write_config
from tests.testbed.data import DEFAULT_BUCKETS, SeedStats, seed_edge_cases, seed_shard
from tests.testbed.mariadb import MariaDBServer, template_datadir

STATE_FILE = "testbed.json"
TARGET_SERVER_ID_BASE = 1000
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO_ROOT / ".testbed" / "cache"
_MIB = 1024 * 1024

T = TypeVar("T")
R = TypeVar("R")


def _parallel(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """Apply ``fn`` to every item in threads; re-raise the first failure after all finish."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = [pool.submit(fn, item) for item in items]
    return [f.result() for f in futures]


def load_state(root: Path) -> dict[str, Any] | None:
    """Parsed ``root/testbed.json``, or None if there is none."""
    path = root / STATE_FILE
    if not path.exists():
        return None
    return dict(json.loads(path.read_text()))


def write_state(root: Path, state: dict[str, Any]) -> None:
    """Atomically replace ``root/testbed.json``."""
    tmp = root / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, root / STATE_FILE)


def servers_from_state(state: dict[str, Any] | None) -> list[MariaDBServer]:
    return [MariaDBServer.from_dict(d) for d in (state or {}).get("servers", [])]


def _teardown_previous(root: Path, names: Sequence[str]) -> None:
    """Stop and delete the servers of an earlier ``start`` under ``root``, plus leftovers in
    ``root/<name>`` for the names about to be created (e.g. from a start that crashed)."""
    servers = servers_from_state(load_state(root))
    for server in servers:
        if not server.root.resolve().is_relative_to(root.resolve()):
            raise SystemExit(f"refusing to delete {server.root}: not under {root}")
    known = {s.root.resolve() for s in servers}
    servers += [MariaDBServer(name, root / name, port=0, server_id=0) for name in names
                if (root / name).exists() and (root / name).resolve() not in known]
    _parallel(lambda s: s.destroy(), servers)
    (root / STATE_FILE).unlink(missing_ok=True)


def _state(root: Path, cache: Path, servers: list[MariaDBServer], shards: list[str],
           targets: list[str], args: argparse.Namespace, phase: str,
           seeds: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "version": 1,
        "phase": phase,
        "root": str(root),
        "cache": str(cache),
        "n_shards": len(shards),
        "n_buckets": args.buckets,
        "shards": shards,
        "targets": targets,
        "edge_cases": args.edge_cases,
        "seed": seeds or {},
        "servers": [s.to_dict() for s in servers],
    }


def cmd_start(args: argparse.Namespace) -> int:
    root: Path = args.root.absolute()
    cache: Path = args.cache.absolute()
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    shards = [f"shard{i}" for i in range(1, args.shards + 1)]
    targets = [t for t in (args.targets or "").split(",") if t]
    plan = [(name, i + 1) for i, name in enumerate(shards)]
    plan += [(name, TARGET_SERVER_ID_BASE + i + 1) for i, name in enumerate(targets)]
    if len({name for name, _ in plan}) != len(plan) or any("/" in n for n, _ in plan):
        raise SystemExit("server names must be unique and contain no '/'")
    _teardown_previous(root, [name for name, _ in plan])
    template_datadir(cache)
    servers = [MariaDBServer.create(root / name, name, sid, cache) for name, sid in plan]
    try:
        _parallel(lambda s: s.start(), servers)
        t_started = time.monotonic()
        write_state(root, _state(root, cache, servers, shards, targets, args, "seeding"))
        stats = _parallel(lambda i: _seed_one(servers[i], i, args), list(range(len(shards))))
    except BaseException:
        _parallel(lambda s: s.stop(), servers)
        raise
    seeds = {name: {"tables": st.tables, "rows": st.rows, "payload_bytes": st.payload_bytes,
                    "seconds": round(st.seconds, 3)}
             for name, st in zip(shards, stats, strict=True)}
    write_state(root, _state(root, cache, servers, shards, targets, args, "ready", seeds))
    config = write_config(root / "backupd.toml", store_dir=root / "store",
                          shards={str(i + 1): s for i, s in enumerate(servers[:len(shards)])},
                          targets={s.name: s for s in servers[len(shards):]})
    t_done = time.monotonic()
    for server in servers:
        seed = seeds.get(server.name)
        extra = (f" {seed['rows']} rows, {seed['payload_bytes'] / _MIB:.1f} MiB in "
                 f"{seed['tables']} tables" if seed else " (empty)")
        print(f"{server.name:<12} port {server.port:<5} pid {server.pid:<7} "
              f"socket {server.socket}{extra}")
    print(f"started {len(servers)} servers in {t_started - t0:.2f}s, seeded in "
          f"{t_done - t_started:.2f}s; state: {root / STATE_FILE}; backupd config: {config}")
    return 0


def _seed_one(server: MariaDBServer, index: int, args: argparse.Namespace) -> SeedStats:
    stats = seed_shard(server, index, args.shards, n_buckets=args.buckets,
                       target_bytes=int(args.mib_per_shard * _MIB), seed=args.seed)
    if args.edge_cases:
        seed_edge_cases(server)
    return stats


def cmd_stop(args: argparse.Namespace) -> int:
    root: Path = args.root.absolute()
    servers = servers_from_state(load_state(root))
    action = (lambda s: s.destroy()) if args.destroy else (lambda s: s.stop())
    _parallel(action, servers)
    if args.destroy:
        (root / STATE_FILE).unlink(missing_ok=True)
    print(f"{'destroyed' if args.destroy else 'stopped'} {len(servers)} servers under {root}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    root: Path = args.root.absolute()
    state = load_state(root)
    servers = servers_from_state(state)
    rows = [{"name": s.name, "running": s.is_running(), "port": s.port,
             "pid": s.pid if s.is_running() else None, "socket": str(s.socket)}
            for s in servers]
    if args.json:
        print(json.dumps({"phase": (state or {}).get("phase"), "servers": rows}, indent=2))
    elif not servers:
        print(f"no test bed under {root}")
    else:
        for row in rows:
            status = "up" if row["running"] else "down"
            print(f"{row['name']:<12} {status:<5} port {row['port']:<5} pid {row['pid']} "
                  f"socket {row['socket']}")
    return 0 if servers and all(r["running"] for r in rows) else 1


def cmd_server(args: argparse.Namespace) -> int:
    """Start or stop one instance made by MariaDBServer.create (its ``server.json``)."""
    server = MariaDBServer.load(args.server_root)
    if args.action == "start":
        server.start()
    else:
        server.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start and seed a fleet (replaces a previous one)")
    start.add_argument("--root", type=Path, required=True)
    start.add_argument("--shards", type=int, required=True)
    start.add_argument("--mib-per-shard", type=float, default=4.0)
    start.add_argument("--targets", default="", help="comma-separated empty servers")
    start.add_argument("--edge-cases", action="store_true", help="add the `edge` database")
    start.add_argument("--buckets", type=int, default=DEFAULT_BUCKETS)
    start.add_argument("--seed", type=int, default=0)
    start.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                       help=f"template datadir cache (default {DEFAULT_CACHE})")
    start.set_defaults(func=cmd_start)
    stop = sub.add_parser("stop", help="stop every server in testbed.json (idempotent)")
    stop.add_argument("--root", type=Path, required=True)
    stop.add_argument("--destroy", action="store_true", help="also delete their directories")
    stop.set_defaults(func=cmd_stop)
    status = sub.add_parser("status", help="show servers; exit 1 unless all are up")
    status.add_argument("--root", type=Path, required=True)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    server = sub.add_parser("server", help="start or stop one instance (the test bed's "
                                           "start_command/stop_command of physical-restore targets)")
    server.add_argument("--server-root", type=Path, required=True)
    server.add_argument("action", choices=["start", "stop"])
    server.set_defaults(func=cmd_server)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "shards", 1) < 1:
        raise SystemExit("--shards must be >= 1")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
