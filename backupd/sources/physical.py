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
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

from backupd.config import Settings, ShardConfig
from backupd.errors import SourceError
from backupd.model import Coordinates, Manifest, Physical, ServerInfo, utc_now
from backupd.mysql import option_file, query
from backupd.processes import enlarge_pipe, file_tail
from backupd.sources.base import SourceResult
from backupd.sources.mysqldump import SnapshotSession
from backupd.sources.snapshot import open_reference_snapshot

log = logging.getLogger(__name__)

READ_CHUNK = 1024 * 1024
SNAPSHOT_CONNECTIONS = 2

# A line the tool prints once it holds the block on commits at the end of its copy.
_COMMITS_BLOCKED = re.compile(
    r"Acquired locks for BACKUP STAGE BLOCK_COMMIT"           # mariabackup 10.4+
    r"|Executing FLUSH TABLES WITH READ LOCK\.\.\.\s*done"     # xtrabackup 2.4 / mariabackup < 10.4
    r"|Executing LOCK BINLOG FOR BACKUP\.\.\.\s*done")         # xtrabackup 8.0 with backup locks
_COMPLETED = re.compile(r"completed OK!")
_BINLOG_POS = re.compile(r"filename '([^']*)', position '(\d+)'(?:, GTID of the last change '([^']*)')?")


@dataclass(frozen=True)
class PhysicalTool:
    """The backup tool of a vendor and the extractor of its streams."""

    name: str            # "mariabackup" | "xtrabackup"
    binary: str
    extractor: str       # mbstream | xbstream binary


def physical_tool(method: str, server: ServerInfo, settings: Settings) -> PhysicalTool:
    """The tool for ``method`` ("physical" picks it from the server's vendor)."""
    name = method if method != "physical" else ("mariabackup" if server.vendor == "mariadb" else "xtrabackup")
    if name == "mariabackup":
        return PhysicalTool("mariabackup", settings.mariabackup, settings.mbstream)
    return PhysicalTool("xtrabackup", settings.xtrabackup, settings.xbstream)


def tool_for_manifest(manifest: Manifest, settings: Settings) -> PhysicalTool:
    """The tool that prepares (and the extractor that unpacks) ``manifest``'s stream."""
    assert manifest.physical is not None
    return physical_tool(manifest.physical.tool, manifest.server, settings)


@functools.lru_cache(maxsize=8)
def tool_version(binary: str) -> str:
    """``mariabackup --version`` as a short string, e.g. ``10.11.19-MariaDB``."""
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise SourceError(f"physical backup tool '{binary}' not found",
                          hint="install mariadb-backup (or percona-xtrabackup), or set [backupd] "
                               "mariabackup / xtrabackup") from None
    text = done.stdout + done.stderr
    match = re.search(r"server (\S+)", text) or re.search(r"[Vv]ersion (\S+)", text)
    return match.group(1) if match else text.strip().splitlines()[0] if text.strip() else "unknown"


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


def check_datadir(shard_id: str, shard: ShardConfig, server_datadir: str | None) -> Path:
    """The shard's datadir, checked to be reachable and readable from this host."""
    assert shard.datadir is not None
    path = Path(shard.datadir)
    where = f"shard {shard_id}: datadir {path} (shards.{shard_id}.datadir)"
    hint = (f"physical backups (method = {shard.method!r}) copy the server's files, so they run "
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

    def __init__(self, shard_id: str, shard: ShardConfig, *, settings: Settings,
                 base: Manifest | None = None):
        if base is not None and base.physical is None:
            raise SourceError(f"shard {shard_id}: base {base.id} of a physical incremental is not physical")
        self.shard_id = shard_id
        self.shard = shard
        self.settings = settings
        self.base = base
        self.method = shard.method  # resolved to the tool's name in the result

    @contextmanager
    def open(self) -> Iterator["PhysicalStream"]:
        label = f"shard {self.shard_id}"
        with SnapshotSession(self.shard_id, self.shard, mysqldump=self.settings.mysqldump,
                             work_dir=self.settings.work_dir,
                             snapshot_connections=SNAPSHOT_CONNECTIONS) as session, ExitStack() as stack:
            server_datadir = query(session.control, "SELECT @@datadir", label=label)[0][0]
            datadir = check_datadir(self.shard_id, self.shard, server_datadir)
            databases = session.databases()
            tool = physical_tool(self.method, session.server, self.settings)
            version = tool_version(tool.binary)
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix=f"backupd-{os.getpid()}-physical-", dir=self.settings.work_dir)))
            options = stack.enter_context(option_file(self.shard, self.settings.work_dir))
            args = [tool.binary, f"--defaults-file={options}", "--backup", "--stream=xbstream",
                    f"--datadir={datadir}", f"--target-dir={scratch / 'target'}",
                    f"--extra-lsndir={scratch / 'lsn'}"]
            if self.base is not None:
                assert self.base.physical is not None
                args.append(f"--incremental-lsn={self.base.physical.to_lsn}")
            pin = SnapshotPin(session, label)
            process = ToolProcess(label, tool.name, args, on_line=pin.on_line,
                                  stderr_file=stack.enter_context(tempfile.TemporaryFile(dir=self.settings.work_dir)))
            stack.callback(process.reap)
            pin.process = process
            process.start_reading_log()
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
        except BaseException as exc:  # reported by the stream's result()
            self.error = exc
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        log.debug("%s: reference snapshots opened while commits were blocked", self.label)


