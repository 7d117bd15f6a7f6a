"""Table-addressed logical fulls: every table in parts of its own, dumped by parallel streams
that all see one snapshot.

The base tables are spread over ``dump_streams`` streams, largest first, each to the stream
with the fewest bytes so far, and each stream dumps its tables largest first. A stream is one
mysqldump run per database it has tables of (``mysqldump ... db t1 t2``); every run is started
inside the snapshot hand-off (``backupd.mysql.snapshot``), so all of them, and the reference
connection, see the same data, and each must print the same binlog coordinates. Tables with
FLOAT columns have their rows written exactly (``backupd.mysql.exact_rows``) on a snapshot
connection of their own, spliced in where mysqldump would have written them.

The stream's output is events (``backupd.sources.dump_sections``): the first producer starts
with the preamble and one ``CREATE DATABASE`` section per database, then every table's section
(structure, rows, triggers). After the data, each database's views, procedures, functions and
events are dumped by one more run (``objects``); their definitions are not versioned by
snapshots, so that run starts after the data, outside the hand-off, as in the incremental.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pymysql

from backupd.config import Settings
from backupd.errors import SourceError
from backupd.mysql.connection import query
from backupd.mysql.dump import DumpProcess, create_database_sql, table_run_args
from backupd.mysql.exact_rows import needs_exact_rows
from backupd.mysql.object_privileges import check_sees_every_object
from backupd.mysql.reference import TableInfo, list_objects, list_tables
from backupd.mysql.snapshot import ReferenceScanner, SnapshotInfo, SnapshotSession
from backupd.repo.repository import Shard
from backupd.sources.base import SourceResult
from backupd.sources.dump_sections import DumpSplitter, Event, SectionStart, run_events
from backupd.sources.exact_splice import exact_splicer

log = logging.getLogger(__name__)

Run = tuple[str, list[TableInfo]]  # one mysqldump run: a database and its tables, in order


def table_sizes(conn: pymysql.connections.Connection, databases: list[str], *, label: str) -> dict[str, int]:
    """``db.table`` -> the server's estimate of its data and index bytes."""
    marks = ", ".join(["%s"] * len(databases))
    rows = query(conn, f"SELECT TABLE_SCHEMA, TABLE_NAME, IFNULL(DATA_LENGTH, 0) + IFNULL(INDEX_LENGTH, 0) "
                       f"FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({marks})", databases, label=label)
    return {f"{d}.{t}": int(size) for d, t, size in rows}


def assign_streams(tables: list[TableInfo], sizes: dict[str, int], streams: int) -> list[list[Run]]:
    """Spread ``tables`` over ``streams`` (pure): largest first, each to the lightest stream;
    within a stream, one run per database (and one more for its tables with FLOAT columns, whose
    run writes no rows: ``--ignore-table-data`` is ignored for tables named on the command
    line), tables largest first. Streams without a table are left out."""
    loads = [0] * max(1, streams)
    chosen: list[list[TableInfo]] = [[] for _ in loads]
    for table in sorted(tables, key=lambda t: (-sizes.get(t.name, 0), t.name)):
        lightest = loads.index(min(loads))
        chosen[lightest].append(table)
        loads[lightest] += max(sizes.get(table.name, 0), 1)
    plan = []
    for assigned in chosen:
        runs: dict[tuple[str, bool], list[TableInfo]] = {}
        for table in assigned:  # a table whose rows backupd writes itself goes in a run without rows
            runs.setdefault((table.database, needs_exact_rows(table)), []).append(table)
        if runs:
            plan.append([(database, tables) for (database, _), tables in runs.items()])
    return plan


