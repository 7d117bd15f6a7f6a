"""``restore``: restore a shard into a target and prove the result equal to the backup."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import click

from backupd.cli_support import EXIT_CODES_HELP, load_config_at, run_cli, setup_logging
from backupd.errors import DataMismatch, UsageError
from backupd.repo.repository import Repository
from backupd.units import format_duration, format_size, parse_duration
from restore.replica import attach_replica, resolve_source
from restore.runner import RestoreReport, run_restore


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
@click.option("--shard", "shard_id", required=True, help="Shard id whose backups to restore.")
@click.option("--target", "target_name", required=True, help="Target name from the config (e.g. us-west).")
@click.option("--backup", "backup_id", help="Restore exactly this backup id.")
@click.option("--at", "at_text", metavar="TIME",
              help="Restore the newest restorable point (a full, or a full and an incremental) "
                   "at or before TIME (default: now).")
@click.option("--force", is_flag=True, help="Replace databases that already exist on the target "
              "(physical: replace a datadir that holds databases).")
@click.option("--replica-of", "replica_of", metavar="SOURCE",
              help="After the verified restore, make the target a replica of SOURCE (a shard id: its "
                   "primary; or host:port) from the backup's coordinates, and wait until it has caught up.")
@click.option("--catchup-timeout", default="1h", show_default=True, metavar="DURATION",
              help="With --replica-of: how long the replica may take to catch up.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-v", "--verbose", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
@click.version_option(package_name="backupd")
def cli(config_path: str | None, shard_id: str, target_name: str, backup_id: str | None,
        at_text: str | None, force: bool, replica_of: str | None, catchup_timeout: str,
        as_json: bool, verbose: bool, quiet: bool) -> int:
    """Restore shard SHARD into target TARGET, then verify every table against the backup;
    with --replica-of, then rebuild redundancy: replicate from SOURCE until caught up."""
    started = time.monotonic()
    setup_logging("restore", verbose, quiet)
    if backup_id and at_text:
        raise UsageError("give --backup or --at, not both")
    try:
        timeout = parse_duration(catchup_timeout)
    except ValueError as exc:
        raise UsageError(f"--catchup-timeout: {exc}") from None
    config = load_config_at(config_path)
    at = parse_time(at_text) if at_text else None
    config.shard(shard_id)  # an unknown shard is a usage error (exit 2), never "no backup"
    repo = Repository(config)
    target = repo.target(target_name)
    source = resolve_source(config, shard_id, replica_of) if replica_of else None  # checked before restoring
    try:
        report = run_restore(config.settings, shard_id, target, backup_id=backup_id, at=at, force=force)
    except DataMismatch as exc:
        if as_json and isinstance(exc.report, RestoreReport):
            click.echo(json.dumps(_report_json(exc.report), indent=2))
        raise
    if not as_json:
        _print_report(report)
    catch_up = None
    if source is not None:
        catch_up = attach_replica(target, source, report.manifest, timeout=timeout)
        if not as_json:
            click.echo(f"replica of {source.description} (from {catch_up.mode} {catch_up.start}): caught up "
                       f"at {catch_up.reached} after {format_duration(catch_up.seconds)}; redundancy "
                       f"rebuilt in {format_duration(time.monotonic() - started)}")
    if as_json:
        document = _report_json(report)
        if source is not None and catch_up is not None:
            document["replica"] = {"source": source.description, "mode": catch_up.mode,
                                   "start": catch_up.start, "caught_up_at": catch_up.reached,
                                   "catchup_seconds": round(catch_up.seconds, 3),
                                   "rebuild_seconds": round(time.monotonic() - started, 3)}
        click.echo(json.dumps(document, indent=2))
    return 0


def _print_report(report: RestoreReport) -> None:
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
        "coordinates": report.manifest.coordinates.model_dump(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``restore`` console script; returns the exit code."""
    return run_cli("restore", cli, argv)


if __name__ == "__main__":
    sys.exit(main())
