"""``backupd``: take backups and look at the catalog.

Only this module (with ``backupd.cli_support``) turns errors into messages and exit codes. Each
command resolves its shard once and opens each store once (``Repository``); results reach the
metrics through ``backupd.protocol.samples``, as they do in the daemon.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from typing import Any

import click

from backupd.cli_support import EXIT_CODES_HELP, LazyConfig, print_table, run_cli, setup_logging
from backupd.config import Config
from backupd.errors import BackupdError, UsageError
from backupd.metrics import one_shot_metrics
from backupd.mysql.grants import ROLES, Role
from backupd.policy.chain import base_for
from backupd.protocol import BackupOutcome, DrillOutcome, Outcome, encode, samples
from backupd.repo.catalog import Catalog, CatalogEntry
from backupd.repo.model import BackupKind, Manifest
from backupd.repo.repository import Repository
from backupd.units import format_duration, format_size


def _config(ctx: click.Context) -> Config:
    lazy: LazyConfig = ctx.obj
    return lazy()


def _publish(config: Config, outcomes: list[Outcome]) -> None:
    """Send the results' metrics, unless the daemon runs this command (it sends them itself)."""
    metrics = one_shot_metrics(config.metrics)
    if metrics is None:
        return
    try:
        for outcome in outcomes:
            metrics.emit(samples(outcome))
    finally:
        metrics.close()


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
    ctx.obj = LazyConfig(config_path)


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--shard", "shard_id", required=True, help="Shard id from the config.")
@click.option("--kind", type=click.Choice(["full", "incremental"]), default="full", show_default=True)
@click.option("--if-due", is_flag=True,
              help="Take whichever backup the schedule says is due now (full or incremental), or "
                   "nothing; a backup of the shard already running elsewhere also means nothing to do.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON object.")
@click.pass_context
def backup(ctx: click.Context, shard_id: str, kind: BackupKind, if_due: bool, as_json: bool) -> int:
    """Take one backup of a shard (under the shard's lock) and print its id."""
    from backupd.backup.job import run_backup_job

    config = _config(ctx)
    repo = Repository(config)
    shard = repo.shard(shard_id)
    try:
        result = run_backup_job(repo, shard, kind, if_due=if_due)
    except BackupdError:
        _publish(config, [BackupOutcome.failed(shard_id, kind)])
        raise
    outcome = BackupOutcome.of(result)
    _publish(config, [outcome])
    if as_json:
        click.echo(encode(outcome))
    elif result.report is not None:
        click.echo(result.report.manifest.id)
    else:
        click.echo(f"backupd: shard {shard_id}: skipped: {result.reason}", err=True)
    return 0


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--shard", "shard_id", required=True, help="Shard id from the config.")
@click.option("--json", "as_json", is_flag=True, help="When stopped, print what was archived as JSON.")
@click.pass_context
def binlogs(ctx: click.Context, shard_id: str, as_json: bool) -> int:
    """Archive a shard's binary log continuously, in segments of whole transactions, until
    stopped (SIGTERM/SIGINT: what was read is committed first). One archiver per shard, on any
    host: a second one exits with the lock-held status."""
    import signal
    import threading
    import time

    from backupd.backup.binlog_job import ArchiverStats, BinlogArchiver
    from backupd.metrics import binlog_samples
    from backupd.repo.model import utc_now

    config = _config(ctx)
    shard = Repository(config).shard(shard_id)
    stop = threading.Event()
    metrics = one_shot_metrics(config.metrics)  # None under the daemon: it sends the RPO itself
    last_sent = [0.0]

    def send_rpo(stats: ArchiverStats) -> None:
        if metrics is None or time.monotonic() - last_sent[0] < config.metrics.interval:
            return
        last_sent[0] = time.monotonic()
        until = stats.archived_until
        metrics.emit(binlog_samples(shard_id, rpo_seconds=(utc_now() - until).total_seconds() if until else None))

    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stats = BinlogArchiver(config, shard, stop=stop, on_progress=send_rpo).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if metrics is not None:
            metrics.close()
    summary = {"shard": shard_id, "segments": stats.segments, "transactions": stats.transactions,
               "stored_bytes": stats.bytes, "raw_bytes": stats.raw_bytes, "reconnects": stats.reconnects,
               "gaps": stats.gaps, "position": ":".join(map(str, stats.position)) if stats.position else None,
               "archived_until": stats.archived_until.isoformat() if stats.archived_until else None}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"backupd: shard {shard_id}: archived {stats.segments} segments ({stats.transactions} "
                   f"transactions, {format_size(stats.bytes)}) until {summary['archived_until'] or 'nothing'}; "
                   f"the archive ends at {summary['position'] or 'its start'}", err=True)
    return 1 if stats.gaps else 0


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--once", is_flag=True, help="Run whatever is due now (backups, then due deep audits and "
              "drills), wait for it, and exit: 1 if a backup or audit run failed, 3 on an audit finding.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per finished job on stdout "
              "(and, with --once, a last one: failed jobs, failed checks, the exit code).")
