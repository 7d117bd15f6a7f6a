"""Physical restore: verified parts -> mbstream/xbstream -x -> prepare -> move-back -> start.

Contract of ``restore_physical``: nothing on the target changes until every part of every step
has been fetched, verified (size and sha256, before its bytes reach the extractor), extracted
into a scratch folder under the target's ``restore_dir`` and prepared (the incremental applied
with ``--incremental-dir``). Only then is the server stopped, its datadir emptied, the prepared
copy moved in, ownership set to the datadir's owner, and the server started and waited for.
Refused before anything is fetched: another vendor or major version than the backup's
(``IncompatibleTarget``), a datadir holding any non-system database unless ``force``
(``TargetNotEmpty``), less free disk than the extraction needs (``InsufficientSpace``). The
scratch folder is removed in every case.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from backupd.config import Settings
from backupd.errors import (
    CorruptPart,
    IncompatibleTarget,
    InsufficientSpace,
    RestoreFailed,
    ServerError,
    TargetNotEmpty,
    UsageError,
)
from backupd.mysql.connection import connect, major_minor, server_info
from backupd.mysql.physical_tools import COMPLETED, PhysicalTool, tool_for_manifest
from backupd.mysql.tools import ToolProcess, enlarge_pipe, run_tool
from backupd.progress import Progress
from backupd.repo.codec import PartDecodeError, decode_part
from backupd.repo.fetch import PartFetcher
from backupd.repo.model import Manifest
from backupd.repo.repository import Target
from backupd.units import format_size
from restore.server_control import ServerControl

log = logging.getLogger(__name__)

SYSTEM_FOLDERS = frozenset({"mysql", "performance_schema", "sys", "lost+found"})
SPACE_MARGIN = 1.10  # extracted files + what prepare adds (undo, redo) stay below raw x 1.1


@dataclass
class PhysicalRestoreTimes:
    """Seconds spent in each phase (reported by the CLI and the benchmark)."""

    phases: dict[str, float] = field(default_factory=dict)

    def timed(self, phase: str, started: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + time.monotonic() - started


def user_databases_in(datadir: Path) -> list[str]:
    """Folders of ``datadir`` that hold a database other than the system ones."""
    try:
        entries = list(datadir.iterdir())
    except FileNotFoundError:
        return []
    return sorted(e.name for e in entries if e.is_dir() and e.name not in SYSTEM_FOLDERS
                  and not e.name.startswith(("#", ".")))


def space_problem(needs: dict[str, int], free: dict[str, int]) -> str | None:
    """None if every filesystem (keyed by a path on it) has the bytes it needs, else a line
    with the numbers. Pure: the caller measured ``free``."""
    for where, needed in needs.items():
        if free[where] < needed:
            return (f"{where} has {format_size(free[where])} free, the restore needs "
                    f"{format_size(needed)} there")
    return None


def disk_needs(restore_dir: Path, datadir: Path, steps: list[Manifest]) -> dict[str, int]:
    """Bytes needed per filesystem: the extracted steps under ``restore_dir``, and the full's
    files again on the datadir's filesystem when moving there is a copy, not a rename."""
    extracted = int(sum(step.raw_bytes for step in steps) * SPACE_MARGIN)
    needs = {str(restore_dir): extracted}
    if _device(restore_dir) != _device(datadir):
        needs[str(datadir)] = int(steps[0].raw_bytes * SPACE_MARGIN)
    return needs


