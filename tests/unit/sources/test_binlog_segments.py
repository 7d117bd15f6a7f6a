"""Cutting a binlog stream into segments (``backupd.sources.binlog``): whole transactions only,
by time and by size, sealed at rotations and when a crashed file ends, out-of-step streams
refused; every segment is a binlog file on its own, with a record that describes it."""

from __future__ import annotations

import hashlib

import pytest
import zstandard

from backupd.mysql.binlog_events import MAGIC, read_events, transactions
from backupd.sources.binlog import SegmentBuilder, StreamOutOfStep
from tests.unit.binlog_fakes import Binlog, heartbeat


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def builder(log: Binlog, clock: Clock, **kw: float) -> SegmentBuilder:
    return SegmentBuilder("7", log.name, log.pos, flush_every=kw.get("flush_every", 5.0),
                          segment_size=int(kw.get("segment_size", 1 << 20)), monotonic=clock)


def raw(segment) -> bytes:
    return zstandard.ZstdDecompressor().decompress(segment.data)


def test_a_segment_holds_whole_transactions_and_waits_flush_every():
    log, clock = Binlog(), Clock()
    fde = log.fde()
    cut = builder(log, clock)
    cut.pos = cut.committed_pos = 4
    cut.pending.start = 4
    assert cut.feed(fde) == []
    events = log.transaction(timestamp=1_800_000_001) + log.transaction(timestamp=1_800_000_002)
    half = events[:6]
    for item in half:  # the first transaction and the start of the second
        assert cut.feed(item) == []
    assert cut.position == ("bin.000001", events[3].event.end_pos)  # the second is still open
    clock.now += 5
    [segment] = cut.feed(heartbeat("bin.000001"))
    record = segment.record
    assert (record.start_pos, record.end_pos, record.transactions) == (4, events[3].event.end_pos, 1)
    assert record.first_gtid == record.last_gtid == "0-1-1" and record.gtids == {"0": [1, 1]}
    assert record.sha256 == hashlib.sha256(segment.data).hexdigest() and record.size == len(segment.data)
    image = raw(segment)
    assert image.startswith(MAGIC) and len(image) == record.raw_size
    assert [t.gtid for t in transactions(read_events(image))] == [None, "0-1-1"]  # the FDE, then the transaction
    for item in events[6:]:
        cut.feed(item)
    clock.now += 5
    [second] = cut.tick()
    assert (second.record.start_pos, second.record.first_gtid) == (record.end_pos, "0-1-2")
    image = raw(second)  # not the file's start: the format description is put in front
    assert [e.type for e in read_events(image)][0] == 15 and image.count(MAGIC) == 1


def test_a_segment_is_cut_at_segment_size_and_a_big_transaction_is_never_split():
    log, clock = Binlog(), Clock()
    cut = builder(log, clock, segment_size=64 * 1024)
    cut.header = log.fde().event.raw
    cut.pos = cut.committed_pos = cut.pending.start = log.pos
    done = []
    for item in log.transaction(rows=2000):  # ~100 KiB in one transaction
        done += cut.feed(item)
    assert len(done) == 1 and done[0].record.raw_size > 64 * 1024 and done[0].record.transactions == 1


def test_a_rotation_seals_the_file_and_the_next_starts_at_4():
    log, clock = Binlog(), Clock()
    cut = builder(log, clock)
    cut.header = log.fde().event.raw
    cut.pos = cut.committed_pos = cut.pending.start = log.pos
    for item in log.ddl():
        cut.feed(item)
    [sealed] = cut.feed(log.rotate("bin.000002"))
    assert sealed.record.sealed and sealed.record.next_file == "bin.000002"
    assert cut.position == ("bin.000002", 4)
    nxt = Binlog("bin.000002", seq=log.seq)
    assert cut.feed(nxt.fde()) == []
    for item in nxt.transaction():
        cut.feed(item)
    [segment] = cut.flush()
    assert (segment.record.file, segment.record.start_pos, segment.record.last_gtid) == ("bin.000002", 4, "0-1-2")
    assert raw(segment).count(MAGIC) == 1  # the file's own format description, not a second one


def test_a_file_that_ends_without_a_rotate_is_sealed_by_the_next_file():
    """A crashed server's last file has no ROTATE: the stream just moves on to the next file;
    the old file gets an empty sealed segment so the archive stays contiguous."""
    log, clock = Binlog(), Clock()
    cut = builder(log, clock)
    cut.header = log.fde().event.raw
    cut.pos = cut.committed_pos = cut.pending.start = log.pos
    for item in log.transaction():
        cut.feed(item)
    [data] = cut.flush()
    nxt = Binlog("bin.000002", seq=log.seq)
    [sealed] = cut.feed(nxt.fde())
    assert sealed.record.sealed and (sealed.record.start_pos, sealed.record.end_pos) == (data.record.end_pos,) * 2
    assert sealed.record.transactions == 0 and sealed.record.next_file == "bin.000002"


def test_an_event_that_does_not_follow_is_refused_and_restart_forgets_the_open_transaction():
    log, clock = Binlog(), Clock()
    cut = builder(log, clock)
    cut.header = log.fde().event.raw
    cut.pos = cut.committed_pos = cut.pending.start = log.pos
    first = log.transaction()
    for item in first[:2]:
        cut.feed(item)
    with pytest.raises(StreamOutOfStep, match="does not follow"):
        cut.feed(log.transaction()[0])  # a whole transaction's worth of bytes skipped
    cut.restart()
    assert cut.pos == cut.committed_pos and cut.reader.open is None
    for item in first:  # the stream starts again at the position: the open transaction comes again
        cut.feed(item)
    assert cut.pending.transactions == 1
