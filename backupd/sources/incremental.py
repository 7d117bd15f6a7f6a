"""Logical incrementals: the rows changed in a time window, plus what removes deleted rows.

An incremental is taken in one consistent snapshot (the same hand-off as a full: every
connection and every mysqldump run opens its snapshot while commits are blocked). For each base
table it carries either

* ``changed`` (the table has the change column, a primary key, and the same definition as in
  the base full): first, SQL that deletes every row whose primary key is not live at the
  snapshot (the live keys are sent as the gaps between runs of consecutive integer keys, or as
  a list of keys in a temporary table for other keys), then every row whose change column is
  at or after the window's start, as ``REPLACE`` (an upsert by key); or
* ``whole`` (no change column, no primary key, or a new or changed definition): the table is
  dropped, re-created and copied whole.

Rows of tables with FLOAT columns are written by the server itself on a snapshot connection
(``backupd.mysql.exact_rows``: mysqldump would write them inexactly): ``REPLACE`` statements
after the deletes for ``changed`` tables, spliced into the whole tables' run for ``whole`` ones.

Views follow with the whole tables; triggers, routines and events (re-created by the restore,
which drops them first so that applying the rows never fires a trigger) come last. Applied to
a full whose snapshot lies inside the window, the stream yields exactly the state at the
incremental's snapshot, deletes included; the restore proves it against the incremental's own
per-table reference (row counts and digests at its snapshot).

The window is ``incremental_window`` back from the snapshot, extended back to the base full's
snapshot (minus ``LONG_TRANSACTION_MARGIN``) when the base is older, so an incremental always
applies to its base. A row's change column is compared in the server's clock: DATETIME columns
against the server's default time zone (what ``NOW()`` writes), TIMESTAMP columns in UTC.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import pymysql

from backupd.config import Settings
from backupd.errors import SourceError
from backupd.mysql.connection import query, quote_identifier
from backupd.mysql.dump import DumpProcess, create_database_sql
from backupd.mysql.exact_rows import exact_rows, needs_exact_rows
from backupd.mysql.object_privileges import check_sees_every_object
from backupd.mysql.reference import TableInfo, list_tables
from backupd.mysql.snapshot import ReferenceScanner, SnapshotInfo, SnapshotSession
from backupd.repo.model import Incremental, Manifest, TableChange, Window
from backupd.repo.repository import Shard
from backupd.sources.base import SourceResult
from backupd.sources.dump_sections import (
    DataEnd,
    DataStart,
    DumpSplitter,
    Event,
    SectionStart,
    data_line,
    run_events,
    structure_line,
)
from backupd.sources.exact_splice import exact_splicer
from backupd.sources.live_keys import batched, delete_statements

log = logging.getLogger(__name__)

LONG_TRANSACTION_MARGIN = timedelta(hours=1)
TEMPORAL_TYPES = frozenset({"datetime", "timestamp"})
_LITERAL_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def change_column_for(table: str, rules: Mapping[str, str]) -> str:
    """The change column configured for ``db.table``: the first matching pattern wins, "" when
    none matches or the rule says "" (copy whole)."""
    for pattern, column in rules.items():
        if fnmatch.fnmatchcase(table, pattern):
            return column
    return ""


def plan_tables(tables: list[TableInfo], base: Manifest, rules: Mapping[str, str]) -> list[TableChange]:
    """How the incremental carries each table (pure; see the module docstring)."""
    in_base = {(t.database, t.table): t.schema_digest for t in base.reference.tables}
    plan = []
    for table in tables:
        name = table.name
        column_name = change_column_for(name, rules)
        column = table.column(column_name) if column_name else None
        key = (table.database, table.table)
        reason = None
        if not column_name:
            reason = "no change column configured"
        elif column is None:
            reason = f"no column {column_name}"
        elif column.data_type not in TEMPORAL_TYPES:
            reason = f"column {column.name} is {column.data_type.upper()}, not DATETIME/TIMESTAMP"
        elif not table.primary_key:
            reason = "no primary key"
        elif key not in in_base:
            reason = "new since the base full"
        elif in_base[key] is None:
            reason = "the base full has no definition fingerprint"
        elif in_base[key] != table.schema_digest:
            reason = "definition changed since the base full"
        if reason:
            plan.append(TableChange(database=table.database, table=table.table, mode="whole", reason=reason))
        else:
            assert column is not None
            plan.append(TableChange(database=table.database, table=table.table, mode="changed",
                                    column=column.name))
    return plan


def window_start(snapshot_at: datetime, window: timedelta, base: Manifest) -> datetime:
    """The window reaches ``window`` back, and at least to the base full (minus the margin)."""
    return min(snapshot_at - window, base.snapshot_at - LONG_TRANSACTION_MARGIN)


class IncrementalSource:
    """An incremental of one shard against its base full (see the module docstring)."""

    method = "mysqldump"

    def __init__(self, shard: Shard, settings: Settings, *, base: Manifest, window: float,
                 columns: Mapping[str, str]):
        self.shard = shard
        self.settings = settings
        self.base = base
        self.window = timedelta(seconds=window)
        self.columns = columns

    @contextmanager
    def open(self) -> Iterator[IncrementalStream]:
        with SnapshotSession(self.shard, mysqldump=self.settings.mysqldump,
                             work_dir=self.settings.work_dir, snapshot_connections=3) as session:
            label = session.label
            databases = session.databases()
            check_sees_every_object(session.control, session.server, databases, label=label)
            tables = list_tables(session.control, databases, label=label)
            plan = plan_tables(tables, self.base, self.columns)
            whole = [c.name for c in plan if c.mode == "whole"]
            if whole:
                log.info("%s: %d of %d tables are copied whole in incrementals: %s", label,
                         len(whole), len(plan), _summarize(plan))
            window: list[Window] = []
            runs: list[IncrementalRun] = []
            wheres: dict[str, str] = {}

            def commands(info: SnapshotInfo) -> list[list[str]]:
                since = window_start(info.snapshot_at, self.window, self.base)
                window.append(Window(since=since, until=info.snapshot_at))
                wheres.update(change_conditions(tables, plan, info, info.snapshot_at - since))
                runs.extend(plan_runs(tables, plan, wheres))
                return [run.args(session.common_args()) for run in runs]

            info, dumps = session.open_dumps(commands)
            keys_conn = session.snapshots[1]
            seen = list_tables(keys_conn, databases, label=label)
            if [(t.name, t.schema_digest) for t in seen] != [(t.name, t.schema_digest) for t in tables]:
                raise SourceError(f"{label}: table definitions changed while the incremental was "
                                  "starting; refusing it", hint="the next run will pick the new definitions up")
            # An incremental's dump is small: its reference (a full scan of every table) is the
            # long pole, so it runs on two connections (the shard's two cores, say) at once.
            scanner = session.scan_reference(databases, tables=seen, connections=[0, 2])
            by_name = {t.name: t for t in tables}
            exact_changed = [(by_name[name], where) for name, where in wheres.items()
                             if needs_exact_rows(by_name[name])]
            creates = [(d, create_database_sql(session.control, d, label=label)) for d in databases]
            later = self._object_runs(session, databases, tables)
            yield IncrementalStream(session, list(zip(runs, dumps, strict=True)), later, scanner, keys_conn,
                                    creates, databases, info, Incremental(window=window[0], tables=plan),
                                    exact_changed=exact_changed)

    def _object_runs(self, session: SnapshotSession, databases: list[str],
                     tables: list[TableInfo]) -> list[list[str]]:
        """mysqldump runs for views, then triggers, routines and events. Their definitions are
        not versioned by snapshots, so these runs start after the data, outside the hand-off."""
        uncoordinated = session.common_args(coordinates=False)
        return [
            uncoordinated + ["--no-data", "--skip-triggers",
                             *[f"--ignore-table={t.name}" for t in tables], "--databases", *databases],
            uncoordinated + ["--no-create-info", "--no-data", "--triggers", "--routines", "--events",
                             "--databases", *databases],
        ]


RunKind = Literal["changed", "whole", "whole-exact"]


@dataclass(frozen=True)
class IncrementalRun:
    """One mysqldump run of an incremental, over tables of one database in a known order:
    ``changed`` (their rows in the window, as REPLACE), ``whole`` (structure and rows) or
    ``whole-exact`` (structure only: backupd writes the rows of these FLOAT tables itself)."""

    kind: RunKind
    database: str
    tables: tuple[TableInfo, ...]
    where: str | None = None

    def args(self, common: list[str]) -> list[str]:
        names = [t.table for t in self.tables]
        if self.kind == "changed":
            return [*common, "--no-create-info", "--replace", "--skip-triggers", f"--where={self.where}",
                    self.database, *names]
        rows = ["--where=1=0"] if self.kind == "whole-exact" else []
        return [*common, "--skip-triggers", *rows, self.database, *names]


def plan_runs(tables: list[TableInfo], plan: list[TableChange], wheres: dict[str, str]) -> list[IncrementalRun]:
    """The incremental's mysqldump runs (pure): the changed tables grouped by condition and
    database, then the whole tables by database (FLOAT tables apart); changed FLOAT tables have
    no run (their rows are written exactly)."""
    by_name = {t.name: t for t in tables}
    groups: dict[tuple[RunKind, str, str | None], list[TableInfo]] = {}
    for name, where in wheres.items():
        table = by_name[name]
        if not needs_exact_rows(table):
            groups.setdefault(("changed", table.database, where), []).append(table)
    for change in plan:
        if change.mode == "whole":
            table = by_name[change.name]
            kind: RunKind = "whole-exact" if needs_exact_rows(table) else "whole"
            groups.setdefault((kind, table.database, None), []).append(table)
    return [IncrementalRun(kind, database, tuple(group), where)
            for (kind, database, where), group in groups.items()]


def change_conditions(tables: list[TableInfo], plan: list[TableChange], info: SnapshotInfo,
                      back: timedelta) -> dict[str, str]:
    """The ``WHERE`` condition selecting each ``changed`` table's rows in the window, by name."""
    by_name = {t.name: t for t in tables}
    wheres = {}
    for change in plan:
        if change.mode == "changed":
            assert change.column is not None
            column = by_name[change.name].column(change.column)
            assert column is not None
            # mysqldump's session is in UTC (--tz-utc): TIMESTAMPs compare in UTC, DATETIMEs
            # hold what the application's NOW() wrote, in the server's time zone.
            moment = (info.server_utc if column.data_type == "timestamp" else info.server_local) - back
            wheres[change.name] = f"{quote_identifier(column.name)} >= '{moment.strftime(_LITERAL_FORMAT)}'"
    return wheres