@click.pass_context
def run(ctx: click.Context, once: bool, as_json: bool) -> int:
    """Run the scheduler: fulls every full_every, incrementals every incremental_every,
    retention after each full (SIGTERM/SIGINT stop gracefully, SIGHUP reloads the config)."""
    from backupd.daemon import Daemon

    config = _config(ctx)
    if not config.shards:
        raise UsageError(f"{config.path}: no shards configured; nothing to schedule")
    config.check_secrets()  # the daemon will need them all: a missing one is known now
    return Daemon(config.path, config, once=once, json_lines=as_json).run()


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--shard", "shard_id", help="Only this shard.")
@click.option("--dry-run", is_flag=True, help="Only show what would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="Print every verdict as JSON.")
@click.pass_context
def prune(ctx: click.Context, shard_id: str | None, dry_run: bool, as_json: bool) -> int:
    """Delete backups the [retention] policy no longer keeps (manifest first, then parts)."""
    from backupd.ops.prune import prune as run_prune

    config = _config(ctx)
    if shard_id is not None:
        config.shard(shard_id)
    report = run_prune(Repository(config), shard_id, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "deleted": report.deleted,
                               "objects_deleted": report.objects_deleted,
                               "bytes_freed": report.bytes_freed, "problems": report.problems,
                               "binlog_segments": report.segments,
                               "verdicts": [{"id": v.manifest.id, "shard": v.manifest.shard,
                                             "kind": v.manifest.kind, "keep": v.keep, "reasons": v.reasons}
                                            for v in report.verdicts]}, indent=2))
    else:
        for verdict in report.verdicts:
            action = "keep  " if verdict.keep else ("would delete" if dry_run else "delete")
            click.echo(f"{action:<12} {verdict.manifest.id}  ({'; '.join(verdict.reasons)})")
        if dry_run:
            click.echo(f"prune: {len(report.to_delete)} of {len(report.verdicts)} backups would be deleted (dry run)")
        else:
            click.echo(f"prune: {len(report.deleted)} backups deleted ({report.objects_deleted} objects, "
                       f"{format_size(report.bytes_freed)})")
    if not as_json:
        for shard, count in sorted(report.segments.items()):
            click.echo(f"prune: shard {shard}: {count} binlog segments {'would be ' if dry_run else ''}deleted "
                       "(before the oldest kept backup's coordinates)")
    for problem in report.problems:
        click.echo(f"backupd: error: {problem}", err=True)
    return 1 if report.problems else 0


@cli.command("list", epilog=EXIT_CODES_HELP)
@click.option("--shard", "shard_id", help="Only this shard.")
@click.option("--binlogs", is_flag=True, help="List the binlog archive instead: per shard, its contiguous "
              "ranges (files, positions, times, GTIDs) and its gaps.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per backup (per shard "
              "with --binlogs).")
@click.pass_context
def list_backups(ctx: click.Context, shard_id: str | None, binlogs: bool, as_json: bool) -> int:
    """List committed backups (oldest first), or with --binlogs the binlog archive."""
    config = _config(ctx)
    if shard_id is not None:
        config.shard(shard_id)  # raises UsageError naming the shard
    if binlogs:
        return _list_binlogs(Repository(config), [shard_id] if shard_id else sorted(config.shards), as_json)
    repo = Repository(config)
    catalog = repo.catalog()
    entries = catalog.entries(shard_id)
    _warn_unreadable(catalog)
    chains = _chains([e.manifest for e in entries])
    suspect = _suspect_copies(repo, {e.manifest.shard for e in entries})
    if as_json:
        rows = [{**e.manifest.summary(), "found_in": e.found_in, "restores_on": chains.get(e.manifest.id),
                 "suspect": suspect.get(e.manifest.id, {})} for e in entries]
        click.echo(json.dumps(rows, indent=2))
        return 0
    header = ("ID", "SHARD", "KIND", "SNAPSHOT (UTC)", "WINDOW", "RAW", "STORED", "RATIO", "PARTS", "STORES")
    table = [header]
    for entry in _chain_order(entries, chains):
        m = entry.manifest
        if m.kind == "incremental":
            base = chains.get(m.id)
            ident = f"  +- {m.id}" if base else f"{m.id} (applies to no full)"
            window = format_duration((m.snapshot_at - m.window.since).total_seconds()) if m.window else ""
        else:
            ident, window = m.id, ""
        table.append((ident, m.shard, m.kind, m.snapshot_at.strftime("%Y-%m-%d %H:%M:%S"), window,
                      format_size(m.raw_bytes), format_size(m.stored_bytes), f"{m.compression_ratio:.2f}x",
                      str(len(m.parts)), ",".join(f"{name} ({suspect[m.id][name]})" if name in suspect.get(m.id, {})
                                                  else name for name in entry.found_in)))
    print_table(table)
    if not entries:
        click.echo("no committed backups" + (f" for shard {shard_id}" if shard_id else ""), err=True)
    return 0


