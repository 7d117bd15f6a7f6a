"""Logical full backups with mysqldump, plus the same-snapshot per-table reference.

The stream is mysqldump's stdout (``backupd.mysql.dump``), read in 1 MiB chunks from an enlarged
pipe; its stderr goes to a file and is quoted if it fails. The password reaches mysqldump through
a 0600 option file. After the stream is drained the source checks mysqldump's exit status and
its "Dump completed" trailer, and that the coordinates mysqldump printed equal those of the
reference snapshot (``backupd.mysql.snapshot``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from backupd.config import Settings
from backupd.errors import SourceError
from backupd.mysql.dump import DumpProcess, mysqldump_args
from backupd.mysql.snapshot import ReferenceScanner, SnapshotInfo, SnapshotSession
from backupd.repo.repository import Shard
from backupd.sources.base import SourceResult


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
            info, (dump,) = session.open_dumps(
                lambda _: [mysqldump_args(binary, session.option_path, session.flavour, session.version,
                                          databases)])
            scanner = session.scan_reference(databases)
            yield DumpStream(session, dump, scanner, databases, info)


class DumpStream:
    """A full backup's stream: mysqldump's stdout, then the facts of its snapshot."""

    def __init__(self, session: SnapshotSession, dump: DumpProcess, scanner: ReferenceScanner,
                 databases: list[str], info: SnapshotInfo):
        self.session = session
        self.dump = dump
        self.scanner = scanner
        self.databases = databases
        self.info = info
        self._drained = False

    def chunks(self) -> Iterator[bytes]:
        yield from self.dump.chunks()
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
