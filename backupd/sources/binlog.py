"""Cutting a server's binary log, as it streams in, into segments of whole transactions.

``SegmentBuilder`` is pure: it is fed the events of ``backupd.mysql.binlog_stream`` and hands back
``Segment``s (compressed bytes and their record) when one is due:

* every ``flush_every`` seconds after the oldest buffered transaction arrived, or when the buffer
  reaches ``segment_size`` (a single larger transaction makes one larger segment);
* when the file ends (its ROTATE event, or the stream moving on to the next file after a server
  restart): that segment is ``sealed`` and names the next file.

Only whole transactions go into a segment; the one in progress waits for its commit. So a
segment ends where a replica could stop, ``position`` is always where a new stream must start
to continue without a gap or a duplicate, and a segment record's GTIDs and times describe
exactly what it holds. Memory use is one segment's bytes plus the open transaction; nothing is
spooled to disk.

A segment object is ``MAGIC``, the file's FORMAT_DESCRIPTION event (unless the segment starts
the file, which then holds it already), then the events: a valid binlog file on its own, which
``mariadb-binlog`` reads as is.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import zstandard

from backupd.errors import SourceError
from backupd.mysql.binlog_events import (
    FORMAT_DESCRIPTION_EVENT,
    HEARTBEAT_EVENT,
    MAGIC,
    ROTATE_EVENT,
    Event,
    Transaction,
    TransactionReader,
)
from backupd.mysql.binlog_stream import StreamEvent
from backupd.repo.binlogs import FIRST_EVENT_POS, SegmentRecord, SegmentSealing, split_gtid
from backupd.repo.layout import segment_key


class StreamOutOfStep(SourceError):
    """An event that does not start where the previous one ended: the stream is not the one
    the builder is following (the archiver reconnects from its position)."""


@dataclass(frozen=True)
class Segment:
    """One segment ready to commit: its record and its compressed object."""

    record: SegmentRecord
    data: bytes


@dataclass
class _Pending:
    """The complete transactions buffered for the next segment."""

    file: str
    start: int
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    end: int = 0
    transactions: int = 0
    gtids: dict[str, list[int]] = field(default_factory=dict)
    last_gtids: dict[str, str] = field(default_factory=dict)
    first_gtid: str | None = None
    last_gtid: str | None = None
    first_at: datetime | None = None
    last_at: datetime | None = None
    since: float | None = None  # monotonic time the first transaction was buffered

    def add(self, group: Transaction, now: float) -> None:
        for event in group.events:
            self.chunks.append(event.raw)
        self.size += group.size
        self.end = group.end_pos
        if self.since is None:
            self.since = now
        if group.gtid is not None:
            self.transactions += 1
            domain, seq = split_gtid(group.gtid)
            span = self.gtids.setdefault(domain, [seq, seq])
            span[0], span[1] = min(span[0], seq), max(span[1], seq)
            self.last_gtids[domain] = group.gtid
            self.first_gtid = self.first_gtid or group.gtid
            self.last_gtid = group.gtid
            committed = group.committed_at  # binlog order is commit order, but times may step back
            self.first_at = min(self.first_at, committed) if self.first_at else committed
            self.last_at = max(self.last_at, committed) if self.last_at else committed


class SegmentBuilder:
    """Turns a stream's events into segments (module docstring). ``position`` is where the
    stream must resume after a reconnect: the end of the last complete transaction."""

    def __init__(self, shard: str, file: str, pos: int, *, flush_every: float, segment_size: int,
                 level: int = 3, monotonic: Callable[[], float] = time.monotonic,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), sealing: SegmentSealing | None = None,
                 server_id: int | None = None):
        """``sealing``: encrypt each segment with the run's data key; ``server_id``: the
        streamed server's, recorded in every segment record."""
        self.shard = shard
        self.server_id = server_id
        self.sealing = sealing
        self.flush_every = flush_every
        self.segment_size = segment_size
        self.monotonic = monotonic
        self.clock = clock
        self.file = file
        self.pos = pos                 # the end of the last event consumed (complete or not)
        self.committed_pos = pos       # the end of the last complete transaction
        self.header: bytes | None = None  # the current file's FORMAT_DESCRIPTION event
        self.reader = TransactionReader()
        self.pending = _Pending(file, pos)
        self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)

    @property
    def position(self) -> tuple[str, int]:
        return self.file, self.committed_pos

    @property
    def buffered(self) -> int:
        return self.pending.size

    def restart(self) -> None:
        """Forget the transaction in progress (the stream broke): the next stream starts at
        ``position`` and sends it again."""
        self.reader = TransactionReader()
        self.pos = self.committed_pos

    def feed(self, item: StreamEvent) -> list[Segment]:
        """Take one streamed event; return the segments it completes (usually none)."""
        event = item.event
        if event.type == HEARTBEAT_EVENT:
            return self.tick()
        done: list[Segment] = []
        if item.file != self.file:
            done += self._seal(next_file=item.file)
        if event.type == FORMAT_DESCRIPTION_EVENT:
            self.header = event.raw
            if event.artificial or event.end_pos <= self.pos:
                return done  # sent again at a reconnect: the file's copy is already archived
        elif event.artificial:
            return done
        start = event.end_pos - len(event.raw)
        if start != self.pos:
            raise StreamOutOfStep(f"shard {self.shard}: binlog event at {self.file}:{start} does not follow "
                                  f"{self.file}:{self.pos}")
        self.pos = event.end_pos
        group = self.reader.feed(event)
        if group is not None:
            self.pending.add(group, self.monotonic())
            self.committed_pos = group.end_pos
        if event.type == ROTATE_EVENT and self.reader.open is None:
            done += self._seal(next_file=event.rotate_to(self._checksums()))
        elif self.pending.size >= self.segment_size:
            done += self.flush()
        return done + self.tick()

    def tick(self) -> list[Segment]:
        """The segment due by time, if any (called on every event and heartbeat)."""
        since = self.pending.since
        if since is not None and self.monotonic() - since >= self.flush_every:
            return self.flush()
        return []

    def flush(self, *, sealed: bool = False, next_file: str | None = None) -> list[Segment]:
        """The buffered transactions as a segment now (none if nothing is buffered and the file
        is not being sealed)."""
        pending = self.pending
        if not pending.chunks and not sealed:
            return []
        self.pending = _Pending(self.file, self.committed_pos)
        # sealed with nothing new since the last segment (a file that ended without a ROTATE,
        # e.g. the server crashed): an empty segment still records that the file ended there
        prefix = [MAGIC] if pending.start == FIRST_EVENT_POS else [MAGIC, self._header()]
        raw = b"".join(prefix + pending.chunks)
        data = self._compressor.compress(raw)
        end = pending.end or pending.start
        if self.sealing is not None:
            data = self.sealing.seal(segment_key(self.shard, pending.file, pending.start, end), data)
        record = SegmentRecord(
            shard=self.shard, file=pending.file, start_pos=pending.start,
            end_pos=end, sealed=sealed, next_file=next_file,
            transactions=pending.transactions, gtids=pending.gtids, last_gtids=pending.last_gtids,
            first_gtid=pending.first_gtid,
            last_gtid=pending.last_gtid, first_event_at=pending.first_at, last_event_at=pending.last_at,
            size=len(data), raw_size=len(raw), sha256=hashlib.sha256(data).hexdigest(), archived_at=self.clock(),
            key_run=self.sealing.run if self.sealing else None,
            encryption=self.sealing.record if self.sealing else None, server_id=self.server_id)
        return [Segment(record, data)]

    def _seal(self, next_file: str) -> list[Segment]:
        """The current file has ended: its last segment, sealed, and a fresh start in ``next_file``."""
        if self.reader.open is not None:
            raise StreamOutOfStep(f"shard {self.shard}: binlog {self.file} ended inside a transaction "
                                  f"(at {self.pos})")
        done = self.flush(sealed=True, next_file=next_file)
        self.file, self.pos, self.committed_pos, self.header = next_file, FIRST_EVENT_POS, FIRST_EVENT_POS, None
        self.pending = _Pending(next_file, FIRST_EVENT_POS)
        return done

    def _header(self) -> bytes:
        if self.header is None:
            raise StreamOutOfStep(f"shard {self.shard}: no format description event for {self.file}")
        return self.header

    def _checksums(self) -> bool:
        return self.header is not None and Event.from_raw(self.header).checksum()