class TableDumpSource:
    """A table-addressed logical full of one shard (see the module docstring)."""

    method = "mysqldump"

    def __init__(self, shard: Shard, settings: Settings):
        self.shard = shard
        self.settings = settings

    @contextmanager
    def open(self) -> Iterator[SectionedDump]:
        with SnapshotSession(self.shard, mysqldump=self.settings.mysqldump, work_dir=self.settings.work_dir,
                             snapshot_connections=1) as session:
            label = session.label
            databases = session.databases()
            check_sees_every_object(session.control, session.server, databases, label=label)
            tables = list_tables(session.control, databases, label=label)
            plan = assign_streams(tables, table_sizes(session.control, databases, label=label),
                                  self.settings.dump_streams)
            rows_conns = {k: session.open_snapshot_connection() for k, stream in enumerate(plan)
                          if any(needs_exact_rows(t) for _, run in stream for t in run)}
            runs = [run for stream in plan for run in stream]

            def commands(_: SnapshotInfo) -> list[list[str]]:
                return [table_run_args(session.common_args(), database, [t.table for t in run],
                                       rows=not needs_exact_rows(run[0])) for database, run in runs]

            info, dumps = session.open_dumps(commands)
            seen = list_tables(session.snapshots[0], databases, label=label)
            if [(t.name, t.schema_digest) for t in seen] != [(t.name, t.schema_digest) for t in tables]:
                raise SourceError(f"{label}: tables were created, dropped or altered while the backup was "
                                  "starting; refusing it", hint="retry: the next run picks the new definitions up")
            scanner = session.scan_reference(databases, tables=seen)
            creates = [(d, create_database_sql(session.control, d, label=label)) for d in databases]
            dumps_by_stream: list[list[tuple[Run, DumpProcess]]] = []
            remaining = iter(dumps)
            for stream in plan:
                dumps_by_stream.append([(run, next(remaining)) for run in stream])
            producers = []
            for k, stream_runs in enumerate(dumps_by_stream):
                conn = session.snapshots[rows_conns[k]] if k in rows_conns else None
                producers.append(_Producer(label, stream_runs, conn, preamble=k == 0,
                                           databases=creates if k == 0 else []))
            if not producers:  # no table at all: the databases still need creating
                producers.append(_Producer(label, [], None, preamble=False, databases=creates))
            log.info("%s: dumping %d tables in %d streams", label, len(tables), len(producers))
            yield SectionedDump(session, dumps, producers, scanner, databases, info)


class _Producer:
    """One stream's events: its runs' output cut into sections (exact rows spliced in)."""

    def __init__(self, label: str, runs: list[tuple[Run, DumpProcess]],
                 rows_conn: pymysql.connections.Connection | None, *, preamble: bool,
                 databases: list[tuple[str, bytes]]):
        self.label = label
        self.runs = runs
        self.rows_conn = rows_conn
        self.preamble = preamble
        self.databases = databases

    def events(self) -> Iterator[Event]:
        for database, statement in self.databases:
            yield SectionStart("database", database)
            yield statement
        for number, ((database, tables), dump) in enumerate(self.runs):
            splitter = DumpSplitter(database, [t.table for t in tables], preamble=self.preamble and number == 0,
                                    label=self.label)
            splicer = None
            if needs_exact_rows(tables[0]):  # a run holds FLOAT tables only, or none (assign_streams)
                assert self.rows_conn is not None
                splicer = exact_splicer(self.rows_conn, tables, label=self.label, database=database)
            yield from run_events(dump.chunks(), splitter, splicer)


class SectionedDump:
    """A table-addressed full's producers, its objects, then the facts of its snapshot."""

    def __init__(self, session: SnapshotSession, dumps: list[DumpProcess], producers: list[_Producer],
                 scanner: ReferenceScanner, databases: list[str], info: SnapshotInfo):
        self.session = session
        self.dumps = dumps
        self.producers = producers
        self.scanner = scanner
        self.databases = databases
        self.info = info

    def streams(self) -> list[Iterator[Event]]:
        """One event iterator per stream: each must be drained (in a thread of its own)."""
        return [producer.events() for producer in self.producers]

    def objects(self) -> Iterator[Event]:
        """Each database's views, routines and events: run once every stream is drained."""
        label = self.session.label
        for database in self.databases:
            found = list_objects(self.session.control, [database], label=label)
            if not any(o.kind != "trigger" for o in found):
                continue
            views = [o.name for o in found if o.kind == "view"]
            args = self.session.common_args(coordinates=False) + (
                ["--no-data", "--skip-triggers", "--routines", "--events", database, *views] if views else
                ["--no-create-info", "--no-data", "--skip-triggers", "--routines", "--events", database])
            yield SectionStart("objects", database)
            yield from self.session.start_dump(args).chunks()

    def abort(self) -> None:
        """Stop every run (a stream failed): their readers see the end and stop too."""
        for dump in self.dumps:
            dump.reap()

    def result(self) -> SourceResult:
        reference = self.scanner.join()
        for dump in self.dumps:
            dump.check_trailer_gtid(self.info.coordinates)
        return SourceResult(method=TableDumpSource.method, databases=self.databases,
                            snapshot_at=self.info.snapshot_at, coordinates=self.info.recorded,
                            taken_from=self.info.taken_from,
                            server=self.session.server, reference=reference,
                            tool_versions=self.session.tool_versions)
