"""``restore``: restore a shard (or a fleet of them) into a target and prove the result equal to the backup."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import click

from backupd.cli_support import EXIT_CODES_HELP, load_config_at, print_table, run_cli, setup_logging
from backupd.config import Config
from backupd.errors import DataMismatch, UsageError
from backupd.metrics import one_shot_metrics, restore_samples
from backupd.progress import showing_board
from backupd.repo.repository import Repository, Target
from backupd.units import format_duration, format_size, parse_duration
from restore.fleet import restore_fleet
from restore.parallel import default_jobs
from restore.replay import PointInTime, plan_replay
from restore.replica import attach_replica, resolve_source
from restore.runner import RestoreReport, plan_for, run_restore
from restore.tables import parse_table_name, restore_tables

log = logging.getLogger("restore")


def parse_time(text: str) -> datetime:
    """ISO 8601 time ("2026-11-26T08:00:00Z", "2026-11-26 08:00"); naive times are UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--at: {text!r} is not a time such as 2026-11-26T08:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="FILE",
              help="Configuration file (default: $BACKUPD_CONFIG, else config/backupd.toml).")
@click.option("--shard", "shard_ids", multiple=True, metavar="ID",
              help="Shard id whose backups to restore (repeat it for several shards).")
@click.option("--shards", "shard_list", metavar="LIST", help="Several shards: ids and ranges, e.g. 1,2,5-8.")
@click.option("--all-shards", is_flag=True, help="Every configured shard.")
@click.option("--target", "target_name", required=True, help="Target name from the config (e.g. us-west).")
@click.option("--target-host", metavar="HOST[:PORT]",
              help="One shard: restore into this server instead of the target's (credentials and stores "
                   "stay the target's).")
@click.option("--backup", "backup_id", help="Restore exactly this backup id (one shard).")
@click.option("--at", "at_text", metavar="TIME",
              help="Restore the shard as it was at TIME: the newest backup at or before it, then its "
                   "archived binlogs replayed up to every transaction committed at or before TIME; "
                   "the same instant for every shard. Default: the newest archived point.")
@click.option("--gtid", metavar="GTID", help="One shard: restore up to and including transaction GTID "
              "(e.g. 0-1-1234): the newest backup before it, then the binlogs up to it.")
@click.option("--to-backup", is_flag=True, help="Restore a backup's own point and replay no binlogs (with "
              "--at: the newest backup at or before TIME).")
@click.option("--force", is_flag=True, help="Replace databases that already exist on the target "
              "(physical: replace a datadir that holds databases).")
@click.option("--replica-of", "replica_of", metavar="SOURCE",
              help="After the verified restore, make the target a replica of SOURCE (a shard id: its "
                   "primary; host:port; or 'primary': each restored shard's own) from the backup's "
                   "coordinates, and wait until it has caught up.")
@click.option("--catchup-timeout", default="1h", show_default=True, metavar="DURATION",
              help="With --replica-of: how long the replica may take to catch up.")
@click.option("--table", "table_patterns", multiple=True, metavar="DB.TABLE",
              help="Restore only this table (repeatable; shell-style patterns such as app.bucket_05*) into the "
                   "target, which may be live: other tables are never touched; an existing table is refused "
                   "unless --force (swapped atomically) or --as. With archived binlogs it is taken on to --at, "
                   "--gtid or the newest archived point by its own rows events.")
@click.option("--as", "as_name", metavar="DB.NEWNAME", help="With one --table: restore it under this name, "
              "beside the original.")
@click.option("--jobs", type=click.IntRange(1, 64), metavar="N",
              help="Load a table-addressed logical backup over N connections, largest tables first "
                   "(default: [backupd] restore_jobs, else one per core).")
