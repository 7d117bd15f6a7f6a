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

from backupd.codec import PartDecodeError, decode_part
from backupd.config import Config, TargetConfig
from backupd.errors import (CorruptPart, IncompatibleTarget, InsufficientSpace, RestoreFailed,
                            ServerError, TargetNotEmpty, UsageError)
from backupd.fetch import PartFetcher
from backupd.model import Manifest
from backupd.progress import Progress
from backupd.mysql import connect, major_minor, server_info
from backupd.processes import enlarge_pipe
from backupd.sources.physical import PhysicalTool, tool_for_manifest
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


def check_target(target: TargetConfig, name: str, final: Manifest, *, force: bool) -> None:
    """Refuse a target that cannot or must not take ``final``'s chain (see the module contract)."""
    missing = [key for key in ("datadir", "restore_dir") if not getattr(target, key)]
    if missing:
        raise UsageError(f"target {name}: a physical restore needs targets.{name}.{missing[0]} "
                         "(the server's datadir, and a folder to extract and prepare in)")
    label = f"target {name}"
    try:
        conn = connect(target, label=label)
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
            f"target {name} runs {server.vendor} {server.version} but backup {final.id} is of "
            f"{final.server.vendor} {final.server.version}; a physical restore needs the same "
            f"vendor and major version ({final.server.vendor} {theirs[0]}.{theirs[1]})",
            hint="restore into a server of that version, or restore a logical backup")
    occupied = user_databases_in(Path(target.datadir))  # type: ignore[arg-type]
    if occupied and not force:
        raise TargetNotEmpty(f"target {name}: datadir {target.datadir} already holds database "
                             f"'{occupied[0]}' ({len(occupied)} non-system databases); refusing to "
                             "replace it", hint="restore elsewhere, or pass --force to replace it")


def restore_physical(config: Config, target_name: str, steps: list[Manifest],
                     fetchers: list[PartFetcher], *, force: bool) -> PhysicalRestoreTimes:
    """Restore ``steps`` (a physical full, optionally its incremental) into the target."""
    target = config.target(target_name)
    label = f"target {target_name}"
    final = steps[-1]
    check_target(target, target_name, final, force=force)
    control = ServerControl(target, target_name)
    assert target.datadir and target.restore_dir
    datadir, restore_dir = Path(target.datadir), Path(target.restore_dir)
    restore_dir.mkdir(parents=True, exist_ok=True)
    needs = disk_needs(restore_dir, datadir, steps)
    problem = space_problem(needs, {where: shutil.disk_usage(where).free for where in needs})
    if problem:
        raise InsufficientSpace(f"{label}: not enough disk space: {problem}",
                                hint="free space, or point restore_dir at a larger disk")
    tool = tool_for_manifest(final, config.settings)
    times = PhysicalRestoreTimes()
    scratch = Path(tempfile.mkdtemp(prefix=f"backupd-restore-{final.shard}-", dir=restore_dir))
    try:
        folders = []
        for step, fetcher in zip(steps, fetchers):
            started = time.monotonic()
            folder = scratch / step.kind
            _extract(tool, step, fetcher, folder, zstd=config.settings.zstd, label=label)
            folders.append(folder)
            times.timed("fetch+extract", started)
        started = time.monotonic()
        _prepare(tool, config, folders, label=label)
        times.timed("prepare", started)
        started = time.monotonic()
        owner = datadir.stat()
        control.stop()
        times.timed("stop", started)
        started = time.monotonic()
        try:
            _empty(datadir)
            _run_tool([tool.binary, "--no-defaults", "--move-back", f"--target-dir={folders[0]}",
                       f"--datadir={datadir}"], f"{label}: {tool.name} --move-back")
            _chown_tree(datadir, owner.st_uid, owner.st_gid)
        except BaseException as exc:
            if isinstance(exc, RestoreFailed):
                exc.hint = (f"the datadir of target {target_name} is incomplete; fix the cause and "
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
    (python-zstandard in this process is used when there is no zstd binary).
    """
    folder.mkdir()
    external = shutil.which(zstd) is not None
    with tempfile.TemporaryFile() as stderr, ExitStack() as stack:
        processes: list[subprocess.Popen[bytes]] = []

        def reap() -> None:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                process.wait()
        stack.callback(reap)
        try:
            extractor = subprocess.Popen([tool.extractor, "-x", "-C", str(folder)], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=stderr)
        except FileNotFoundError:
            raise RestoreFailed(f"{label}: extractor '{tool.extractor}' not found",
                                hint="install mariadb-backup (mbstream) or percona-xtrabackup (xbstream)") from None
        processes.append(extractor)
        assert extractor.stdin is not None
        sink = extractor.stdin
        if external:
            decoder = subprocess.Popen([zstd, "-dc", "-q"], stdin=subprocess.PIPE, stdout=extractor.stdin,
                                       stderr=stderr)
            processes.insert(0, decoder)
            extractor.stdin.close()  # the decoder holds the extractor's input now
            assert decoder.stdin is not None
            sink = decoder.stdin
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
            pass  # the statuses below say why
        finally:
            progress.finish()
        try:
            sink.close()
        except BrokenPipeError:
            pass
        codes = [process.wait() for process in processes]
        if any(codes):
            stderr.seek(0)
            text = stderr.read().decode("utf-8", "replace").strip()
            names = [zstd] * external + [tool.extractor]
            failed = next(name for name, code in zip(names, codes) if code)
            error = CorruptPart if failed == zstd else RestoreFailed
            raise error(f"{label}: {failed} failed on backup {step.id} (exit statuses "
                        f"{', '.join(map(str, codes))}): {text.splitlines()[-1] if text else 'no message'}",
                        detail=text[-4000:])
    log.info("%s: %s %s extracted (%s)", label, step.kind, step.id, format_size(step.raw_bytes))


def _prepare(tool: PhysicalTool, config: Config, folders: list[Path], *, label: str) -> None:
    base = [tool.binary, "--no-defaults", "--prepare", f"--target-dir={folders[0]}",
            f"--use-memory={config.settings.prepare_memory}"]
    _run_tool(base, f"{label}: {tool.name} --prepare")
    for incremental in folders[1:]:
        _run_tool(base + [f"--incremental-dir={incremental}"],
                  f"{label}: {tool.name} --prepare --incremental-dir")
    log.info("%s: prepared", label)


def _run_tool(args: list[str], what: str) -> None:
    with tempfile.TemporaryFile() as output:
        try:
            code = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                  check=False).returncode
        except FileNotFoundError:
            raise RestoreFailed(f"{what}: '{args[0]}' not found") from None
        output.seek(0)
        text = output.read().decode("utf-8", "replace").strip()
    if code != 0 or "completed OK!" not in text:
        last = text.splitlines()[-1] if text else "no message"
        raise RestoreFailed(f"{what} failed (exit status {code}): {last}", detail=text[-4000:])


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