class ToolProcess:
    """The running backup tool: stdout as chunks, stderr read line by line (and kept)."""

    def __init__(self, label: str, name: str, args: list[str], *, on_line: Callable[[str], None],
                 stderr_file: IO[bytes]):
        self.label = label
        self.name = name
        self.stderr_file = stderr_file
        self.completed = False
        if shutil.which(args[0]) is None:
            raise SourceError(f"{label}: {name} binary '{args[0]}' not found",
                              hint="install mariadb-backup (or percona-xtrabackup)")
        setpriv = shutil.which("setpriv")
        if setpriv:  # killed with us: a tool we paused must never outlive us holding commits blocked
            args = [setpriv, "--pdeathsig", "KILL", "--", *args]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, bufsize=0, start_new_session=True)
        self.pid = self.process.pid
        self._fd = self.process.stdout.fileno()  # type: ignore[union-attr]
        enlarge_pipe(self._fd)
        self._on_line = on_line
        self._reader = threading.Thread(target=self._read_log, name=f"{name}-log", daemon=True)

    def start_reading_log(self) -> None:
        """Start reading the tool's log (and calling ``on_line``); until then it waits in its pipe."""
        self._reader.start()

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.stderr_file.write(raw)
            line = raw.decode("utf-8", "replace")
            if _COMPLETED.search(line):
                self.completed = True
            try:
                self._on_line(line)
            except Exception:  # never let a watcher stop the log from draining
                log.exception("%s: watching %s's log failed", self.label, self.name)

    def chunks(self) -> Iterator[bytes]:
        while True:
            chunk = os.read(self._fd, READ_CHUNK)
            if not chunk:
                break
            yield chunk
        code = self.process.wait()
        if self._reader.ident is not None:
            self._reader.join()
        if code != 0 or not self.completed:
            tail = self.stderr_tail()
            last = tail.splitlines()[-1] if tail else "no message"
            raise SourceError(f"{self.label}: {self.name} failed with exit status {code}: {last}"
                              if code else f"{self.label}: {self.name} exited 0 without 'completed OK!'",
                              detail=tail)

    def stderr_tail(self) -> str:
        return file_tail(self.stderr_file)

    def reap(self) -> None:
        """Make sure the tool (and its process group) is gone."""
        if self.process.returncode is None:
            for sig in (signal.SIGCONT, signal.SIGKILL):  # a paused tool must not stay stopped
                try:
                    os.killpg(self.process.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        self.process.wait()
        if self._reader.is_alive():
            self._reader.join(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()


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
        yield from self.process.chunks()
        self._drained = True

    def result(self) -> SourceResult:
        label = self.session.label
        if not self._drained:
            raise SourceError(f"{label}: result() called before the stream was drained")
        info = read_backup_info(self.lsn_dir, label=label)
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
                                  else self.pin.coordinates[0].gtid)
        return SourceResult(
            method=self.tool.name, databases=self.databases, snapshot_at=self.pin.snapshot_at,
            coordinates=coordinates, server=self.session.server, reference=reference,
            tool_versions={self.tool.name: info.tool_version or self.version},
            physical=Physical(tool=self.tool.name, from_lsn=info.from_lsn, to_lsn=info.to_lsn))  # type: ignore[arg-type]
