"""Logical full backups with mysqldump, plus the same-snapshot per-table reference.

The stream is mysqldump's stdout (``backupd.mysql.dump``), read in 1 MiB chunks from an enlarged
pipe; its stderr goes to a file and is quoted if it fails. Tables with FLOAT columns, which
mysqldump would write inexactly, have their rows written by the server on a second snapshot
connection and spliced into the stream where mysqldump would have put them
(``backupd.mysql.exact_rows``, ``backupd.sources.exact_splice``); other backups pay nothing
for it. The password reaches mysqldump through a 0600 option file. After the stream is drained
the source checks mysqldump's exit status and its "Dump completed" trailer, and that the
coordinates mysqldump printed equal those of the reference snapshot (``backupd.mysql.snapshot``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from backupd.config import Settings
from backupd.errors import SourceError
from backupd.mysql.dump import DumpProcess, mysqldump_args
from backupd.mysql.exact_rows import data_section, needs_exact_rows
from backupd.mysql.reference import list_tables
from backupd.mysql.snapshot import ReferenceScanner, SnapshotInfo, SnapshotSession
from backupd.repo.repository import Shard
from backupd.sources.base import SourceResult
from backupd.sources.exact_splice import ExactDataSplicer


class MysqldumpSource:
    """A full logical backup of one shard (see the module docstring)."""

    method = "mysqldump"

    def __init__(self, shard: Shard, settings: Settings):
        self.shard = shard
        self.settings = settings

    @contextmanager
    def open(self) -> Iterator[DumpStream]:
        binary = self.settings.mysqldump
        with SnapshotSession(self.shard, mysqldump=binary, work_dir=self.settings.work_dir,
                             snapshot_connections=1) as session:
            databases = session.databases()
            exact = [t for t in list_tables(session.control, databases, label=session.label) if needs_exact_rows(t)]
            rows_conn = session.open_snapshot_connection() if exact else None
            skip_data = [f"--ignore-table-data={t.name}" for t in exact]
            info, (dump,) = session.open_dumps(
                lambda _: [mysqldump_args(binary, session.option_path, session.flavour, session.version,
                                          databases, extra=skip_data)])
            if exact:
                seen = [t for t in list_tables(session.snapshots[0], databases, label=session.label)
                        if needs_exact_rows(t)]
                if [(t.name, t.schema_digest) for t in seen] != [(t.name, t.schema_digest) for t in exact]:
                    raise SourceError(f"{session.label}: table definitions changed while the backup was "
                                      "starting; refusing it", hint="retry: the next run picks the new definitions up")
            scanner = session.scan_reference(databases)
            splicer = None
            if rows_conn is not None:
                by_name = {(t.database, t.table): t for t in exact}
                splicer = ExactDataSplicer(by_name, lambda d, t: data_section(
                    session.snapshots[rows_conn], by_name[(d, t)], label=session.label), label=session.label)
            yield DumpStream(session, dump, scanner, databases, info, splicer)


class DumpStream:
    """A full backup's stream: mysqldump's stdout, then the facts of its snapshot."""

    def __init__(self, session: SnapshotSession, dump: DumpProcess, scanner: ReferenceScanner,
                 databases: list[str], info: SnapshotInfo, splicer: ExactDataSplicer | None = None):
        self.session = session
        self.dump = dump
        self.scanner = scanner
        self.databases = databases
        self.info = info
        self.splicer = splicer
        self._drained = False

    def chunks(self) -> Iterator[bytes]:
        if self.splicer is None:
            yield from self.dump.chunks()
        else:
            for chunk in self.dump.chunks():
                yield from self.splicer.feed(chunk)
            yield from self.splicer.finish()
        self._drained = True

    def result(self) -> SourceResult:
        if not self._drained:
            raise SourceError(f"{self.session.label}: result() called before the dump was drained")
        reference = self.scanner.join()
        self.dump.check_trailer_gtid(self.info.coordinates)
        return SourceResult(method=MysqldumpSource.method, databases=self.databases,
                            snapshot_at=self.info.snapshot_at, coordinates=self.info.coordinates,
                            server=self.session.server, reference=reference,
                            tool_versions=self.session.tool_versions)