@click.option("--parallel-shards", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Several shards: how many are restored at once (largest first).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-v", "--verbose", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
@click.version_option(package_name="backupd")
def cli(config_path: str | None, shard_ids: tuple[str, ...], shard_list: str | None, all_shards: bool,
        target_name: str, target_host: str | None, backup_id: str | None, at_text: str | None,
        gtid: str | None, to_backup: bool, force: bool,
        replica_of: str | None, catchup_timeout: str, table_patterns: tuple[str, ...], as_name: str | None,
        jobs: int | None, parallel_shards: int, as_json: bool, verbose: bool, quiet: bool) -> int:
    """Restore shard SHARD (or several: --shards, --all-shards) into target TARGET, then verify
    every table against the backup; with --replica-of, then rebuild redundancy: replicate from
    SOURCE until caught up. Several shards are restored in parallel, each into its own server
    (the target's [targets.NAME.shards.ID] or its host template), to the same instant."""
    started = time.monotonic()
    setup_logging("restore", verbose, quiet)
    if sum(map(bool, (backup_id, at_text, gtid))) > 1:
        raise UsageError("give one of --backup, --at and --gtid")
    if gtid and to_backup:
        raise UsageError("--gtid replays binlogs: it cannot be given with --to-backup")
    if gtid and not re.fullmatch(r"\d+-\d+-\d+", gtid.strip()):
        raise UsageError(f"--gtid: {gtid!r} is not a MariaDB GTID such as 0-1-1234")
    try:
        timeout = parse_duration(catchup_timeout)
    except ValueError as exc:
        raise UsageError(f"--catchup-timeout: {exc}") from None
    config = load_config_at(config_path)
    at = parse_time(at_text) if at_text else None
    shards = select_shards(config, shard_ids, shard_list, all_shards)  # unknown shards: usage errors (exit 2)
    repo = Repository(config)
    fleet = len(shards) > 1 or shard_list is not None or all_shards
    if fleet:
        for option, value in (("--backup", backup_id), ("--target-host", target_host), ("--gtid", gtid),
                              ("--table", ",".join(table_patterns)), ("--as", as_name)):
            if value:
                raise UsageError(f"{option} names one shard's server or backup: give a single --shard with it")
        if replica_of not in (None, "primary"):
            raise UsageError(f"--replica-of {replica_of}: several shards each replicate from their own "
                             "primary: use --replica-of primary")
        config.target(target_name)
        return _restore_fleet(repo, shards, target_name, at=at, force=force, parallel=parallel_shards,
                              replicas=replica_of is not None, timeout=timeout, as_json=as_json,
                              replay=not to_backup)
    shard_id = shards[0]
    host, port = parse_host(target_host) if target_host else (None, None)
    target = repo.target(target_name, shard_id, host=host, port=port)
    if table_patterns or as_name:
        return _restore_tables(config, target, shard_id, table_patterns, as_name, backup_id=backup_id, at=at,
                               gtid=gtid, to_backup=to_backup, replica_of=replica_of, force=force, jobs=jobs,
                               as_json=as_json)
    source = resolve_source(config, shard_id, replica_of) if replica_of else None  # checked before restoring
    plan = plan_for(target, shard_id, backup_id=backup_id, at=at, before_gtid=gtid)
    point = None if to_backup or backup_id else PointInTime(until=at, gtid=gtid.strip() if gtid else None)
    replay_plan = plan_replay(target, shard_id, plan.final, point) if point else None
    try:
        report = run_restore(config.settings, shard_id, target, plan=plan, replay_plan=replay_plan, force=force,
                             jobs=jobs)
    except DataMismatch as exc:
        if isinstance(exc.report, RestoreReport):
            _publish(config, shard_id, target, exc.report, time.monotonic() - started)
            if as_json:
                click.echo(json.dumps(_report_json(exc.report), indent=2))
        raise
    if not as_json:
        _print_report(report)
    catch_up = None
    if source is not None:
        catch_up = attach_replica(target, source, report.manifest, timeout=timeout, coordinates=report.coordinates)
        if not as_json:
            click.echo(f"replica of {source.description} (from {catch_up.mode} {catch_up.start}): caught up "
                       f"at {catch_up.reached} after {format_duration(catch_up.seconds)}; redundancy "
                       f"rebuilt in {format_duration(time.monotonic() - started)}")
    _publish(config, shard_id, target, report, time.monotonic() - started,
             rebuild=time.monotonic() - started if catch_up is not None else None)
    if as_json:
        document = _report_json(report)
        if source is not None and catch_up is not None:
            document["replica"] = {"source": source.description, "mode": catch_up.mode,
                                   "start": catch_up.start, "caught_up_at": catch_up.reached,
                                   "catchup_seconds": round(catch_up.seconds, 3),
                                   "rebuild_seconds": round(time.monotonic() - started, 3)}
        click.echo(json.dumps(document, indent=2))
    return 0


def _restore_tables(config: Config, target: Target, shard_id: str, patterns: Sequence[str], as_name: str | None, *,
                    backup_id: str | None, at: datetime | None, gtid: str | None, to_backup: bool,
                    replica_of: str | None, force: bool, jobs: int | None, as_json: bool) -> int:
    """``--table``: restore some tables of one shard (``restore.tables``), to a point in time
    unless ``--backup``/``--to-backup``, and print what was done."""
    if not patterns:
        raise UsageError("--as renames the table given with --table: give --table DB.TABLE too")
    if replica_of:
        raise UsageError("--replica-of cannot be given with --table: a restored table is not a replica")
    rename_to = parse_table_name(as_name, "--as") if as_name else None
    plan = plan_for(target, shard_id, backup_id=backup_id, at=at, before_gtid=gtid)
    point = None if to_backup or backup_id else PointInTime(until=at, gtid=gtid.strip() if gtid else None)
    replay_plan = plan_replay(target, shard_id, plan.final, point) if point else None
    report = restore_tables(config.settings, target, plan, patterns, rename_to=rename_to, force=force,
                            jobs=jobs or default_jobs(config.settings), replay_plan=replay_plan)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return 0
    chain = " + ".join(report.chain)
    replayed = report.replay
    for t in report.tables:
        how = "replaced atomically" if t.replaced else "created"
        named = f" as {t.restored_as}" if t.restored_as != t.source else ""
        if replayed is not None and replayed.tables is not None:
            changes = replayed.tables.per_table.get(t.source, 0)
            state = (f"verified as of {report.manifest.snapshot_at.isoformat()}, then taken to "
                     f"{replayed.point.describe()} by {changes} rows event(s) of the binlog")
        else:
            state = f"state at {report.manifest.snapshot_at.isoformat()}, verified"
        click.echo(f"restored {t.source}{named} from {chain} into target {report.target}: {t.rows} rows, {state}; "
                   f"{how}; {t.triggers} trigger(s)")
    return 0


def select_shards(config: Config, shard_ids: Sequence[str], shard_list: str | None, all_shards: bool) -> list[str]:
    """The shards a command names (``--shard``, ``--shards 1,2,5-8``, ``--all-shards``), in
    order, each checked to be configured (an unknown one is a UsageError naming it)."""
    chosen = list(shard_ids)
    for item in (shard_list or "").split(","):
        item = item.strip()
        if not item:
            continue
        low, dash, high = item.partition("-")
        if dash and low.isdigit() and high.isdigit():
            if int(low) > int(high):
                raise UsageError(f"--shards: {item!r} is an empty range")
            chosen += [str(n) for n in range(int(low), int(high) + 1)]
        else:
            chosen.append(item)
    if all_shards:
        chosen += sorted(config.shards, key=lambda s: (len(s), s))
    if not chosen:
        raise UsageError("give the shards to restore: --shard ID (repeatable), --shards 1,2,5-8 or --all-shards")
    for shard_id in chosen:
        config.shard(shard_id)
    return list(dict.fromkeys(chosen))


def parse_host(text: str) -> tuple[str, int | None]:
    """``--target-host``: ``host``, ``host:port`` or ``[v6]:port``."""
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d{1,5}))?|([^:\[\]]+)(?::(\d{1,5}))?", text.strip())
    if not match:
        raise UsageError(f"--target-host: {text!r} is not HOST or HOST:PORT")
    host = match.group(1) or match.group(3)
    port = match.group(2) or match.group(4)
    if port is not None and not 0 < int(port) < 65536:
        raise UsageError(f"--target-host: port {port} is out of range")
    return host, int(port) if port is not None else None