def _device(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return path.stat().st_dev


def check_target(target: Target, final: Manifest, *, force: bool) -> Path:
    """Refuse a target that cannot or must not take ``final``'s chain (see the module contract);
    return its datadir."""
    name, label, config = target.name, target.label, target.config
    missing = [key for key in ("datadir", "restore_dir") if not getattr(config, key)]
    if missing or config.datadir is None:
        raise UsageError(f"{label}: a physical restore needs targets.{name}.{missing[0]} "
                         "(the server's datadir, and a folder to extract and prepare in)")
    try:
        conn = connect(config, label=label)
    except ServerError as exc:
        raise RestoreFailed(f"{exc}; a physical restore checks the running server's version "
                            "before replacing its datadir", hint="start the target's server") from None
    try:
        server = server_info(conn, label=label)
    finally:
        conn.close()
    ours, theirs = major_minor(server.version), major_minor(final.server.version)
    if server.vendor != final.server.vendor or ours != theirs:
        raise IncompatibleTarget(
            f"{label} runs {server.vendor} {server.version} but backup {final.id} is of "
            f"{final.server.vendor} {final.server.version}; a physical restore needs the same "
            f"vendor and major version ({final.server.vendor} {theirs[0]}.{theirs[1]})",
            hint="restore into a server of that version, or restore a logical backup")
    datadir = Path(config.datadir)
    occupied = user_databases_in(datadir)
    if occupied and not force:
        raise TargetNotEmpty(f"{label}: datadir {datadir} already holds database "
                             f"'{occupied[0]}' ({len(occupied)} non-system databases); refusing to "
                             "replace it", hint="restore elsewhere, or pass --force to replace it")
    return datadir


def restore_physical(settings: Settings, target: Target, steps: list[Manifest],
                     fetchers: list[PartFetcher], *, force: bool) -> PhysicalRestoreTimes:
    """Restore ``steps`` (a physical full, optionally its incremental) into the target."""
    label = target.label
    final = steps[-1]
    datadir = check_target(target, final, force=force)
    control = ServerControl(target)
    assert target.config.restore_dir
    restore_dir = Path(target.config.restore_dir)
    restore_dir.mkdir(parents=True, exist_ok=True)
    needs = disk_needs(restore_dir, datadir, steps)
    problem = space_problem(needs, {where: shutil.disk_usage(where).free for where in needs})
    if problem:
        raise InsufficientSpace(f"{label}: not enough disk space: {problem}",
                                hint="free space, or point restore_dir at a larger disk")
    tool = tool_for_manifest(final, settings)
    times = PhysicalRestoreTimes()
    scratch = Path(tempfile.mkdtemp(prefix=f"backupd-restore-{final.shard}-", dir=restore_dir))
    try:
        folders = []
        for step, fetcher in zip(steps, fetchers, strict=True):
            started = time.monotonic()
            folder = scratch / step.kind
            _extract(tool, step, fetcher, folder, zstd=settings.zstd, label=label)
            folders.append(folder)
            times.timed("fetch+extract", started)
        started = time.monotonic()
        _prepare(tool, settings, folders, label=label)
        times.timed("prepare", started)
        started = time.monotonic()
        owner = datadir.stat()
        control.stop()
        times.timed("stop", started)
        started = time.monotonic()
        try:
            _empty(datadir)
            run_tool(label, f"{tool.name} --move-back", [tool.binary, "--no-defaults", "--move-back",
                     f"--target-dir={folders[0]}", f"--datadir={datadir}"], error=RestoreFailed, completed=COMPLETED)
            _chown_tree(datadir, owner.st_uid, owner.st_gid)
        except BaseException as exc:
            if isinstance(exc, RestoreFailed):
                exc.hint = (f"the datadir of {label} is incomplete; fix the cause and "
                            "rerun the restore with --force")
            raise
        times.timed("move-back", started)
        started = time.monotonic()
        control.start()
        times.timed("start", started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return times


def _extract(tool: PhysicalTool, step: Manifest, fetcher: PartFetcher, folder: Path, *, zstd: str,
             label: str) -> None:
    """Feed ``step``'s verified parts to ``zstd -dc | <extractor> -x -C folder``.

    Only parts whose size and sha256 matched are written, and only whole parts (each one
    complete zstd frame), so a part with no good copy ends the stream before any of its bytes.
    Decompression runs in its own process, in parallel with fetching, checking and extracting
    (python-zstandard in this process is used when there is no zstd binary). A zstd that fails
    found a corrupt frame (``CorruptPart``); an extractor that fails is a ``RestoreFailed``.
    """
    folder.mkdir()
    external = shutil.which(zstd) is not None
    what = f"{label}: backup {step.id}:"
    with ExitStack() as stack:
        extractor = stack.enter_context(ToolProcess(
            what, tool.extractor, [tool.extractor, "-x", "-C", str(folder)], error=RestoreFailed,
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            missing_hint="install mariadb-backup (mbstream) or percona-xtrabackup (xbstream)")).start()
        tools, sink = [extractor], extractor.stdin
        if external:
            decoder = stack.enter_context(ToolProcess(what, zstd, [zstd, "-dc", "-q"], error=CorruptPart,
                                                      stdin=subprocess.PIPE, stdout=extractor.stdin)).start()
            extractor.close_stdin()  # the decoder holds the extractor's input now
            tools, sink = [decoder, extractor], decoder.stdin
        enlarge_pipe(sink.fileno())
        progress = Progress(f"{label}: extracting {step.kind} {step.id}", step.raw_bytes)
        try:
            for part, data in fetcher.verified_parts():
                progress.advance(part.raw_size)
                if external:
                    sink.write(data)
                    continue
                try:
                    for chunk in decode_part(data):
                        sink.write(chunk)
                except PartDecodeError as exc:
                    raise CorruptPart(f"part {part.key} of backup {step.id}: {exc}") from None
        except BrokenPipeError:
            pass  # the exit statuses below say why
        finally:
            progress.finish()
        try:
            sink.close()
        except BrokenPipeError:
            pass
        for each in tools:  # the first one that failed says why (zstd before the extractor)
            each.check()
    log.info("%s: %s %s extracted (%s)", label, step.kind, step.id, format_size(step.raw_bytes))


def _prepare(tool: PhysicalTool, settings: Settings, folders: list[Path], *, label: str) -> None:
    base = [tool.binary, "--no-defaults", "--prepare", f"--target-dir={folders[0]}",
            f"--use-memory={settings.prepare_memory}"]
    run_tool(label, f"{tool.name} --prepare", base, error=RestoreFailed, completed=COMPLETED)
    for incremental in folders[1:]:
        run_tool(label, f"{tool.name} --prepare --incremental-dir", base + [f"--incremental-dir={incremental}"],
                 error=RestoreFailed, completed=COMPLETED)
    log.info("%s: prepared", label)


def _empty(folder: Path) -> None:
    """Remove everything inside ``folder`` (the folder itself stays: it may be a mount point)."""
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _chown_tree(folder: Path, uid: int, gid: int) -> None:
    """Give every file under ``folder`` the datadir's owner (the server must read them)."""
    if os.geteuid() != 0:
        return  # only root can give files away; files moved by their owner already match
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), uid, gid)