def _suspect_copies(repo: Repository, shards: set[str]) -> dict[str, dict[str, str]]:
    """Per backup id, the stores where the newest audit that looked found something wrong with
    it: ``{store: "suspect (audit <time>: part-corrupt)"}``."""
    from backupd.repo.annotations import store_verdicts

    suspect: dict[str, dict[str, str]] = {}
    for shard in shards:
        stores = repo.shard(shard).stores if shard in repo.config.shards else repo.stores()
        for verdict in store_verdicts(stores, shard).values():
            for backup_id, checks in verdict.backups.items():
                suspect.setdefault(backup_id, {})[verdict.store] = verdict.describe(checks)
    return suspect


def _list_binlogs(repo: Repository, shards: list[str], as_json: bool) -> int:
    from backupd.repo.binlogs import BinlogArchive

    summaries = []
    for shard_id in shards:
        archive = BinlogArchive(repo.shard(shard_id).stores, shard_id).load()
        for problem in archive.unreadable:
            click.echo(f"backupd: warning: shard {shard_id}: binlog archive: {problem}", err=True)
        summaries.append(archive.summary())
    if as_json:
        click.echo(json.dumps(summaries, indent=2))
        return 0
    table = [("SHARD", "FROM", "TO", "FROM (UTC)", "TO (UTC)", "SEGMENTS", "FIRST GTID", "LAST GTID")]
    for summary in summaries:
        for r in summary["ranges"]:
            table.append((summary["shard"], r["from"], r["to"], r["from_time"] or "-", r["to_time"] or "-",
                          str(r["segments"]), r["first_gtid"] or "-", r["last_gtid"] or "-"))
    print_table(table)
    for summary in summaries:
        for gap in summary["gaps"]:
            click.echo(f"backupd: shard {summary['shard']}: GAP in the binlog archive: {gap}", err=True)
        if summary["segments"]:
            click.echo(f"shard {summary['shard']}: {summary['segments']} segments, "
                       f"{format_size(summary['stored_bytes'])}, archived until {summary['archived_until']}")
        else:
            click.echo(f"shard {summary['shard']}: no binlog archive", err=True)
    return 0


def _chains(manifests: list[Manifest]) -> dict[str, str]:
    """For each incremental, the full a restore would apply it to (``backupd.policy.chain``)."""
    chains = {}
    for m in manifests:
        if m.kind == "incremental":
            base = base_for(m, [f for f in manifests if f.kind == "full" and f.shard == m.shard])
            if base is not None:
                chains[m.id] = base.id
    return chains


def _chain_order(entries: list[CatalogEntry], chains: dict[str, str]) -> list[CatalogEntry]:
    """Fulls oldest first, each followed by the incrementals that restore on it."""
    ordered = []
    for entry in entries:
        if entry.manifest.kind == "full":
            ordered.append(entry)
            ordered += [e for e in entries if chains.get(e.manifest.id) == entry.manifest.id]
    return ordered + [e for e in entries if e.manifest.kind == "incremental" and e.manifest.id not in chains]


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--shard", "shard_id", help="Only this shard.")
@click.option("--verify", is_flag=True, help="Also check every copy a store holds (the provider's checksum, "
              "else its sha256) and replace the bad ones from a good copy.")