def _restore_fleet(repo: Repository, shards: list[str], target_name: str, *, at: datetime | None, force: bool,
                   parallel: int, replicas: bool, timeout: float, as_json: bool, replay: bool) -> int:
    """Restore several shards (``restore.fleet``), print the summary; the worst shard's exit code."""
    config = repo.config
    with showing_board():
        outcomes = restore_fleet(repo, shards, target_name, at=at, force=force, parallel=parallel,
                                 replicas=replicas, catchup_timeout=timeout, replay=replay)
    metrics = one_shot_metrics(config.metrics)
    if metrics is not None:
        for o in outcomes:
            metrics.emit(restore_samples(o.shard, target_name, seconds=o.seconds, raw_bytes=o.raw_bytes,
                                         verified=o.verified, rebuild_seconds=o.rebuild_seconds))
        metrics.close()
    worst = max((o.exit_code for o in outcomes), default=0)
    if as_json:
        click.echo(json.dumps({"target": target_name, "at": at.isoformat() if at else None, "ok": worst == 0,
                               "exit_code": worst, "shards": [o.to_json() for o in outcomes]}, indent=2))
        return worst
    replayed = any(o.replay for o in outcomes)  # the column is there when binlogs were replayed
    rows = [("SHARD", "BACKUP", *(("REPLAYED-TO",) if replayed else ()), "TARGET", "BYTES", "SECONDS", "VERIFIED",
             "REPLICA")]
    for o in outcomes:
        verdict = "yes" if o.verified else ("DIFFERS" if o.exit_code == 3 else "FAILED")
        replica = "-" if not replicas else (f"caught up at {o.catch_up.reached}" if o.catch_up else "no")
        replay_cell = ((o.replay.last_gtid or "-") if o.replay else "-",) if replayed else ()
        rows.append((o.shard, o.backup or "-", *replay_cell, o.server, format_size(o.raw_bytes), f"{o.seconds:.1f}",
                     verdict, replica))
    print_table(rows)
    for o in outcomes:
        if o.failure:
            click.echo(f"restore: shard {o.shard}: {o.failure}", err=True)
    verified = sum(o.verified for o in outcomes)
    click.echo(f"restore: {verified} of {len(outcomes)} shard(s) restored and verified into target {target_name}",
               err=True)
    return worst