def list_views(conn: pymysql.connections.Connection, databases: list[str], *, label: str) -> list[str]:
    """``db.view`` names of the views in ``databases``."""
    marks = ", ".join(["%s"] * len(databases))
    rows = query(conn, f"SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.VIEWS "
                       f"WHERE TABLE_SCHEMA IN ({marks})", databases, label=label)
    return sorted(f"{d}.{v}" for d, v in rows)


class IncrementalStream:
    """The incremental's sections: the preamble, its databases, one section per table (the
    deletes then the changed rows, or the whole table), then views, triggers, routines and
    events (``objects``)."""

    def __init__(self, session: SnapshotSession, runs: list[tuple[IncrementalRun, DumpProcess]],
                 later: list[list[str]], scanner: ReferenceScanner, keys_conn: pymysql.connections.Connection,
                 creates: list[tuple[str, bytes]], databases: list[str], info: SnapshotInfo,
                 incremental: Incremental, *, exact_changed: list[tuple[TableInfo, str]]):
        self.session = session
        self.runs = runs
        self.later = later
        self.scanner = scanner
        self.keys_conn = keys_conn
        self.creates = creates
        self.databases = databases
        self.info = info
        self.incremental = incremental
        self.exact_changed = exact_changed

    def streams(self) -> list[Iterator[Event]]:
        return [self._events()]

    def _events(self) -> Iterator[Event]:
        label = self.session.label
        window = self.incremental.window
        yield SectionStart("preamble")
        yield (f"-- backupd incremental of shard {self.session.shard.id}: rows changed since "
               f"{window.since.isoformat()} up to the snapshot at {window.until.isoformat()}\n"
               "SET NAMES utf8mb4;\nSET SESSION FOREIGN_KEY_CHECKS=0;\nSET SESSION UNIQUE_CHECKS=0;\n"
               "SET SESSION time_zone='+00:00';\nSET SESSION sql_mode='NO_AUTO_VALUE_ON_ZERO';\n").encode()
        for database, statement in self.creates:
            yield SectionStart("database", database)
            yield statement
        for table, where in self.exact_changed:
            yield SectionStart("table", table.database, table.table)
            yield DataStart()
            yield from batched(delete_statements(self.keys_conn, table, label=label))
            yield from exact_rows(self.keys_conn, table, label=label, where=where, verb="REPLACE")
            yield DataEnd()
        for run, dump in self.runs:
            by_table = {t.table: t for t in run.tables}
            splitter = DumpSplitter(run.database, list(by_table), preamble=False, label=label,
                                    boundary=data_line if run.kind == "changed" else structure_line)
            splicer = exact_splicer(self.keys_conn, run.tables, label=label, database=run.database) \
                if run.kind == "whole-exact" else None
            yield from self._with_deletes(run, run_events(dump.chunks(), splitter, splicer), by_table)

    def _with_deletes(self, run: IncrementalRun, events: Iterator[Event],
                      tables: dict[str, TableInfo]) -> Iterator[Event]:
        """A changed table's section starts with the deletes of the rows gone since the full."""
        for event in events:
            yield event
            if run.kind == "changed" and isinstance(event, SectionStart) and event.table:
                yield DataStart()  # an incremental's changed table has no structure: deletes, then rows
                yield from batched(delete_statements(self.keys_conn, tables[event.table], label=self.session.label))

    def objects(self) -> Iterator[Event]:
        yield SectionStart("objects")
        for args in self.later:
            yield from self.session.start_dump(args).chunks()

    def abort(self) -> None:
        for _, dump in self.runs:
            dump.reap()

    def result(self) -> SourceResult:
        reference = self.scanner.join()
        for _, dump in self.runs:
            dump.check_trailer_gtid(self.info.coordinates)
        return SourceResult(method=IncrementalSource.method, databases=self.databases,
                            snapshot_at=self.info.snapshot_at, coordinates=self.info.recorded,
                            taken_from=self.info.taken_from,
                            server=self.session.server, reference=reference,
                            tool_versions=self.session.tool_versions, incremental=self.incremental)


def _summarize(plan: list[TableChange], limit: int = 8) -> str:
    whole = [c for c in plan if c.mode == "whole"]
    text = ", ".join(f"{c.name} ({c.reason})" for c in whole[:limit])
    return text + (f" and {len(whole) - limit} more" if len(whole) > limit else "")