@click.option("--json", "as_json", is_flag=True, help="Print what was repaired as JSON.")
@click.pass_context
def sync(ctx: click.Context, shard_id: str | None, verify: bool, as_json: bool) -> int:
    """Make every store whole: copy the parts and manifests a store lacks (or holds at the wrong
    size), replace bad manifest copies, and with --verify bad part copies, from a good copy.
    Exit 0 only when every store is whole, 3 when something has no good copy anywhere."""
    from backupd.ops.sync import sync_stores

    config = _config(ctx)
    if shard_id is not None:
        config.shard(shard_id)
    report = sync_stores(Repository(config), shard_id, verify=verify)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for repair in report.repairs:
            click.echo(f"sync: shard {repair.shard}: {repair.describe()}")
        checked = f", {report.copies_checked} copies verified" if verify else ""
        click.echo(f"sync: {report.backups} backups checked{checked}, {report.parts_copied} parts "
                   f"({format_size(report.bytes_copied)}) and {report.manifests_copied} manifests written: "
                   f"{'every store is whole' if report.whole else 'NOT whole'}")
    for missing in report.no_good_copy:
        click.echo(f"backupd: error: {missing}", err=True)
    for problem in report.problems:
        click.echo(f"backupd: error: {problem}", err=True)
    if report.no_good_copy:
        return 3
    return 1 if report.problems else 0


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--shard", "shard_id", required=True, help="Shard id from the config.")
@click.option("--role", type=click.Choice(ROLES), default="backup",
              show_default=True, help="backup: the shard's account (shards.ID.user, on its primary and replicas); "
              "restore: a target's account (--target); replication: the shard's replication_user.")
@click.option("--target", "target_name", metavar="NAME", help="The [targets.NAME] whose account to grant "
              "(--role restore).")
@click.option("--host", "host", default="%", show_default=True, metavar="PATTERN",
              help="The account's host part: 'user'@'PATTERN'.")
@click.option("--server-version", "server_version", metavar="VENDOR-VERSION",
              help="The server's vendor and version, e.g. mariadb-10.11.6 or mysql-8.0.36 (default: ask the "
                   "shard's server, or the target's, through the configured account).")
@click.pass_context
def grants(ctx: click.Context, shard_id: str, role: Role, target_name: str | None, host: str,
           server_version: str | None) -> int:
    """Print the CREATE USER and GRANT statements of one of backupd's accounts: the privileges its
    jobs need on that server's vendor and version and no more, each with a comment saying which
    job needs it. Review them, then run them as an administrator (`... | mysql`). No clear-text
    password is printed: a configured one becomes its mysql_native_password hash."""
    from backupd.ops.grants import account_grants

    for line in account_grants(_config(ctx), shard_id, role, target_name=target_name, host=host,
                               server_version=server_version):
        click.echo(line)
    return 0


@cli.group(epilog=EXIT_CODES_HELP)
def keys() -> None:
    """Client-side encryption keys: make a key pair, list who can open the backups, rotate."""


