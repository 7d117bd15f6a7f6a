"""Physical backups: mariabackup (MariaDB) or xtrabackup (MySQL) streaming the datadir as xbstream.

The tool must run where the shard's datadir is (``shards.ID.datadir``); the source says so when
the folder is not reachable from this host. The password reaches the tool through a 0600 option
file. A full copies everything; an incremental copies the pages changed after its base full's
``to_lsn`` (``--incremental-lsn``), so it applies to that full alone.

How the reference (row counts and digests to verify a restore against) is pinned to the exact
point the physical copy represents:

1. snapshot connections to the server are opened before the tool starts;
2. the tool's log is read line by line while it runs; when it reports that it holds the commit
   block at the end of the copy (mariabackup: ``Acquired locks for BACKUP STAGE BLOCK_COMMIT``),
   the tool is paused (SIGSTOP), the connections open ``START TRANSACTION WITH CONSISTENT
   SNAPSHOT`` and read their binlog coordinates, and the tool is resumed (SIGCONT); no
   transaction can commit in between, so the snapshots see exactly the backed-up data;
3. once the stream is drained, the tool's exit status and ``completed OK!`` are checked, its
   LSNs and binlog coordinates are read from ``--extra-lsndir``, and the snapshots' coordinates
   must equal the tool's, else the backup fails (its reference would not describe its data);
4. the reference is computed on the snapshots, as for logical backups.

On a replica (``backup_from = "replica"``: backupd runs on the replica's host, ``datadir`` is the
replica's) the tool runs with ``--slave-info`` (and ``--safe-slave-backup`` when configured); in
step 2 the pin also reads the primary's coordinates and the data's time
(``backupd.mysql.replication.replica_snapshot``) and refuses a copy with replicated temporary
tables open; the backup records the primary's coordinates and the data's time.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from backupd.config import Settings
from backupd.errors import BackupdError, SourceError
from backupd.mysql.connection import query
from backupd.mysql.options import option_file
from backupd.mysql.physical_tools import COMPLETED, PhysicalTool, physical_tool, tool_version
from backupd.mysql.replication import ReplicaSnapshot, ReplicaUnfit, replica_snapshot
from backupd.mysql.snapshot import SnapshotSession, open_reference_snapshot
from backupd.mysql.tools import ToolProcess
from backupd.repo.model import Coordinates, Manifest, Physical, utc_now
from backupd.repo.repository import Shard
from backupd.sources.base import SourceResult

log = logging.getLogger(__name__)

SNAPSHOT_CONNECTIONS = 2

# A line the tool prints once it holds the block on commits at the end of its copy.
_COMMITS_BLOCKED = re.compile(
    r"Acquired locks for BACKUP STAGE BLOCK_COMMIT"           # mariabackup 10.4+
    r"|Executing FLUSH TABLES WITH READ LOCK\.\.\.\s*done"     # xtrabackup 2.4 / mariabackup < 10.4
    r"|Executing LOCK BINLOG FOR BACKUP\.\.\.\s*done")         # xtrabackup 8.0 with backup locks
_BINLOG_POS = re.compile(r"filename '([^']*)', position '(\d+)'(?:, GTID of the last change '([^']*)')?")


@dataclass(frozen=True)
class BackupInfo:
    """What the tool recorded about its copy (``--extra-lsndir`` files)."""

    from_lsn: int
    to_lsn: int
    coordinates: Coordinates
    tool_version: str | None


def read_backup_info(folder: Path, *, label: str) -> BackupInfo:
    """Parse ``xtrabackup_checkpoints`` and ``xtrabackup_info`` (or their ``mariadb_backup_*``
    names) in ``folder``."""
    checkpoints = _key_values(_first_file(folder, "checkpoints", label=label))
    info = _key_values(_first_file(folder, "info", label=label))
    try:
        from_lsn, to_lsn = int(checkpoints["from_lsn"]), int(checkpoints["to_lsn"])
    except (KeyError, ValueError):
        raise SourceError(f"{label}: the backup tool's checkpoints file has no from_lsn/to_lsn") from None
    match = _BINLOG_POS.search(info.get("binlog_pos", ""))
    if not match or not match.group(1):
        raise SourceError(f"{label}: the backup tool recorded no binlog position; backupd needs "
                          "log_bin on the shard to record the backup's coordinates",
                          hint="enable log_bin on the shard")
    coordinates = Coordinates(binlog_file=match.group(1), binlog_pos=int(match.group(2)),
                              gtid=match.group(3) or None)
    return BackupInfo(from_lsn, to_lsn, coordinates, info.get("tool_version"))


def _first_file(folder: Path, kind: str, *, label: str) -> str:
    for name in (f"mariadb_backup_{kind}", f"xtrabackup_{kind}"):
        path = folder / name
        if path.exists():
            return path.read_text(encoding="utf-8", errors="replace")
    raise SourceError(f"{label}: the backup tool wrote no {kind} file (xtrabackup_{kind})")


def _key_values(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def check_datadir(shard: Shard, server_datadir: str | None) -> Path:
    """The shard's datadir, checked to be reachable and readable from this host."""
    assert shard.config.datadir is not None
    path = Path(shard.config.datadir)
    key = f"shards.{shard.id}.replicas[].datadir of {shard.from_replica}" if shard.from_replica else \
        f"shards.{shard.id}.datadir"
    where = f"{shard.label}: datadir {path} ({key})"
    hint = (f"physical backups (method = {shard.config.method!r}) copy the server's files, so they run "
            "on the database host; run backupd there, or use method = \"mysqldump\"")
    if not path.is_dir():
        raise SourceError(f"{where} is not reachable from this host (no such folder)", hint=hint)
    if not os.access(path, os.R_OK | os.X_OK):
        raise SourceError(f"{where} is not readable by this user (uid {os.getuid()})", hint=hint)
    if not any((path / marker).exists() for marker in ("ibdata1", "aria_log_control", "mysql")):
        raise SourceError(f"{where} does not look like a MariaDB/MySQL datadir (no ibdata1, "
                          "aria_log_control or mysql/)", hint=hint)
    if server_datadir and Path(server_datadir).is_dir() and \
            Path(server_datadir).resolve() != path.resolve():
        raise SourceError(f"{where} is not the server's datadir ({server_datadir}, from @@datadir)",
                          hint="point shards.ID.datadir at the datadir of the server this shard names")
    return path


