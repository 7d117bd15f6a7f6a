"""The binlog archive of a shard: segments, their records, and what they cover.

A segment is one immutable object holding bytes ``[start, end)`` of one binlog file, as whole
transactions, compressed (one zstd frame with its checksum): ``MAGIC``, the file's format
description event, then the events. Its record (``SegmentRecord``, JSON, written after the
object: the segment exists only once its record does) names the file and positions, the first
and last GTID of each domain, the first and last event time, the sha256 of the object, and
whether the file ended there (``sealed``: the next segment starts the next file at position 4).

``BinlogArchive`` reads the records from the stores and says what they cover: the contiguous
ranges, the gaps between them (a binlog purged before it was archived, a segment lost from every
store), and the records a point-in-time restore replays from a backup's coordinates to a point.
A small position object (``<shard>/binlogs/position.json``) says until when the archiver was
caught up with the server, so an idle shard is not mistaken for a lagging one.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backupd.errors import CatalogError, NoBackupFound, StoreError
from backupd.repo.encryption import DataKey, encrypt
from backupd.repo.layout import binlog_prefix, format_id_time, parse_segment_key, segment_key
from backupd.repo.model import Coordinates, Encryption, PartRecord
from backupd.repo.sealed import parse_json, seal, unseal
from backupd.stores.base import Payload, Store

log = logging.getLogger(__name__)

SEGMENT_FORMAT: Literal[2] = 2  # 2: sealed (``content_sha256``, backupd.repo.sealed); 1 is still read
ENCRYPTED_SEGMENT_FORMAT: Literal[3] = 3  # 3: an encrypted segment (``key_run``, ``encryption``)
SERVER_SEGMENT_FORMAT: Literal[4] = 4  # 4: ``server_id`` of the server streamed (encrypted or not)
FIRST_EVENT_POS = 4  # a binlog file's events start after its magic number


class SegmentRecord(BaseModel):
    """What one archived segment holds (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1, 2, 3, 4] = SEGMENT_FORMAT
    shard: str
    file: str
    start_pos: int = Field(ge=FIRST_EVENT_POS)
    end_pos: int = Field(ge=FIRST_EVENT_POS)
    sealed: bool = False            # the file ends at end_pos (a rotation): the next file follows
    next_file: str | None = None
    transactions: int = Field(ge=0)
    gtids: dict[str, list[int]] = {}  # per GTID domain (or MySQL source uuid): [first seq, last seq]
    last_gtids: dict[str, str] = {}   # per GTID domain: its last GTID here
    first_gtid: str | None = None
    last_gtid: str | None = None
    first_event_at: datetime | None = None  # the earliest commit time of its transactions
    last_event_at: datetime | None = None   # the latest (binlog order is commit order, times may step back)
    size: int = Field(ge=0)
    raw_size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    archived_at: datetime
    key_run: str | None = None  # encrypted: the archiver run whose data key (backupd.repo.keys) sealed it
    encryption: Encryption | None = None
    server_id: int | None = None  # the @@server_id of the server whose binlog this is (format 4)

    @property
    def object_key(self) -> str:
        return segment_key(self.shard, self.file, self.start_pos, self.end_pos)

    @property
    def record_key(self) -> str:
        return segment_key(self.shard, self.file, self.start_pos, self.end_pos, record=True)

    def as_part(self, index: int) -> PartRecord:
        """The segment's object as a part, for ``backupd.repo.fetch.PartFetcher`` (verified reads)."""
        return PartRecord(index=index, key=self.object_key, size=self.size, raw_size=self.raw_size,
                          sha256=self.sha256)

    def holds_gtid(self, gtid: str) -> bool:
        """Whether the GTID ``domain-server-seq`` (or ``uuid:n``) is one of this segment's."""
        domain, seq = split_gtid(gtid)
        first, last = self.gtids.get(domain, [0, -1])
        return first <= seq <= last

    def to_json(self) -> bytes:
        encrypted = self.encryption is not None
        absent = ({"key_run", "encryption"} if not encrypted else set()) | \
            ({"server_id"} if self.server_id is None else set())
        document = self.model_dump(mode="json", exclude=absent or None)
        version = SERVER_SEGMENT_FORMAT if self.server_id is not None else \
            ENCRYPTED_SEGMENT_FORMAT if encrypted else SEGMENT_FORMAT
        return seal({**document, "format_version": version}, indent=1)

    @classmethod
    def from_json(cls, data: bytes, *, origin: str) -> SegmentRecord:
        what = f"binlog segment record {origin}"
        document = parse_json(data, what=what)
        document = unseal(document, what=what, required=document.get("format_version") != 1)
        try:
            return cls.model_validate(document)
        except (ValueError, ValidationError) as exc:
            raise CatalogError(f"{what} is unreadable: {exc}".splitlines()[0]) from None


