"""Restoring chosen tables of a table-addressed backup into a target that may be live.

``restore --table DB.TABLE`` (repeatable; shell-style patterns such as ``app.bucket_05*``)
touches nothing but those tables: no database is dropped and no other table is read or written.
Each table is loaded, without its triggers, into a scratch database (``backupd_restore_<id>``,
created for the restore and dropped after it), verified there against the backup's reference of
that table (rows and digest, exact for FLOAT), and only then moved into place:

* the table does not exist on the target: ``RENAME TABLE scratch.t TO db.t``;
* it exists: refused (``TargetNotEmpty``) unless ``--force``, which swaps in one atomic
  ``RENAME TABLE db.t TO db.<old>, scratch.t TO db.t`` (a reader sees the old table or the new
  one, never none or a half-loaded one), then drops the old copy (its triggers go with it);
* ``--as DB.NEW``: the table is restored beside the original, under the new name.

The table's triggers are then created on the restored table (not with ``--as``: they would
fire on the copy and their names belong to the original's). Between the swap and that moment
(milliseconds) the table has no triggers. Tables with foreign keys are refused with ``--force``:
InnoDB would move the references to the old copy.

A chain of a full and an incremental is restored the same way: the table's section of the full,
then the incremental's (its deletes and changed rows, or the whole table), both into the scratch
database, verified against the incremental's reference. The triggers are the full's. Only
table-addressed logical chains (format 4) can be restored this way: a physical backup or an
older format is refused with a usage error (exit 2).

To a point in time (``replay_plan``, ``restore.replay``): once the scratch copies are verified
against the chain's reference, the archived binlogs from the chain's coordinates to the point
are replayed into them, only their own rows events (``backupd.mysql.binlog_filter``), before
anything is moved into place. A table with foreign keys is refused there (exit 2): InnoDB's
cascades are not in the binlog. A change the rows events do not show (statement-logged data,
DDL on the table) stops the restore with the target untouched.
"""

from __future__ import annotations

import fnmatch
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pymysql

from backupd.config import Settings
from backupd.errors import DataMismatch, TargetNotEmpty, UsageError
from backupd.mysql.connection import connect, query, quote_identifier
from backupd.mysql.reference import MD5_SUM64, list_tables, table_reference
from backupd.policy.planner import RestorePlan
from backupd.progress import Progress
from backupd.repo.fetch import PartFetcher
from backupd.repo.model import Manifest, Section
from backupd.repo.repository import Target
from restore.parallel import LoadProgress, SectionLoader
from restore.replay import ReplayPlan, ReplayReport, replay
from restore.verify import TableCheck

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableResult:
    source: str  # db.table in the backup
    restored_as: str  # db.table on the target
    replaced: bool  # an existing table was swapped out (--force)
    rows: int
    triggers: int  # how many triggers the restored table has


@dataclass(frozen=True)
class TablesReport:
    manifest: Manifest  # the newest backup of the chain: the tables are as of its snapshot
    target: str
    tables: list[TableResult]
    seconds: float
    chain: list[str]
    replay: ReplayReport | None = None  # to a point in time: the binlogs replayed after the verified chain

    def to_json(self) -> dict[str, object]:
        return {"backup": self.manifest.id, "chain": self.chain, "shard": self.manifest.shard, "target": self.target,
                "snapshot_at": self.manifest.snapshot_at.isoformat().replace("+00:00", "Z"),
                "verified": True, "seconds": round(self.seconds, 3),
                "replay": self.replay.to_json() if self.replay is not None else None,
                "tables": [{"table": t.source, "restored_as": t.restored_as, "replaced": t.replaced,
                            "rows": t.rows, "triggers": t.triggers} for t in self.tables]}


def parse_table_name(text: str, option: str) -> tuple[str, str]:
    database, dot, table = text.strip().partition(".")
    if not dot or not database or not table:
        raise UsageError(f"{option}: {text!r} is not DB.TABLE")
    return database, table


def select_tables(manifest: Manifest, patterns: Sequence[str]) -> list[Section]:
    """The table sections matching ``patterns`` (shell-style on ``db.table``); a pattern that
    matches nothing is a UsageError naming it."""
    tables = [s for s in manifest.sections or [] if s.kind == "table"]
    chosen: dict[str, Section] = {}
    for pattern in patterns:
        parse_table_name(pattern, "--table")
        found = [s for s in tables if fnmatch.fnmatchcase(s.name, pattern.strip())]
        if not found:
            raise UsageError(f"--table {pattern}: no such table in backup {manifest.id} of shard {manifest.shard}")
        chosen.update((s.name, s) for s in found)
    return sorted(chosen.values(), key=lambda s: s.name)


def check_chain(plan: RestorePlan) -> list[Manifest]:
    """The backups (a full, then an incremental) whose tables can be restored alone, or a
    UsageError saying why not."""
    full = plan.full
    if full.is_physical:
        raise UsageError(f"backup {full.id} of shard {full.shard} is physical ({full.method}): restoring single "
                         "tables needs a logical backup", hint="take one with method = \"mysqldump\", or restore "
                                                                "the whole shard elsewhere and copy the table")
    for step in plan.steps:
        if not step.is_table_addressed:
            raise UsageError(f"backup {step.id} of shard {step.shard} predates table-addressed backups (format 4): "
                             "its tables cannot be restored alone",
                             hint="restore the whole shard elsewhere, or take a new full")
    return plan.steps