class PhysicalSource:
    """A physical full or incremental of one shard (see the module docstring)."""

    def __init__(self, shard: Shard, settings: Settings, *, base: Manifest | None = None):
        if base is not None and base.physical is None:
            raise SourceError(f"{shard.label}: base {base.id} of a physical incremental is not physical")
        self.shard = shard
        self.settings = settings
        self.base = base
        self.method: str = shard.config.method  # resolved to the tool's name in the result

    @contextmanager
    def open(self) -> Iterator[PhysicalStream]:
        label = self.shard.label
        with SnapshotSession(self.shard, mysqldump=self.settings.mysqldump, work_dir=self.settings.work_dir,
                             snapshot_connections=SNAPSHOT_CONNECTIONS) as session, ExitStack() as stack:
            server_datadir = query(session.control, "SELECT @@datadir", label=label)[0][0]
            datadir = check_datadir(self.shard, server_datadir)
            databases = session.databases()
            tool = physical_tool(self.method, session.server, self.settings)
            version = tool_version(tool.binary)
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix=f"backupd-{os.getpid()}-physical-", dir=self.settings.work_dir)))
            options = stack.enter_context(option_file(self.shard.config, self.settings.work_dir))
            args = [tool.binary, f"--defaults-file={options}", "--backup", "--stream=xbstream",
                    f"--datadir={datadir}", f"--target-dir={scratch / 'target'}",
                    f"--extra-lsndir={scratch / 'lsn'}"]
            if self.base is not None:
                assert self.base.physical is not None
                args.append(f"--incremental-lsn={self.base.physical.to_lsn}")
            if self.shard.from_replica:  # the primary's coordinates, in the tool's files too
                args.append("--slave-info")
                if self.shard.config.safe_slave_backup:
                    args.append("--safe-slave-backup")
            pin = SnapshotPin(session, label)
            process = stack.enter_context(ToolProcess(
                label, tool.name, args, error=SourceError, work_dir=self.settings.work_dir,
                on_stderr_line=pin.on_line, die_with_parent=True,
                missing_hint="install mariadb-backup (or percona-xtrabackup)"))
            pin.process = process
            process.start()
            log.info("%s: %s %s started (%s)", label, tool.name,
                     f"incremental from LSN {self.base.physical.to_lsn}" if self.base and self.base.physical
                     else "full", datadir)
            yield PhysicalStream(self, session, process, pin, scratch / "lsn", databases, tool, version)


