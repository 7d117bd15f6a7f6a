"""One backup, end to end: Source -> PartCompressor -> Uploader -> manifest (committed last).

Contract of ``run_backup``: it returns the committed Manifest, or raises and leaves no manifest
and no part of this backup in any store. The source's stream is read and compressed once; each
part goes to every store of the shard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from backupd import __version__
from backupd.backup.sections import write_sections
from backupd.backup.uploader import Uploader
from backupd.config import Config, Settings
from backupd.errors import BackupFailed, UsageError
from backupd.mysql.replication import choose_server
from backupd.progress import Progress
from backupd.repo.catalog import Catalog, commit_manifest
from backupd.repo.codec import PartCompressor, Sealer
from backupd.repo.encryption import DataKey, StreamEncryptor
from backupd.repo.keys import KeyObject, recipients_of
from backupd.repo.layout import new_backup_id, part_key
from backupd.repo.model import BackupKind, Codec, Encryption, Manifest, Section, StoreStatus, utc_now
from backupd.repo.repository import Shard
from backupd.sources.base import SectionedSourceStream, Source, SourceStream
from backupd.sources.incremental import IncrementalSource
from backupd.sources.physical import PhysicalSource
from backupd.sources.table_dump import TableDumpSource
from backupd.stores.base import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackupReport:
    manifest: Manifest
    seconds: float
    degraded: dict[str, str]  # store: why it does not hold the backup

    @property
    def throughput(self) -> float:
        """Raw bytes per second."""
        return self.manifest.raw_bytes / self.seconds if self.seconds > 0 else 0.0


def newest_full(backups: list[Manifest], shard_id: str, *, physical: bool = False) -> Manifest:
    """The newest committed full of the shard among ``backups`` (an incremental's base):
    a physical one for a physical incremental, a logical one otherwise."""
    fulls = [m for m in backups if m.kind == "full" and m.shard == shard_id and m.is_physical == physical]
    if not fulls:
        what = "physical full backup" if physical else "logical full backup"
        raise BackupFailed(f"shard {shard_id}: no committed {what} to base an incremental on",
                           hint=f"take a full first: backupd backup --shard {shard_id} --kind full")
    return max(fulls, key=lambda m: (m.snapshot_at, m.id))


def make_source(config: Config, shard: Shard, kind: BackupKind,
                backups: Callable[[], list[Manifest]]) -> tuple[Source, str | None]:
    """The source for a backup of ``kind``, and the id of its base full (incrementals)."""
    settings = config.settings
    if shard.config.is_physical and kind in ("full", "incremental"):
        base = newest_full(backups(), shard.id, physical=True) if kind == "incremental" else None
        return PhysicalSource(shard, settings, base=base), base.id if base else None
    if kind == "full":
        return TableDumpSource(shard, settings), None
    if kind == "incremental":
        base = newest_full(backups(), shard.id)
        window = config.schedule.for_shard(shard.id).incremental_window
        return IncrementalSource(shard, settings, base=base, window=window,
                                 columns=config.incremental_columns(shard.id)), base.id
    raise UsageError(f"{shard.label}: unknown backup kind '{kind}' (full or incremental)")


def _read_on(manifest: Manifest) -> str | None:
    """The replica a backup was read on (None: the primary)."""
    return manifest.taken_from.replica if manifest.taken_from is not None else None


def run_backup(config: Config, shard: Shard, kind: BackupKind = "full", *,
               clock: Callable[[], datetime] = utc_now,
               before_commit: Callable[[], None] | None = None,
               backups: list[Manifest] | None = None) -> BackupReport:
    """Take one backup of ``shard`` and commit it to its stores (see the module contract).

    ``before_commit`` runs after every part is stored and before the manifest is written; if
    it raises (the shard lock was lost, say), the backup is aborted like any other failure.
    ``backups`` (the shard's committed backups; default: read from its stores) is where an
    incremental finds its base full.
    """
    shard = choose_server(shard)  # backup_from = "replica": the replica it reads, or a refusal
    shard_id, stores = shard.id, shard.stores
    if kind == "incremental":
        backups = backups if backups is not None else Catalog(stores).backups(shard_id)
        base = newest_full(backups, shard_id, physical=shard.config.is_physical)
        if base.is_encrypted != config.encryption.enabled:  # a chain never mixes plain and encrypted
            log.warning("shard %s: encryption was turned %s since the base full %s: taking a full instead of an "
                        "incremental", shard_id, "on" if config.encryption.enabled else "off", base.id)
            kind = "full"
        elif base.is_physical and _read_on(base) != shard.from_replica:  # LSNs are one server's own
            log.warning("shard %s: the base full %s was copied on %s, this backup reads %s: taking a full instead "
                        "of a physical incremental", shard_id, base.id, _read_on(base) or "the primary",
                        shard.from_replica or "the primary")
            kind = "full"
    source, parent_id = make_source(config, shard, kind,
                                    lambda: backups if backups is not None else Catalog(stores).backups(shard_id))
    settings = config.settings
    started_at, started = clock(), time.monotonic()
    backup_id = new_backup_id(kind, started_at)
    log.info("shard %s: backup %s started (%s %s%s, to %s)", shard_id, backup_id, source.method,
             kind, f" on base {parent_id}" if parent_id else "", ", ".join(s.name for s in stores))
    sealing = _Sealing.new(config, shard_id, backup_id) if config.encryption.enabled else None
    sealer = sealing.encryptor if sealing is not None else None
    uploader = Uploader(stores, shard_id, backup_id, parts_in_flight=settings.parts_in_flight)
    previous = [m for m in (backups or []) if m.kind == kind]  # the last one's size: an estimate
    progress = Progress(f"shard {shard_id}: {kind} backup",
                        max(previous, key=lambda m: m.snapshot_at).raw_bytes if previous else None, estimate=True)
    sections: list[Section] | None = None
    try:
        with source.open() as stream:
            if isinstance(stream, SectionedSourceStream):
                sections = write_sections(stream, uploader, settings, progress, sealer)
            else:
                _write_stream(stream, uploader, settings, progress, sealer)
            progress.finish()  # what follows (the reference, the last uploads) reads no more source bytes
            result = stream.result()
        complete = uploader.finish()
        statuses = {s.name: StoreStatus(state="complete") for s in complete}
        statuses.update({name: StoreStatus(state="failed", error=reason)
                         for name, reason in uploader.failed.items()})
        manifest = Manifest(
            id=backup_id, shard=shard_id, kind=kind, method=result.method, parent_id=parent_id,
            started_at=started_at, finished_at=clock(), snapshot_at=result.snapshot_at,
            databases=result.databases,
            coordinates=result.coordinates, server=result.server,
            codec=Codec(level=settings.compression_level), parts=sorted(uploader.records, key=lambda p: p.index),
            raw_bytes=sum(p.raw_size for p in uploader.records),
            stored_bytes=sum(p.size for p in uploader.records),
            reference=result.reference, stores=statuses,
            tool_versions={"backupd": __version__, **result.tool_versions},
            incremental=result.incremental, physical=result.physical, sections=sections,
            taken_from=result.taken_from,
            encryption=sealing.record if sealing is not None else None)
        if before_commit is not None:
            before_commit()
        committed = commit_manifest(manifest, complete, key_object=sealing.key_object if sealing else None)
    except BaseException:
        progress.finish()
        log.error("shard %s: backup %s failed; deleting its parts", shard_id, backup_id)
        uploader.abort()
        if sealing is not None:
            sealing.delete_key_object(stores)
        raise
    lost = [s for s in complete if s not in committed]
    if lost:
        uploader.delete_written(lost)
        if sealing is not None:
            sealing.delete_key_object(lost)
    degraded = dict(uploader.failed)
    degraded.update({s.name: "manifest could not be written" for s in lost})
    for name, reason in degraded.items():
        log.warning("DEGRADED: shard %s backup %s is missing from store %s: %s",
                    shard_id, backup_id, name, reason)
    report = BackupReport(manifest, time.monotonic() - started, degraded)
    log.info("shard %s: backup %s committed: %d parts, %d raw bytes -> %d stored (%.2fx) in %.1fs",
             shard_id, backup_id, len(manifest.parts), manifest.raw_bytes, manifest.stored_bytes,
             manifest.compression_ratio, report.seconds)
    return report


@dataclass(frozen=True)
class _Sealing:
    """An encrypted backup's data key, its wrapped form and its manifest record."""

    shard: str
    backup_id: str
    key: DataKey
    key_object: KeyObject
    record: Encryption

    @classmethod
    def new(cls, config: Config, shard: str, backup_id: str) -> _Sealing:
        key = DataKey.generate()
        wrapped = KeyObject.wrap(key, recipients_of(config.encryption), scope="backup", shard=shard, owner=backup_id)
        return cls(shard, backup_id, key, wrapped, Encryption.of(key))

    def delete_key_object(self, stores: list[Store]) -> None:
        """Best effort: the key object of a backup that did not commit to ``stores``."""
        for store in stores:
            try:
                store.delete(self.key_object.object_key)
            except Exception as exc:
                log.error("store %s: could not delete key object %s: %s", store.name, self.key_object.object_key, exc)

    def encryptor(self, index: int) -> StreamEncryptor:
        """Part ``index``'s encryptor: its key in the store is its associated data."""
        return StreamEncryptor(self.key, part_key(self.shard, self.backup_id, index), self.record.chunk_size)


def _write_stream(stream: SourceStream, uploader: Uploader, settings: Settings, progress: Progress,
                  sealer: Sealer | None) -> None:
    """A single stream (a physical backup's), compressed once into parts for the uploader."""
    compressor = PartCompressor(settings.part_size, settings.compression_level, settings.compression_threads,
                                sealer=sealer)
    try:
        for chunk in stream.chunks():
            progress.advance(len(chunk))
            uploader.submit_all(compressor.write(chunk))
        uploader.submit_all(compressor.finish())
    finally:
        compressor.close()