def restore_tables(settings: Settings, target: Target, plan: RestorePlan, patterns: Sequence[str], *,
                   rename_to: tuple[str, str] | None, force: bool, jobs: int,
                   replay_plan: ReplayPlan | None = None) -> TablesReport:
    """Restore the tables matching ``patterns`` (see the module docstring), then, with
    ``replay_plan`` (made for the plan's last backup), replay their binlog changes to its point.
    Raises UsageError, TargetNotEmpty, CorruptPart, RestoreFailed (``TableReplayRefused``) or
    DataMismatch (exit 3); on any of them nothing has been moved into place."""
    started = time.monotonic()
    steps = check_chain(plan)
    manifest, final = steps[0], steps[-1]
    sections = select_tables(manifest, patterns)
    later = [(step, _sections_in(step, sections)) for step in steps[1:]]
    if rename_to is not None and len(sections) != 1:
        raise UsageError(f"--as names one table, but --table matched {len(sections)}: "
                         f"{', '.join(s.name for s in sections[:5])}")
    destinations = {s.name: rename_to or (s.database or "", s.table or "") for s in sections}
    target.keys.require(steps, replay_plan.records if replay_plan is not None else ())  # before the target is touched
    conn = connect(target.config, label=target.label, read_timeout=None)
    try:
        if not target.config.write_binlog:
            query(conn, "SET SESSION sql_log_bin = 0", label=target.label)
        existing = _check_destinations(conn, target, destinations, force=force)
        fetcher = PartFetcher(target.stores, manifest.id, [p for s in sections for p in manifest.section_parts(s)],
                              opener=target.keys.opener(manifest))
        fetcher.preflight()
        fetchers = [PartFetcher(target.stores, step.id, [p for s in chosen for p in step.section_parts(s)],
                                opener=target.keys.opener(step))
                    for step, chosen in later]
        for later_fetcher in fetchers:
            later_fetcher.preflight()
        scratch = f"backupd_restore_{secrets.token_hex(4)}"
        _create_databases(conn, target, {d for d, _ in destinations.values()} | {scratch})
        try:
            _load(settings, target, manifest, fetcher, sections, scratch, jobs, data_only=True)
            for (step, chosen), step_fetcher in zip(later, fetchers, strict=True):
                _load(settings, target, step, step_fetcher, chosen, scratch, jobs, data_only=False)
            rows = _verify(conn, target, final, sections, scratch)
            replayed = None
            if replay_plan is not None:
                _refuse_foreign_keys(conn, target, sections, scratch)
                replayed = replay(settings, target, replay_plan,
                                  {(s.database or "", s.table or ""): (scratch, s.table or "") for s in sections})
                rows = {s.name: _count(conn, target, scratch, s) for s in sections}
            results = []
            for section in sections:
                results.append(_move_into_place(settings, target, conn, manifest, fetcher, section, scratch,
                                                destinations[section.name], existing, rows[section.name],
                                                triggers=rename_to is None))
        finally:
            query(conn, f"DROP DATABASE IF EXISTS {quote_identifier(scratch)}", label=target.label)
    finally:
        conn.close()
    return TablesReport(final, target.name, results, time.monotonic() - started, [step.id for step in steps],
                        replayed)


def _refuse_foreign_keys(conn: pymysql.connections.Connection, target: Target, sections: list[Section],
                         scratch: str) -> None:
    """A table that references another cannot be replayed alone: the binlog does not hold the
    changes InnoDB cascades to it."""
    for section in sections:
        found = query(conn, "SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE "
                            "CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s", (scratch, section.table), label=target.label)
        if found[0][0]:
            raise UsageError(f"{section.name} has foreign keys: its changes cascaded from other tables are not in "
                             "the binlog, so it cannot be taken to a point in time alone",
                             hint="restore it to a backup's own point (--backup, or --at with --to-backup), or "
                                  "restore the whole shard to another target with --at")


def _count(conn: pymysql.connections.Connection, target: Target, scratch: str, section: Section) -> int:
    table = f"{quote_identifier(scratch)}.{quote_identifier(section.table or '')}"
    return int(query(conn, f"SELECT COUNT(*) FROM {table}", label=target.label)[0][0])