class SnapshotPin:
    """Opens the reference snapshots while the tool holds commits blocked (module docstring)."""

    def __init__(self, session: SnapshotSession, label: str):
        self.session = session
        self.label = label
        self.process: ToolProcess | None = None
        self.coordinates: list[Coordinates] = []
        self.replica: ReplicaSnapshot | None = None  # on a replica: the primary's coordinates, the data's age
        self.snapshot_at = utc_now()
        self.error: BaseException | None = None
        self._done = False

    def on_line(self, line: str) -> None:
        if self._done or not _COMMITS_BLOCKED.search(line) or self.process is None:
            return
        self._done = True
        pid = self.process.pid
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            return
        try:
            self.snapshot_at = utc_now()
            self.coordinates = [open_reference_snapshot(conn, self.session.server, label=self.label)
                                for conn in self.session.snapshots]
            if self.session.shard.from_replica:
                self.replica = self._on_replica()
        except BaseException as exc:  # reported by the stream's result()
            self.error = exc
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        log.debug("%s: reference snapshots opened while commits were blocked", self.label)

    def _on_replica(self) -> ReplicaSnapshot:
        """Read with the tool stopped and commits blocked: the primary's coordinates the replica
        has applied, its data's age, and no replicated temporary table open (a copy with one
        would break the restored replica's replication at the next statement using it)."""
        shard = self.session.shard
        where = f"{self.label} {shard.from_replica}"
        seen = replica_snapshot(self.session.control, self.session.snapshots[0], shard.config,
                                now=self.snapshot_at, label=where)
        if not shard.config.safe_slave_backup:
            rows = query(self.session.control, "SHOW GLOBAL STATUS LIKE 'Slave_open_temp_tables'", label=where)
            open_temp = int(rows[0][1]) if rows else 0
            if open_temp:
                raise ReplicaUnfit(f"{where}: {open_temp} replicated temporary table(s) open at the snapshot",
                                   hint=f"set shards.{shard.id}.safe_slave_backup = true (statement-based "
                                        "replication), or retry")
        log.info("%s: snapshot on %s: %s", self.label, shard.from_replica, seen.describe())
        return seen


class PhysicalStream:
    """A physical backup's xbstream, then the facts of its copy."""

    def __init__(self, source: PhysicalSource, session: SnapshotSession, process: ToolProcess,
                 pin: SnapshotPin, lsn_dir: Path, databases: list[str], tool: PhysicalTool, version: str):
        self.source = source
        self.session = session
        self.process = process
        self.pin = pin
        self.lsn_dir = lsn_dir
        self.databases = databases
        self.tool = tool
        self.version = version
        self._drained = False

    def chunks(self) -> Iterator[bytes]:
        while chunk := self.process.read_chunk():
            yield chunk
        self.process.check(completed=COMPLETED)
        self._drained = True

    def result(self) -> SourceResult:
        label = self.session.label
        if not self._drained:
            raise SourceError(f"{label}: result() called before the stream was drained")
        info = read_backup_info(self.lsn_dir, label=label)
        if isinstance(self.pin.error, BackupdError):  # already names what is wrong (and what to do)
            raise self.pin.error
        if self.pin.error is not None:
            raise SourceError(f"{label}: opening the reference snapshot failed: {self.pin.error}")
        if not self.pin.coordinates:
            raise SourceError(f"{label}: {self.tool.name} never reported blocking commits, so no "
                              "reference snapshot could be pinned to its copy",
                              detail=self.process.stderr_tail())
        theirs = (info.coordinates.binlog_file, info.coordinates.binlog_pos)
        for seen in self.pin.coordinates:
            if (seen.binlog_file, seen.binlog_pos) != theirs:
                raise SourceError(f"{label}: {self.tool.name}'s copy is at {theirs[0]}:{theirs[1]} "
                                  f"but the reference snapshot is at {seen.binlog_file}:{seen.binlog_pos}; "
                                  "refusing a backup whose reference may not match its data")
        base = self.source.base
        if base is not None and base.physical is not None and info.from_lsn != base.physical.to_lsn:
            raise SourceError(f"{label}: {self.tool.name} copied from LSN {info.from_lsn}, expected "
                              f"{base.physical.to_lsn} (the to_lsn of base {base.id})")
        scanner = self.session.scan_reference(self.databases, connections=list(range(SNAPSHOT_CONNECTIONS)))
        reference = scanner.join()
        coordinates = Coordinates(binlog_file=info.coordinates.binlog_file,
                                  binlog_pos=info.coordinates.binlog_pos,
                                  gtid=info.coordinates.gtid if info.coordinates.gtid is not None
                                  else self.pin.coordinates[0].gtid,
                                  server_id=self.pin.coordinates[0].server_id)
        snapshot_at, taken_from = self.pin.snapshot_at, None
        replica = self.pin.replica
        if replica is not None:
            coordinates = replica.primary(coordinates)
            snapshot_at -= replica.lag
            assert self.source.shard.from_replica is not None
            taken_from = replica.taken_from(self.source.shard.from_replica)
        return SourceResult(
            method=self.tool.name, databases=self.databases, snapshot_at=snapshot_at,
            coordinates=coordinates, server=self.session.server, reference=reference,
            tool_versions={self.tool.name: info.tool_version or self.version},
            physical=Physical(tool=self.tool.name, from_lsn=info.from_lsn, to_lsn=info.to_lsn),
            taken_from=taken_from)