def _publish(config: Config, shard_id: str, target: Target, report: RestoreReport, seconds: float, *,
             rebuild: float | None = None) -> None:
    """Send one restore's metrics (a one-shot command sends them to Graphite)."""
    metrics = one_shot_metrics(config.metrics)
    if metrics is None:
        return
    try:
        metrics.emit(restore_samples(shard_id, target.name, seconds=seconds, raw_bytes=report.applied_bytes,
                                     verified=report.verification.ok, rebuild_seconds=rebuild))
    finally:
        metrics.close()


def _print_report(report: RestoreReport) -> None:
    _print_backup(report)
    r = report.replay
    if r is not None:
        click.echo(f"replayed binlogs {r.start[0]}:{r.start[1]} to {r.end[0]}:{r.end[1]} up to "
                   f"{r.point.describe()}: {r.transactions} transactions in {r.segments} segments "
                   f"({format_size(r.raw_bytes)}) in {format_duration(r.seconds)}; proven: the target's GTID "
                   f"position {r.target_gtid_position or '-'} holds the archive's last transaction "
                   f"{r.last_gtid or '(none replayed)'}, committed "
                   f"{r.last_committed_at.isoformat() if r.last_committed_at else '-'}")


def _print_backup(report: RestoreReport) -> None:
    m, v = report.manifest, report.verification
    if len(report.chain) > 1:
        click.echo(f"applied full {report.chain[0]}, then incremental {m.id} "
                   f"(state at {m.snapshot_at.isoformat()})")
    if m.is_physical:
        phases = ", ".join(f"{name} {format_duration(seconds)}" for name, seconds in report.phases.items())
        click.echo(f"restored shard {m.shard} backup {m.id} ({m.method}) into target {report.target}: "
                   f"{format_size(report.applied_bytes)} of files in {format_duration(report.apply_seconds)} "
                   f"({phases})")
        click.echo(f"verified ({v.mode}) after the server started: {len(v.tables)} tables, {v.rows} rows "
                   f"equal the backup's reference; {len(m.reference.objects)} views/triggers/routines/events present")
        return
    click.echo(f"restored shard {m.shard} backup {m.id} into target {report.target}: "
               f"{len(v.tables)} tables, {v.rows} rows, {format_size(report.applied_bytes)} of SQL "
               f"in {format_duration(report.apply_seconds)} "
               f"({format_size(report.throughput)}/s)")
    click.echo(f"verified ({v.mode}; {v.verified_during_load} tables while loading, the rest in "
               f"{format_duration(report.verify_seconds)} after): every table "
               f"equals the backup's reference; {len(m.reference.objects)} views/triggers/routines/events present")


def _report_json(report: RestoreReport) -> dict[str, object]:
    v = report.verification
    return {
        "backup": report.manifest.id, "shard": report.manifest.shard, "target": report.target,
        "kind": report.manifest.kind, "chain": report.chain,
        "snapshot_at": report.manifest.snapshot_at.isoformat().replace("+00:00", "Z"),
        "raw_bytes": report.manifest.raw_bytes, "stored_bytes": report.manifest.stored_bytes,
        "apply_seconds": round(report.apply_seconds, 3), "verify_seconds": round(report.verify_seconds, 3),
        "verified": v.ok, "verification_mode": v.mode, "tables": len(v.tables), "rows": v.rows,
        "tables_verified_during_load": v.verified_during_load,
        "failures": v.failures,
        "method": report.manifest.method,
        "phases": {name: round(seconds, 3) for name, seconds in report.phases.items()},
        "coordinates": report.coordinates.model_dump(),
        "backup_coordinates": report.manifest.coordinates.model_dump(),
        "replay": report.replay.to_json() if report.replay else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``restore`` console script; returns the exit code."""
    return run_cli("restore", cli, argv)


if __name__ == "__main__":
    sys.exit(main())
