"""The binlog archiver of one shard: ``backupd binlogs --shard ID`` (and the daemon's child).

1. Take the shard's binlog lease (``backupd.backup.lease``, kind ``binlogs``): never two
   archivers for one shard, on any host. It is renewed in the background and checked before
   every segment commit (a fence).
2. Delete orphans: segment objects no store has a record for (a run killed between the object
   and its record). A record one store lacks while another has it is copied over.
3. Resume where the archive ends (the newest record's end, or the next file's start if it was
   sealed); on a shard with no archive, from the oldest kept backup's coordinates; with no
   backup either, from the server's current position (said in the log: nothing older can be
   replayed).
   The server read is the primary, or with ``binlogs_from = "replica"`` a replica whose binlog
   holds what it applies (``backupd.mysql.replication.choose_binlog_source``); every record
   names it (``server_id``), and an archive is only ever extended from the server it holds.
   A backup recorded in another server's binlog is started from by GTID (``_file_before``).
4. Stream (``backupd.mysql.binlog_stream``), cut (``backupd.sources.binlog``), commit: each
   segment's object to every store of the shard, then its record. A store that misses one is
   caught up from another store later (tried every ``reconnect_max``), and gets no
   ``position.json`` until then. When the server says it has nothing newer (a heartbeat)
   and nothing is buffered, ``position.json`` records that the archive was complete at that
   moment, so an idle shard's RPO stays small.
5. A broken connection (server restart, network cut) or a stream out of step: the complete
   transactions already read are committed, then the stream reconnects from the archive's end,
   waiting 1 s, doubling up to ``reconnect_max``. The server no longer having the binlog the
   archive needs (purged before it was archived) is logged as an error naming the gap, and
   archiving continues from the server's oldest binlog: the audit reports the gap
   (``binlog-gap``) until a backup newer than it makes it irrelevant.
6. ``stop`` (SIGTERM/SIGINT at the CLI edge): the complete transactions read so far are
   committed, the lease is released, ``run`` returns. After a kill -9, everything acknowledged
   by a record is kept and the next run resumes from it.

backupd never purges, flushes or otherwise writes to the server's binlogs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pymysql

from backupd.backup.lease import Owner, ShardLease, ShardLock
from backupd.config import Config, EndpointConfig
from backupd.errors import ServerError, SourceError, StoreError
from backupd.mysql.binlog_events import HEARTBEAT_EVENT
from backupd.mysql.binlog_stream import BinlogGone, BinlogStream, StreamEvent, replica_server_id
from backupd.mysql.connection import connect, query
from backupd.mysql.replication import ReplicaUnfit, choose_binlog_source, replica_lag
from backupd.repo.binlogs import (
    FIRST_EVENT_POS,
    BinlogArchive,
    Position,
    SegmentRecord,
    SegmentSealing,
    commit_segment,
    gtid_position,
    position_key,
)
from backupd.repo.catalog import Catalog
from backupd.repo.keys import KeyObject, recipients_of
from backupd.repo.model import Coordinates, utc_now
from backupd.repo.repository import Shard
from backupd.sources.binlog import Segment, SegmentBuilder, StreamOutOfStep
from backupd.stores.base import Payload, Store

log = logging.getLogger(__name__)


@dataclass
class ArchiverStats:
    """What one run archived (``backupd binlogs`` prints it when it stops)."""

    shard: str
    started_from: tuple[str, int] | None = None
    segments: int = 0
    transactions: int = 0
    bytes: int = 0                       # compressed bytes committed (per store)
    raw_bytes: int = 0
    reconnects: int = 0
    gaps: list[str] = field(default_factory=list)
    position: tuple[str, int] | None = None
    last_event_at: datetime | None = None
    caught_up_at: datetime | None = None

    @property
    def archived_until(self) -> datetime | None:
        times = [t for t in (self.last_event_at, self.caught_up_at) if t is not None]
        return max(times) if times else None


def binlog_lock(config: Config, shard: Shard, clock: Callable[[], datetime] = utc_now) -> ShardLock:
    owner = Owner.this_process("binlogs")
    return ShardLock([ShardLease(store, shard.id, ttl=config.schedule.lock_ttl, owner=owner, clock=clock,
                                 kind="binlogs") for store in shard.lock_stores])


class BinlogArchiver:
    """Archives one shard's binlogs until ``stop`` is set (module docstring)."""

    def __init__(self, config: Config, shard: Shard, *, stop: threading.Event,
                 clock: Callable[[], datetime] = utc_now,
                 on_progress: Callable[[ArchiverStats], None] | None = None):
        self.config = config
        self.settings = config.binlogs
        self.shard = shard
        self.stop = stop
        self.clock = clock
        self.on_progress = on_progress or (lambda _stats: None)
        self.stats = ArchiverStats(shard.id)
        self.lock = binlog_lock(config, shard, clock)
        self.missing: dict[str, list[SegmentRecord]] = {}  # store name: records it did not take
        self._last_catch_up = time.monotonic()
        self._last_position_write = 0.0
        # encrypting: this run's data key, and the stores its key object is in already
        self.sealing = SegmentSealing.new(clock()) if config.encryption.enabled else None
        self._key_object = KeyObject.wrap(self.sealing.key, recipients_of(config.encryption), scope="binlogs",
                                          shard=shard.id, owner=self.sealing.run) if self.sealing else None
        self._key_in: set[str] = set()
        self.source: EndpointConfig = shard.config  # the server streamed (``choose_binlog_source``)
        self.source_name: str | None = None        # a replica's description, or None (the primary)
        self.server_id: int | None = None

    @property
    def _where(self) -> str:
        return self.source_name or f"the primary {self.shard.config.describe()}"

    @property
    def _label(self) -> str:
        """For messages about the streamed server: the shard's label, with the replica named."""
        return f"{self.shard.label} {self.source_name}" if self.source_name else self.shard.label

    def _connect(self) -> pymysql.connections.Connection:
        return connect(self.source, label=self._label)

    def _server_id(self) -> int:
        conn = self._connect()
        try:
            return int(query(conn, "SELECT @@server_id", label=self.shard.label)[0][0])
        finally:
            conn.close()

    # ------------------------------------------------------------------ the run
    def run(self) -> ArchiverStats:
        """Archive until stopped; raises ``LockHeld`` if another archiver holds the shard,
        ``LockLost`` if the lease is lost, ``BackupFailed`` if no store can take the lease."""
        self.shard.config.password  # noqa: B018 - read now: a missing one is a config error at once
        self.lock.acquire()
        try:
            with self.lock.renewing():
                archive = BinlogArchive(self.shard.stores, self.shard.id).load()
                if not self._find_source(archive):
                    return self.stats  # stopped while the server did not answer
                self._clean(archive)
                start = archive.end or self._resume_point()
                self.stats.started_from = start
                self.stats.last_event_at = archive.newest.last_event_at if archive.newest else None
                log.info("%s: archiving binlogs of %s from %s:%d into %s", self.shard.label, self._where, start[0],
                         start[1], ", ".join(s.name for s in self.shard.stores))
                self._archive_from(start)
        finally:
            self.lock.release()
        return self.stats

    def _find_source(self, archive: BinlogArchive) -> bool:
        """Choose the server to stream and read its ``server_id``, retrying (1 s, doubling up to
        ``reconnect_max``) while it does not answer: a server restarting as the archiver starts
        is waited for, as a broken stream is. False if stopped meanwhile. An archive of another
        server is refused at once (``_check_same_server``)."""
        wait = 1.0
        while True:
            try:
                self.source, self.source_name = choose_binlog_source(self.shard)
                self.server_id = self._server_id()
                break
            except (ServerError, ReplicaUnfit) as exc:
                log.warning("%s; retrying in %.0fs", exc.message, wait)
                if self.stop.wait(wait):
                    return False
                wait = min(self.settings.reconnect_max, wait * 2)
        self._check_same_server(archive)
        return True

    def _check_same_server(self, archive: BinlogArchive) -> None:
        """An archive follows one server's binlog (files and positions are that server's):
        refuse to extend it from another one. Records older than ``server_id`` came from the
        primary (the only source then)."""
        theirs = ",".join(map(str, sorted(archive.server_ids))) if archive.server_ids else \
            "the primary (it was started before records named their server)" if archive.records else None
        if theirs is None or archive.server_ids == {self.server_id} or \
                (not archive.server_ids and self.source_name is None):
            return
        raise SourceError(f"{self.shard.label}: the binlog archive holds the binlog of server_id {theirs}, and "
                          f"{self._where} is server_id {self.server_id}: an archive follows one server's binlog",
                          hint=f"set shards.{self.shard.id}.binlogs_from back to the server the archive was "
                               "started on")

    def _archive_from(self, start: tuple[str, int]) -> None:
        settings = self.settings
        builder = self._builder(start)
        wait = 1.0
        while not self.stop.is_set():
            stream = BinlogStream(self.source, label=self._label,
                                  server_id=replica_server_id(f"{self.shard.id}"), heartbeat=settings.heartbeat,
                                  read_timeout=max(10.0, settings.heartbeat * 10))
            try:
                for item in stream.events(*builder.position):
                    wait = 1.0
                    self._take(builder, item)
                    if self.stop.is_set():
                        break
            except BinlogGone as exc:
                try:
                    builder = self._after_purge(builder, exc)
                    continue
                except (SourceError, ServerError, pymysql.MySQLError) as again:
                    log.warning("%s: %s; retrying in %.0fs", self.shard.label, again, wait)
            except (SourceError, ServerError, pymysql.MySQLError, OSError) as exc:
                if self.stop.is_set():
                    break
                self.stats.reconnects += 1
                level = logging.ERROR if isinstance(exc, StreamOutOfStep) else logging.WARNING
                log.log(level, "%s: binlog stream broke at %s:%d (%s); reconnecting in %.0fs", self.shard.label,
                        *builder.position, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, wait)
            finally:
                stream.close()
            self._commit_all(builder.flush())
            builder.restart()
            if self.stop.wait(wait):
                break
            wait = min(settings.reconnect_max, wait * 2)
        self._commit_all(builder.flush())
        self.stats.position = builder.position

    def _builder(self, start: tuple[str, int]) -> SegmentBuilder:
        return SegmentBuilder(self.shard.id, start[0], start[1], flush_every=self.settings.flush_every,
                              segment_size=self.settings.segment_size, level=self.settings.compression_level,
                              clock=self.clock, sealing=self.sealing, server_id=self.server_id)

    def _take(self, builder: SegmentBuilder, item: StreamEvent) -> None:
        self._commit_all(builder.feed(item))
        if item.event.type == HEARTBEAT_EVENT and builder.buffered == 0 and builder.reader.open is None:  # heartbeat
            self._caught_up(builder)
        if self.missing and time.monotonic() - self._last_catch_up >= self.settings.reconnect_max:
            self._catch_up()

    # ------------------------------------------------------------------ committing
    def _commit_all(self, segments: list[Segment]) -> None:
        for segment in segments:
            self._commit(segment)

    def _commit(self, segment: Segment) -> None:
        """Commit one segment to every store that takes it, retrying (with the stream paused)
        until at least one store holds it or the archiver is stopped."""
        record = segment.record
        wait = 1.0
        while True:
            self.lock.check()
            try:
                holding = commit_segment(self.shard.stores, record, segment.data, prepare=self._key_object_in)
                break
            except StoreError as exc:
                log.error("%s: no store took binlog segment %s (%s); retrying in %.0fs", self.shard.label,
                          record.object_key, exc, wait)
                if self.stop.wait(wait):
                    log.error("%s: stopped with binlog segment %s uncommitted (the next run reads it from "
                              "the server again)", self.shard.label, record.object_key)
                    return
                wait = min(self.settings.reconnect_max, wait * 2)
        for store in self.shard.stores:
            if store.name not in holding:
                self.missing.setdefault(store.name, []).append(record)
        stats = self.stats
        stats.segments += 1
        stats.transactions += record.transactions
        stats.bytes += record.size
        stats.raw_bytes += record.raw_size
        stats.position = (record.next_file, FIRST_EVENT_POS) if record.sealed and record.next_file \
            else (record.file, record.end_pos)  # the archive's end (BinlogArchive.end)
        if record.last_event_at is not None:
            stats.last_event_at = max(stats.last_event_at, record.last_event_at) if stats.last_event_at \
                else record.last_event_at
        log.debug("%s: segment %s committed (%d transactions, %d bytes)", self.shard.label, record.object_key,
                  record.transactions, record.size)
        self._write_position()
        self.on_progress(stats)

    def _key_object_in(self, store: Store) -> None:
        """An encrypting run writes its key object to a store before its first segment there."""
        if self._key_object is not None and store.name not in self._key_in:
            store.put(self._key_object.object_key, Payload.from_bytes(self._key_object.to_json()))
            self._key_in.add(store.name)

    def _caught_up(self, builder: SegmentBuilder) -> None:
        """The server has nothing newer and nothing is buffered: the archive is complete now
        (recorded at most every ``flush_every``)."""
        if time.monotonic() - self._last_position_write < self.settings.flush_every:
            return
        caught_up_at = self.clock()
        if self.source_name is not None:  # a replica has nothing newer than what it has applied
            lag = self._replica_lag()
            if lag is None:
                self._last_position_write = time.monotonic()
                return  # replication stopped: the archive is complete up to its last event only
            caught_up_at -= timedelta(seconds=lag)
        self.stats.position = builder.position
        self.stats.caught_up_at = max(caught_up_at, self.stats.caught_up_at) if self.stats.caught_up_at \
            else caught_up_at
        self._write_position()
        self.on_progress(self.stats)

    def _replica_lag(self) -> float | None:
        try:
            conn = self._connect()
        except ServerError:
            return None
        try:
            return replica_lag(conn, label=self._label)
        except ServerError:
            return None
        finally:
            conn.close()

    def _write_position(self) -> None:
        """Record where the archive ends, its newest event time and when it was last complete
        (``backupd status`` and the daemon's metrics read only this object)."""
        if self.stats.position is None:
            return
        self._last_position_write = time.monotonic()
        position = Position(*self.stats.position, caught_up_at=self.stats.caught_up_at,
                            last_event_at=self.stats.last_event_at, written_at=self.clock())
        for store in self.shard.stores:
            if store.name in self.missing:
                continue  # it lacks segments: it must not claim the archive reaches this far
            try:
                store.put(position_key(self.shard.id), Payload.from_bytes(position.to_json()))
            except StoreError as exc:
                log.debug("%s: position not written to store %s: %s", self.shard.label, store.name, exc)

    def _catch_up(self) -> None:
        """Copy the segments a store missed from a store that holds them."""
        self._last_catch_up = time.monotonic()
        for name, records in list(self.missing.items()):
            store = next(s for s in self.shard.stores if s.name == name)
            while records:
                record = records[0]
                try:
                    data = self._read_from_others(record, exclude=name)
                    self._key_object_in(store)
                    store.put(record.object_key, Payload.from_bytes(data))
                    store.put(record.record_key, Payload.from_bytes(record.to_json()))
                except StoreError as exc:
                    log.debug("%s: store %s still misses binlog segments: %s", self.shard.label, name, exc)
                    break
                records.pop(0)
            if not records:
                del self.missing[name]
                log.info("%s: store %s caught up with the binlog archive", self.shard.label, name)

    def _read_from_others(self, record: SegmentRecord, *, exclude: str) -> bytes:
        error: StoreError | None = None
        for store in self.shard.stores:
            if store.name == exclude:
                continue
            try:
                return store.get(record.object_key)
            except StoreError as exc:
                error = exc
        raise error or StoreError(f"binlog segment {record.object_key} is in no other store", store=exclude,
                                  key=record.object_key)

    # ------------------------------------------------------------------ where to start
    def _clean(self, archive: BinlogArchive) -> None:
        """Delete objects no store has a record for; copy records a store lacks (module docstring)."""
        records = {r.object_key: r for r in archive.records}
        for store in self.shard.stores:
            for key in sorted(archive.objects.get(store.name, set())):
                record = records.get(key)
                try:
                    if record is None:
                        log.warning("%s: deleting orphaned binlog segment %s in store %s (its run died before "
                                    "recording it)", self.shard.label, key, store.name)
                        store.delete(key)
                    elif store.name not in archive.found_in.get(record.record_key, []):
                        store.put(record.record_key, Payload.from_bytes(record.to_json()))
                except StoreError as exc:
                    log.warning("%s: could not clean binlog segment %s in store %s: %s", self.shard.label, key,
                                store.name, exc)

    def _resume_point(self) -> tuple[str, int]:
        """Where a shard with no archive starts (module docstring, 3)."""
        oldest = _oldest_backup_coordinates(Catalog(self.shard.stores), self.shard.id)
        if oldest is not None and oldest.server_id is not None and oldest.server_id != self.server_id:
            start = self._file_before(oldest)
            log.info("%s: no binlog archive yet: starting at %s:%d, the binlog of %s holding the oldest backup's "
                     "GTID position %s", self.shard.label, *start, self._where, oldest.gtid)
            return start
        if oldest is not None:
            assert oldest.binlog_file is not None and oldest.binlog_pos is not None
            log.info("%s: no binlog archive yet: starting at the oldest backup's coordinates", self.shard.label)
            return oldest.binlog_file, oldest.binlog_pos
        conn = self._connect()
        try:
            rows = query(conn, "SHOW MASTER STATUS", label=self.shard.label)
        finally:
            conn.close()
        if not rows:
            raise SourceError(f"{self.shard.label}: the server has no binary log to archive",
                              hint="enable log_bin on the shard")
        log.warning("%s: no backup and no binlog archive yet: archiving from the server's current position "
                    "%s:%s (point-in-time restores start at the first backup)", self.shard.label, rows[0][0],
                    rows[0][1])
        return str(rows[0][0]), int(rows[0][1])

    def _file_before(self, coordinates: Coordinates) -> tuple[str, int]:
        """The start of the newest binlog file of the streamed server whose starting GTID state
        the backup's GTID position holds (MariaDB ``BINLOG_GTID_POS``): archived from there, the
        archive holds every transaction after the backup (a replay skips the ones before it by
        GTID). The oldest file when none does (the log says what the archive lacks)."""
        if not coordinates.gtid or ":" in coordinates.gtid:
            raise SourceError(f"{self.shard.label}: the oldest backup recorded no MariaDB GTID position, and "
                              f"{self._where} is another server than the one its coordinates are in: the archive "
                              "cannot be started where the backup ends")
        held = gtid_position(coordinates.gtid, what=f"{self.shard.label}: the oldest backup")
        conn = self._connect()
        try:
            files = [str(row[0]) for row in query(conn, "SHOW BINARY LOGS", label=self.shard.label)]
            for file in reversed(files):
                state = query(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, FIRST_EVENT_POS),
                              label=self.shard.label)[0][0]
                at_start = gtid_position(str(state or ""), what=f"{self.shard.label}: {file}")
                if all(seq <= held.get(domain, 0) for domain, seq in at_start.items()):
                    return file, FIRST_EVENT_POS
        finally:
            conn.close()
        if not files:
            raise SourceError(f"{self.shard.label}: {self._where} has no binary log to archive")
        log.error("%s: BINLOG GAP: %s's oldest binlog %s starts after the oldest backup's GTID position %s: the "
                  "transactions between cannot be replayed", self.shard.label, self._where, files[0], coordinates.gtid)
        return files[0], FIRST_EVENT_POS

    def _after_purge(self, builder: SegmentBuilder, exc: BinlogGone) -> SegmentBuilder:
        """The server purged what the archive needs next: say so, and go on from its oldest binlog."""
        file, pos = builder.position
        conn = self._connect()
        try:
            files = [str(row[0]) for row in query(conn, "SHOW BINARY LOGS", label=self.shard.label)]
        finally:
            conn.close()
        later = [f for f in files if f > file]
        if not later:
            raise SourceError(f"{self.shard.label}: the server has no binary log at or after {file}:{pos}: {exc}")
        gap = f"{file}:{pos} to {later[0]}:{FIRST_EVENT_POS}"
        self.stats.gaps.append(gap)
        log.error("%s: BINLOG GAP: the server purged its binlogs from %s before they were archived; those "
                  "transactions cannot be replayed (point-in-time restores into the gap will be refused)",
                  self.shard.label, gap)
        return self._builder((later[0], FIRST_EVENT_POS))


def _oldest_backup_coordinates(catalog: Catalog, shard_id: str) -> Coordinates | None:
    """The binlog coordinates of the shard's oldest committed backup that recorded them."""
    for manifest in sorted(catalog.backups(shard_id), key=lambda m: m.snapshot_at):
        coordinates = manifest.coordinates
        if coordinates.binlog_file and coordinates.binlog_pos:
            return coordinates
    return None