@dataclass(frozen=True)
class SegmentSealing:
    """An encrypting archiver run: its id, its data key (wrapped in the run's key object,
    ``backupd.repo.keys.binlog_key_object_key``) and what its segment records say."""

    run: str
    key: DataKey
    record: Encryption

    @classmethod
    def new(cls, moment: datetime) -> SegmentSealing:
        key = DataKey.generate()
        return cls(f"{format_id_time(moment)}-{secrets.token_hex(3)}", key, Encryption.of(key))

    def seal(self, object_key: str, data: bytes) -> bytes:
        """A segment's compressed bytes, encrypted; its object key is the associated data."""
        return encrypt(data, self.key, object_key, self.record.chunk_size)


def split_gtid(gtid: str) -> tuple[str, int]:
    if ":" in gtid:  # MySQL: uuid:n
        source, _, n = gtid.rpartition(":")
        return source, int(n)
    domain, _server, seq = gtid.split("-")
    return domain, int(seq)


def gtid_position(text: str | None, *, what: str) -> dict[str, int]:
    """A GTID position as the last sequence number per domain (MariaDB ``0-1-57,1-2-9``) or per
    source (MySQL ``uuid:1-57``). Raises ``NoBackupFound`` for a MySQL set with holes (which no
    single number per source describes)."""
    position: dict[str, int] = {}
    for item in (text or "").replace("\n", "").split(","):
        item = item.strip()
        if not item:
            continue
        if ":" in item:
            source, *intervals = item.split(":")
            if len(intervals) != 1 or not intervals[0].split("-")[0] == "1":
                raise NoBackupFound(f"{what}: GTID set {item!r} has holes: it cannot be matched to another "
                                    "server's binary log")
            position[source] = int(intervals[0].split("-")[-1])
        else:
            domain, _server, seq = item.split("-")
            position[domain] = max(position.get(domain, 0), int(seq))
    return position


def follows(before: SegmentRecord, after: SegmentRecord) -> bool:
    """Whether ``after`` starts exactly where ``before`` ends (nothing between them). A record
    never follows itself (an empty one, which marks where a crashed server's file ended, starts
    where it ends)."""
    if before.file == after.file:
        return after.start_pos == before.end_pos and (after.start_pos, after.end_pos) != (before.start_pos,
                                                                                         before.end_pos)
    return before.sealed and before.next_file == after.file and after.start_pos == FIRST_EVENT_POS


@dataclass(frozen=True)
class Gap:
    """Binlog bytes the archive does not hold: from ``after`` (file, position) to ``before``."""

    after: tuple[str, int]
    before: tuple[str, int] | None  # None: nothing archived after it

    def describe(self) -> str:
        start = f"{self.after[0]}:{self.after[1]}"
        return f"{start} to {self.before[0]}:{self.before[1]}" if self.before else f"after {start}"


@dataclass(frozen=True)
class Position:
    """Where the archive ends (the point the archiver resumes from), the newest archived event's
    time, and when the archiver last saw the server with nothing newer (the archive was
    complete then). Written by the archiver after its records; read by ``backupd status``."""

    file: str
    pos: int
    caught_up_at: datetime | None = None
    last_event_at: datetime | None = None
    written_at: datetime | None = None

    @property
    def archived_until(self) -> datetime | None:
        times = [t for t in (self.caught_up_at, self.last_event_at) if t is not None]
        return max(times) if times else None

    def to_json(self) -> bytes:
        return seal({"file": self.file, "pos": self.pos, "caught_up_at": _iso(self.caught_up_at),
                     "last_event_at": _iso(self.last_event_at), "written_at": _iso(self.written_at)}, indent=None)

    @classmethod
    def from_json(cls, data: bytes) -> Position:
        """Raises ``CatalogError`` (unparseable, or altered: its seal does not match)."""
        document = unseal(parse_json(data, what="binlog position"), what="binlog position", required=False)

        def moment(key: str) -> datetime | None:
            value = document.get(key)
            return datetime.fromisoformat(value) if value else None

        return cls(str(document["file"]), int(document["pos"]), moment("caught_up_at"), moment("last_event_at"),
                   moment("written_at"))


