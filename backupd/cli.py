"""``backupd``: take backups and look at the catalog.

Only this module (with ``backupd.cli_support``) turns errors into messages and exit codes.
"""

from __future__ import annotations

import json
import sys
from typing import Sequence

import click

from backupd.catalog import Catalog
from backupd.cli_support import EXIT_CODES_HELP, lazy_config, run_cli, setup_logging
from backupd.config import Config
from backupd.errors import UsageError
from backupd.stores import open_stores
from backupd.units import format_size


def _config(ctx: click.Context) -> Config:
    return ctx.obj()  # type: ignore[no-any-return]


@click.group(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="FILE",
              help="Configuration file (default: $BACKUPD_CONFIG, else config/backupd.toml).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.version_option(package_name="backupd")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool, quiet: bool) -> None:
    """Backups of sharded MySQL/MariaDB fleets: streamed, compressed, stored, verified."""
    setup_logging("backupd", verbose, quiet)
    ctx.obj = lazy_config(config_path)


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--shard", "shard_id", required=True, help="Shard id from the config.")
@click.option("--kind", type=click.Choice(["full", "incremental"]), default="full", show_default=True)
@click.pass_context
def backup(ctx: click.Context, shard_id: str, kind: str) -> int:
    """Take one backup of a shard and print its id."""
    from backupd.pipeline import run_backup

    config = _config(ctx)
    config.shard(shard_id)
    report = run_backup(config, shard_id, kind)
    click.echo(report.manifest.id)
    return 0


@cli.command("list", epilog=EXIT_CODES_HELP)
@click.option("--shard", "shard_id", help="Only this shard.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per backup.")
@click.pass_context
def list_backups(ctx: click.Context, shard_id: str | None, as_json: bool) -> int:
    """List committed backups (oldest first)."""
    config = _config(ctx)
    if shard_id is not None and shard_id not in config.shards:
        config.shard(shard_id)  # raises UsageError naming the shard
    catalog = Catalog(open_stores(config, list(config.stores)))
    entries = catalog.entries(shard_id)
    for bad in catalog.unreadable:
        click.echo(f"backupd: warning: unreadable manifest {bad.store}:{bad.key}: {bad.error}", err=True)
    if as_json:
        rows = [{**e.manifest.summary(), "found_in": e.found_in} for e in entries]
        click.echo(json.dumps(rows, indent=2))
        return 0
    header = ("ID", "SHARD", "KIND", "SNAPSHOT (UTC)", "RAW", "STORED", "RATIO", "PARTS", "STORES")
    table = [header] + [(
        m.id, m.shard, m.kind, m.snapshot_at.strftime("%Y-%m-%d %H:%M:%S"),
        format_size(m.raw_bytes), format_size(m.stored_bytes), f"{m.compression_ratio:.2f}x",
        str(len(m.parts)), ",".join(e.found_in)) for e in entries for m in [e.manifest]]
    _print_table(table)
    if not entries:
        click.echo("no committed backups" + (f" for shard {shard_id}" if shard_id else ""), err=True)
    return 0


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--shard", "shard_id", help="Only this shard.")
@click.pass_context
def sync(ctx: click.Context, shard_id: str | None) -> int:
    """Copy every part and manifest a store lacks from a store that has it (sha256 verified)."""
    from backupd.sync import sync_stores

    config = _config(ctx)
    if shard_id is not None and shard_id not in config.shards:
        config.shard(shard_id)
    report = sync_stores(config, shard_id)
    click.echo(f"sync: {report.backups} backups checked, {report.parts_copied} parts "
               f"({format_size(report.bytes_copied)}) and {report.manifests_copied} manifests copied")
    for problem in report.problems:
        click.echo(f"backupd: error: {problem}", err=True)
    if report.corrupt:
        return 3
    return 1 if report.problems else 0


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``backupd`` console script; returns the exit code."""
    return run_cli("backupd", cli, argv)


if __name__ == "__main__":
    sys.exit(main())