@keys.command("generate", epilog=EXIT_CODES_HELP)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the private key (created with mode 0600; never overwritten).")
def keys_generate(out: str) -> int:
    """Write a new private key to --out and print its public key (for [encryption] recipients)."""
    import os
    from datetime import UTC, datetime

    from backupd.repo.keys import Identity, key_file_text

    identity = Identity.generate()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{out}: already exists; a key file is never overwritten") from None
    except OSError as exc:
        raise UsageError(f"{out}: cannot create: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key_file_text(identity, datetime.now(UTC)))
    click.echo(f"key id: {identity.key_id}")
    click.echo(f"public key: {identity.recipient.text}")
    click.echo(f"private key written to {out} (mode 0600): without it, what is encrypted for it cannot be "
               "restored; keep a second recipient offline", err=True)
    return 0


@keys.command("list", epilog=EXIT_CODES_HELP)
@click.option("--shard", "shard_id", help="Only this shard.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def keys_list(ctx: click.Context, shard_id: str | None, as_json: bool) -> int:
    """Every encrypted backup and binlog run, and the key ids that can open it (no key needed)."""
    from backupd.ops.keys import list_keys

    config = _config(ctx)
    if shard_id is not None:
        config.shard(shard_id)
    rows = list_keys(Repository(config), shard_id)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return 0
    table = [["UNLOCKS", "STORE", "KEY IDS"]]
    for row in rows:
        for store, ids in row["recipients"].items():
            table.append([row["unlocks"], store, ", ".join(ids) if ids else f"({row['problems'].get(store)})"])
    print_table(table)
    return 0


@keys.command("rewrap", epilog=EXIT_CODES_HELP)
@click.option("--shard", "shard_id", help="Only this shard (default: every shard).")
@click.option("--add", "add", multiple=True, metavar="PUBLIC_KEY", help="A recipient to add (repeatable).")
@click.option("--remove", "remove", multiple=True, metavar="KEY_ID",
              help="A recipient to remove, by key id or public key (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.pass_context
def keys_rewrap(ctx: click.Context, shard_id: str | None, add: tuple[str, ...], remove: tuple[str, ...],
                as_json: bool) -> int:
    """Re-wrap every backup's data key for a new set of recipients, without rewriting any data:
    first the added recipients everywhere, then the removed ones taken away. Adding needs a
    private key that opens the backups ([encryption] private_key_file). Safe to interrupt and
    run again."""
    from backupd.ops.keys import rewrap
    from backupd.repo.keys import Recipient, identities_of

    config = _config(ctx)
    if shard_id is not None:
        config.shard(shard_id)
    recipients = [Recipient.parse(text, what=f"--add {text[:24]}...") for text in add]
    removed = [Recipient.parse(text, what="--remove").key_id if text.startswith("backupd-pub-") else text
               for text in remove]
    for key_id in removed:
        if not re.fullmatch(r"[0-9a-f]{16}", key_id):
            raise UsageError(f"--remove {key_id}: not a key id (16 hex digits) or a public key")
    report = rewrap(Repository(config), shard_id, add=recipients, remove=removed,
                    identities=identities_of(config.encryption) if recipients else [])
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(f"keys: {len(report.rewrapped)} key objects now for +{', '.join(report.added) or 'nobody'} "
                   f"-{', '.join(report.removed) or 'nobody'}" if not report.problems else
                   "keys: rewrap NOT complete")
    for problem in report.problems:
        click.echo(f"backupd: error: {problem}", err=True)
    return 1 if report.problems else 0


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--shard", "shard_id", help="Only this shard.")
@click.option("--store", "store_name", help="Only this store.")
@click.option("--level", type=click.Choice(["quick", "deep", "drill"]), default="quick", show_default=True,
              help="quick: listings and manifests only; deep: also download and check every part; "
                   "drill: restore each shard's newest chain into the [drill] target and verify it.")
@click.option("--sample", type=float, default=100.0, show_default=True, metavar="PERCENT",
              help="deep: read this share of the parts (a window that moves daily, so repeated "
                   "audits cover everything).")
@click.option("--heads", is_flag=True, help="Also HEAD every part copy in stores whose provider keeps a "
              "checksum: a copy listed but no longer served is found, and S3 with SSE-KMS reports its sha256 "
              "(one request per copy, no download).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def audit(ctx: click.Context, shard_id: str | None, store_name: str | None, level: str, sample: float,
          heads: bool, as_json: bool) -> int:
    """Check that every committed backup is whole, restorable and fresh (exit 3 on any finding)."""
    from backupd.ops.audit import record_audit, run_audit

    config = _config(ctx)
    repo = Repository(config)
    if level == "drill":
        return _drill(repo, shard_id, as_json)
    report = run_audit(repo, shard=shard_id, store=store_name, level=level, sample=sample, heads=heads)
    record_audit(repo, report)
    _publish(config, [report])
    if as_json:
        click.echo(encode(report))
    else:
        read = (f", {format_size(report.bytes_read)} read and checked at "
                f"{format_size(report.throughput)}/s" if level == "deep" else "")
        sampled = f", {report.sample_percent:g}% sample" if report.sample_percent < 100 else ""
        click.echo(f"audit ({level}{sampled}): {len(report.shards)} shard(s), {report.backups} backup(s), "
                   f"{report.parts_checked} part copies in {len(report.stores)} store(s)"
                   f"{f', {report.heads} HEADs' if heads else ''}{read} in "
                   f"{format_duration(report.seconds)}: "
                   f"{'everything holds' if report.ok else f'{len(report.findings)} finding(s)'}")
        if report.findings:
            rows = [("CHECK", "SHARD", "BACKUP", "STORE", "PART", "WHAT")]
            rows += [(f.check, f.shard or "-", f.backup or "-", f.store or "-",
                      f.part.rsplit("/", 1)[-1] if f.part else "-", f.message) for f in report.findings]
            print_table(rows)
            for hint in dict.fromkeys(f.hint for f in report.findings if f.hint):
                click.echo(f"  hint: {hint}")
    return 0 if report.ok else 3


def _audit_cell(audit: dict[str, Any] | None) -> str:
    if not audit:
        return "never"
    verdict = "ok" if audit.get("ok") else f"{audit.get('findings')} finding(s)"
    return f"{verdict} {audit.get('at', '?')} ({audit.get('sample_percent', 100):g}%)"


def _drill_cell(drill: dict[str, Any] | None) -> str:
    if not drill:
        return "never"
    verdict = "verified" if drill.get("verified") else "FAILED"
    return f"{verdict} {drill.get('at', '?')} ({format_duration(float(drill.get('seconds', 0)))})"


def _drill(repo: Repository, shard_id: str | None, as_json: bool) -> int:
    from restore.drill import drill_target, run_drill

    config = repo.config
    drill_target(repo)
    if shard_id:
        config.shard(shard_id)
    shards = [shard_id] if shard_id else sorted(config.shards)
    results = [run_drill(repo, shard) for shard in shards]
    outcome = DrillOutcome(results)
    _publish(config, [outcome])
    if as_json:
        click.echo(encode(outcome))
    else:
        for r in results:
            verdict = "VERIFIED" if r.verified else f"FAILED: {r.failure}"
            click.echo(f"drill: shard {r.shard} -> target {r.target}: {' + '.join(r.chain) or '-'} restored in "
                       f"{format_duration(r.seconds)}: {verdict}")
    failed = [r for r in results if not r.verified]
    return max((r.exit_code for r in failed), default=0) if failed else 0


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--shard", "shard_id", help="Only this shard.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per shard.")
@click.pass_context
def status(ctx: click.Context, shard_id: str | None, as_json: bool) -> int:
    """Per shard: newest full and incremental (age, size, ratio), where they are, what is due next."""
    from backupd.ops.status import restorable_until, shard_status

    config = _config(ctx)
    shards = [shard_id] if shard_id else sorted(config.shards)
    if shard_id:
        config.shard(shard_id)
    catalog = Repository(config).catalog()
    rows = [shard_status(config, catalog, s) for s in shards]
    catalog.require_a_listing()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return 0
    table = [("SHARD", "METHOD", "NEWEST FULL", "AGE", "SIZE", "RATIO", "NEWEST INCR", "AGE", "STORES", "NEXT",
              "LAST DRILL", "LAST DEEP AUDIT", "BINLOGS UNTIL", "RPO")]
    for row in rows:
        full, inc = row["newest_full"], row["newest_incremental"]
        table.append((row["shard"], row["method"], full["id"] if full else "none",
                      format_duration(full["age_seconds"]) if full else "-",
                      format_size(full["stored_bytes"]) if full else "-",
                      f"{full['compression_ratio']:.2f}x" if full else "-",
                      inc["id"] if inc else "none", format_duration(inc["age_seconds"]) if inc else "-",
                      ", ".join(row["stores_complete"]) + (f" (degraded: {', '.join(row['stores_degraded'])})"
                                                           if row["stores_degraded"] else "")
                      + "".join(f" ({name}: {why})" for name, why in row["stores_suspect"].items()),
                      row["next_due"], _drill_cell(row["last_drill"]), _audit_cell(row["last_deep_audit"]),
                      *_binlog_cells(row["binlogs"])))
    print_table(table)
    until, holding = restorable_until(rows)
    if until is not None:
        click.echo(f"fleet: restorable_until {until} (every archived shard can be restored to any instant up to "
                   f"then; shard {holding} is the oldest)")
    elif holding is not None:
        click.echo(f"fleet: restorable_until none: shard {holding} has archived no binlogs yet")
    _warn_unreadable(catalog)
    return 0


def _binlog_cells(binlogs: dict[str, Any] | None) -> tuple[str, str]:
    if binlogs is None:
        return "-", "-"
    if binlogs["archived_until"] is None:
        return ("nothing yet" if binlogs["enabled"] else "-"), "-"
    return binlogs["archived_until"], format_duration(binlogs["rpo_seconds"])


def _warn_unreadable(catalog: Catalog) -> None:
    """Name every store that could not be listed and every manifest that could not be read (one
    line each; the command goes on with the rest), or fail if no store could be listed."""
    catalog.require_a_listing()
    for bad in catalog.unreadable:
        click.echo(f"backupd: warning: {bad.describe()}", err=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``backupd`` console script; returns the exit code."""
    from backupd.children import exit_with_parent

    exit_with_parent()
    return run_cli("backupd", cli, argv)


if __name__ == "__main__":
    sys.exit(main())