def _check_destinations(conn: pymysql.connections.Connection, target: Target,
                        destinations: dict[str, tuple[str, str]], *, force: bool) -> set[str]:
    """The source names whose destination exists; refuses them without ``force``, and with it
    those in a foreign key."""
    existing = set()
    for name, (database, table) in destinations.items():
        found = query(conn, "SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND "
                            "TABLE_NAME = %s", (database, table), label=target.label)
        if not found:
            continue
        if found[0][0] != "BASE TABLE" or not force:
            raise TargetNotEmpty(f"{target.label} already has {str(found[0][0]).lower()} {database}.{table}; "
                                 "refusing to overwrite it",
                                 hint="--force replaces it atomically; --as DB.NEWNAME restores beside it")
        keys = query(conn, "SELECT COUNT(*) FROM information_schema.KEY_COLUMN_USAGE WHERE "
                           "REFERENCED_TABLE_NAME IS NOT NULL AND ((TABLE_SCHEMA = %s AND TABLE_NAME = %s) OR "
                           "(REFERENCED_TABLE_SCHEMA = %s AND REFERENCED_TABLE_NAME = %s))",
                     (database, table, database, table), label=target.label)
        if keys[0][0]:
            raise TargetNotEmpty(f"{target.label}: {database}.{table} has foreign keys; --force cannot swap it "
                                 "safely", hint="restore it with --as DB.NEWNAME and move the rows yourself")
        existing.add(name)
    return existing


def _create_databases(conn: pymysql.connections.Connection, target: Target, databases: set[str]) -> None:
    for database in sorted(databases):
        query(conn, f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}", label=target.label)


def _sections_in(step: Manifest, sections: list[Section]) -> list[Section]:
    """``step``'s sections of the chosen tables; a table it does not hold did not exist at its snapshot."""
    held = {s.name: s for s in step.sections or [] if s.kind == "table"}
    missing = [s.name for s in sections if s.name not in held]
    if missing:
        raise UsageError(f"table {missing[0]} no longer exists at incremental {step.id}'s snapshot "
                         f"({step.snapshot_at.isoformat()})",
                         hint=f"--backup {step.parent_id} restores it as of the full")
    return [held[s.name] for s in sections]


def _load(settings: Settings, target: Target, manifest: Manifest, fetcher: PartFetcher, sections: list[Section],
          scratch: str, jobs: int, *, data_only: bool) -> None:
    load = LoadProgress(total=len(sections))
    raw = sum((s.data_end or 0) if data_only else s.raw_bytes for s in sections)
    with Progress(f"{target.label}: loading {len(sections)} table(s) of {manifest.id}", raw) as progress:
        loader = SectionLoader(settings, target, manifest, fetcher, verifier=None, jobs=jobs, progress=progress,
                               rename=lambda _: scratch)
        try:
            loader.load_tables(sections, load, data_only=data_only)
        except BaseException as exc:
            if hasattr(exc, "hint"):
                exc.hint = (f"{target.label} is untouched: the tables were being loaded into scratch database "
                            f"{scratch}, which is dropped ({load.describe()})")
            raise


def _verify(conn: pymysql.connections.Connection, target: Target, manifest: Manifest, sections: list[Section],
            scratch: str) -> dict[str, int]:
    """Each loaded table against its own reference; DataMismatch (nothing moved) when one differs."""
    reference = manifest.reference
    expected = {t.name: t for t in reference.tables}
    rows: dict[str, int] = {}
    failures = []
    for section in sections:
        want = expected.get(section.name)
        found = list_tables(conn, [scratch], label=target.label, table=section.table)
        if want is None or not found:
            failures.append(f"{section.name}: {'not in the backup reference' if want is None else 'not loaded'}")
            continue
        got = table_reference(conn, found[0], reference.mode, label=target.label,
                              algorithm=reference.digest_algorithm or MD5_SUM64)
        check = TableCheck(want, got)  # the same comparison as a whole restore's
        if not check.ok:
            failures.append(check.describe())
        rows[section.name] = got.rows
    if failures:
        raise DataMismatch(f"target {target.name}: restored table differs from backup {manifest.id}: {failures[0]}; "
                           "nothing was moved into place", detail="\n".join(failures))
    return rows


def _move_into_place(settings: Settings, target: Target, conn: pymysql.connections.Connection, manifest: Manifest,
                     fetcher: PartFetcher, section: Section, scratch: str, destination: tuple[str, str],
                     existing: set[str], rows: int, *, triggers: bool) -> TableResult:
    database, table = destination
    loaded = f"{quote_identifier(scratch)}.{quote_identifier(section.table or '')}"
    final = f"{quote_identifier(database)}.{quote_identifier(table)}"
    replaced = section.name in existing
    if replaced:
        old = f"{quote_identifier(database)}.{quote_identifier(f'backupd_old_{secrets.token_hex(4)}')}"
        query(conn, f"RENAME TABLE {final} TO {old}, {loaded} TO {final}", label=target.label)
        log.info("%s: %s swapped in (restored from %s); dropping the old copy", target.label, final, manifest.id)
        query(conn, f"DROP TABLE {old}", label=target.label)
    else:
        query(conn, f"RENAME TABLE {loaded} TO {final}", label=target.label)
    created = 0
    if triggers and section.data_end is not None and section.raw_bytes > section.data_end:
        with Progress(f"{target.label}: triggers of {database}.{table}", None) as progress:
            SectionLoader(settings, target, manifest, fetcher, verifier=None, jobs=1, progress=progress) \
                .load_in_order([section], start=section.data_end)
        created = int(query(conn, "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = %s "
                                  "AND EVENT_OBJECT_TABLE = %s", (database, table), label=target.label)[0][0])
    return TableResult(section.name, f"{database}.{table}", replaced, rows, created)