def read_position(stores: list[Store], shard: str) -> Position | None:
    """The newest ``position.json`` of the shard among ``stores`` (None: no archiver ran)."""
    found: list[Position] = []
    for store in stores:
        try:
            found.append(Position.from_json(store.get(position_key(shard))))
        except (StoreError, CatalogError, ValueError, KeyError, TypeError):
            continue
    return max(found, key=lambda p: p.written_at or datetime.min.replace(tzinfo=UTC), default=None)


def position_key(shard: str) -> str:
    return f"{binlog_prefix(shard)}position.json"


class BinlogArchive:
    """A shard's archived segments, read from ``stores`` (see the module docstring)."""

    def __init__(self, stores: list[Store], shard: str):
        self.stores = stores
        self.shard = shard
        self.records: list[SegmentRecord] = []
        self.found_in: dict[str, list[str]] = {}   # record key: stores holding it
        self.objects: dict[str, set[str]] = {}    # store: object keys it lists
        self.key_runs: dict[str, set[str]] = {}   # store: the encrypting runs whose key object it lists
        self.unreadable: list[str] = []
        self.position: Position | None = None

    def load(self) -> BinlogArchive:
        """Read every store's listing and records (a record is read once, from the first store
        that has a good copy); returns self."""
        by_key: dict[str, SegmentRecord] = {}
        for store in self.stores:
            try:
                listing = [info.key for info in store.list(binlog_prefix(self.shard))]
            except StoreError as exc:
                self.unreadable.append(str(exc))
                continue
            self.objects[store.name] = {k for k in listing if (p := parse_segment_key(k)) and not p.record}
            keys = f"{binlog_prefix(self.shard)}keys/"
            self.key_runs[store.name] = {k[len(keys):].removesuffix(".json") for k in listing if k.startswith(keys)}
            for key in listing:
                parsed = parse_segment_key(key)
                if parsed is None or not parsed.record:
                    continue
                if key not in by_key:
                    try:
                        by_key[key] = SegmentRecord.from_json(store.get(key), origin=f"{store.name}:{key}")
                    except (CatalogError, StoreError) as exc:
                        self.unreadable.append(str(exc))
                        continue
                self.found_in.setdefault(key, []).append(store.name)
        self.records = sorted(by_key.values(), key=lambda r: (r.file, r.start_pos, r.end_pos))
        self.position = read_position(self.stores, self.shard)
        return self

    @property
    def newest(self) -> SegmentRecord | None:
        return self.records[-1] if self.records else None

    @property
    def archived_until(self) -> datetime | None:
        """The time of the newest archived event, or when the archiver was last caught up with
        the server at the archive's end (an idle shard has archived everything until then)."""
        until = max((r.last_event_at for r in self.records if r.last_event_at), default=None)
        position = self.position
        if position is not None and position.caught_up_at and (position.file, position.pos) == self.end:
            until = max(until, position.caught_up_at) if until else position.caught_up_at
        return until

    @property
    def end(self) -> tuple[str, int] | None:
        """Where the archive's newest record ends: the point an archiver resumes from."""
        newest = self.newest
        if newest is None:
            return None
        return (newest.next_file, FIRST_EVENT_POS) if newest.sealed and newest.next_file else \
            (newest.file, newest.end_pos)

    def ranges(self) -> list[tuple[SegmentRecord, SegmentRecord, int]]:
        """The contiguous runs of records: (first, last, how many)."""
        runs: list[tuple[SegmentRecord, SegmentRecord, int]] = []
        for record in self.records:
            if runs and follows(runs[-1][1], record):
                first, _, count = runs[-1]
                runs[-1] = (first, record, count + 1)
            else:
                runs.append((record, record, 1))
        return runs

    def gaps(self, since: tuple[str, int] | None = None) -> list[Gap]:
        """The holes between contiguous runs (and, with ``since``, before the first run)."""
        runs = self.ranges()
        holes = [Gap((a[1].file, a[1].end_pos), (b[0].file, b[0].start_pos))
                 for a, b in zip(runs, runs[1:], strict=False)]
        if since is not None and runs and (runs[0][0].file, runs[0][0].start_pos) > since:
            holes.insert(0, Gap(since, (runs[0][0].file, runs[0][0].start_pos)))
        return holes

    @property
    def server_ids(self) -> set[int]:
        """The servers whose binlogs the records hold (an archive follows one server)."""
        return {r.server_id for r in self.records if r.server_id is not None}

    def needs_gtid_mapping(self, server_id: int | None) -> bool:
        """Whether coordinates in server ``server_id``'s binary log must be matched to this
        archive by GTID (it holds another server's binlog: a replica's, or the primary's for a
        backup taken on a replica)."""
        return server_id is not None and bool(self.server_ids) and self.server_ids != {server_id}

    def start_of(self, coordinates: Coordinates, *, what: str) -> tuple[str, int]:
        """Where in this archive a backup's coordinates are: its own ``file``:``pos`` when the
        archive holds the same server's binlog; else (``needs_gtid_mapping``) the start of the
        first record holding a transaction the backup's GTID position ``gtid`` lacks (the replay
        skips what the position holds), or the archive's end when none does. Raises
        ``NoBackupFound`` when transactions between the backup and the archive are missing."""
        file, pos, gtid = coordinates.binlog_file, coordinates.binlog_pos, coordinates.gtid
        if not self.needs_gtid_mapping(coordinates.server_id):
            if not file or pos is None:
                raise NoBackupFound(f"{what} recorded no binlog coordinates: its binlogs cannot be replayed",
                                    hint="restore --to-backup")
            return file, pos
        if not gtid:
            raise NoBackupFound(f"{what} recorded no GTID position, and the binlog archive holds another server's "
                                f"binary log (server_id {sorted(self.server_ids)}): they cannot be matched",
                                hint="restore --to-backup")
        if ":" in gtid:
            raise NoBackupFound(f"{what}: matching MySQL GTID sets to another server's binary log is not supported "
                                "(MariaDB GTIDs only): archive the binlog of the server the backups record",
                                hint="restore --to-backup")
        held = gtid_position(gtid, what=what)
        for record in self.records:
            newer = {d: r for d, r in record.gtids.items() if r[1] > held.get(d, 0)}
            if not newer:
                continue
            before = [r for r in self.records if follows(r, record)]
            missing = {d: (held.get(d, 0) + 1, r[0] - 1) for d, r in newer.items() if r[0] > held.get(d, 0) + 1}
            if missing and not before:
                lost = ", ".join(f"domain {d} seq {a}-{b}" for d, (a, b) in missing.items())
                raise NoBackupFound(f"shard {self.shard}: the binlog archive has a gap after {what}'s GTID position "
                                    f"{gtid}: {lost} (before {record.file}:{record.start_pos}) cannot be replayed",
                                    hint="restore --to-backup (the backup's own point)")
            return record.file, record.start_pos
        end = self.end
        assert end is not None
        return end

    def replay_path(self, file: str, pos: int, *, until: datetime | None = None,
                    gtid: str | None = None) -> list[SegmentRecord]:
        """The records to replay from ``file``:``pos`` (a backup's coordinates) to ``until`` (every
        transaction committed at or before it), to ``gtid`` (that transaction included), or to the
        archive's end. Raises ``NoBackupFound`` naming the gap when the archive does not hold every
        byte of the way, or the point is past what it holds."""
        start = self._covering(file, pos)
        path = [start]
        while not self._reached(path[-1], until, gtid):
            following = [r for r in self.records if follows(path[-1], r)]
            if not following:
                break
            if len(path) > len(self.records):  # each step goes forward: a cycle is a bug, never a hang
                raise CatalogError(f"shard {self.shard}: the binlog archive's records loop at "
                                   f"{following[0].object_key}")
            path.append(following[0])
        last = path[-1]
        if until is None and gtid is None:
            gap = self._next_gap(last)
            if gap is not None:
                raise NoBackupFound(f"shard {self.shard}: the binlog archive has a gap from {gap.describe()}: "
                                    "the newest archived point cannot be reached from this backup",
                                    hint="restore --at a time before the gap, or --to-backup")
        if gtid is not None and not any(r.holds_gtid(gtid) for r in path):
            gap = self._next_gap(last)
            why = f"; the archive has a gap from {gap.describe()}" if gap else ""
            raise NoBackupFound(f"shard {self.shard}: transaction {gtid} is not in the binlog archive after "
                                f"{file}:{pos} (it reaches {last.file}:{last.end_pos}, GTID {last.last_gtid}){why}")
        if until is not None and gtid is None and not self._reached(last, until, None):
            gap = self._next_gap(last)
            archived = self.archived_until
            if gap is not None or archived is None or archived < until:
                reached = _iso(last.last_event_at) if gap else _iso(archived)
                why = f"a gap from {gap.describe()}" if gap else "nothing newer is archived yet"
                raise NoBackupFound(f"shard {self.shard}: the binlog archive reaches {last.file}:{last.end_pos} "
                                    f"({reached}), not {_iso(until)}: {why}",
                                    hint="restore to an earlier --at (backupd status: restorable_until)")
        return path

    def _covering(self, file: str, pos: int) -> SegmentRecord:
        here = [r for r in self.records if r.file == file and r.start_pos <= pos and
                (pos < r.end_pos or (pos == r.end_pos and (r.sealed or r == self._last_in(file))))]
        if here:
            return min(here, key=lambda r: r.start_pos)
        later = [r for r in self.records if (r.file, r.start_pos) > (file, pos)]
        upto = f"{later[0].file}:{later[0].start_pos}" if later else "its end"
        raise NoBackupFound(f"shard {self.shard}: the binlog archive has a gap from {file}:{pos} (the backup's "
                            f"coordinates) to {upto}: those transactions cannot be replayed",
                            hint="restore --to-backup (the backup's own point), or from another target's stores")

    def _last_in(self, file: str) -> SegmentRecord | None:
        records = [r for r in self.records if r.file == file]
        return records[-1] if records else None

    def _next_gap(self, record: SegmentRecord) -> Gap | None:
        later = [r for r in self.records if (r.file, r.start_pos) > (record.file, record.start_pos)
                 and not follows(record, r)]
        return Gap((record.file, record.end_pos), (later[0].file, later[0].start_pos)) if later else None

    @staticmethod
    def _reached(record: SegmentRecord, until: datetime | None, gtid: str | None) -> bool:
        if gtid is not None:
            return record.holds_gtid(gtid)
        if until is not None:
            return record.last_event_at is not None and record.last_event_at > until
        return False

    def summary(self) -> dict[str, Any]:
        """The archive for ``backupd list --binlogs --json``: ranges, gaps, totals."""
        return {"shard": self.shard,
                "ranges": [{"from": f"{a.file}:{a.start_pos}", "to": f"{b.file}:{b.end_pos}",
                            "from_time": _iso(a.first_event_at), "to_time": _iso(b.last_event_at),
                            "segments": n, "first_gtid": a.first_gtid, "last_gtid": b.last_gtid}
                           for a, b, n in self.ranges()],
                "gaps": [g.describe() for g in self.gaps()],
                "segments": len(self.records), "stored_bytes": sum(r.size for r in self.records),
                "archived_until": _iso(self.archived_until)}


def commit_segment(stores: list[Store], record: SegmentRecord, data: bytes,
                   prepare: Callable[[Store], None] | None = None) -> list[str]:
    """Write a segment's object to every store, then its record to every store that took the
    object (the commit point); return the stores that hold it. Raises ``StoreError`` (the last
    one) if none does. ``prepare(store)`` runs first in each store (an encrypting run writes
    its key object there)."""
    holding: list[str] = []
    error: StoreError | None = None
    for store in stores:
        try:
            if prepare is not None:
                prepare(store)
            store.put(record.object_key, Payload.from_bytes(data))
            store.put(record.record_key, Payload.from_bytes(record.to_json()))
            holding.append(store.name)
        except StoreError as exc:
            error = exc
            log.warning("shard %s: binlog segment %s not stored in store %s: %s", record.shard,
                        record.object_key, store.name, exc)
    if not holding:
        assert error is not None
        raise error
    return holding


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None
