"""Point-in-time restore: replaying archived binlog segments into a restored target, and proving it.

``plan_replay`` decides, before the target is touched, which segments take a restored backup
(its recorded binlog coordinates) to the point asked for: every transaction committed at or
before ``until`` (the binlog's one-second resolution), or up to and including the transaction
``gtid``, or (neither) to the archive's end. A gap anywhere on that way (``backupd.repo.binlogs``)
is a ``NoBackupFound`` naming it.

``replay`` streams the segments in order: each is fetched from the first store with a good copy
(size and sha256 checked, ``backupd.repo.fetch``), decompressed, and its bytes cut to whole
transactions: the events before the backup's coordinates are dropped, and the first transaction
past the point ends the replay. Segments wholly inside the range pass through untouched; only
the first and the last are parsed. Each binlog file's bytes go to ``mysqlbinlog -`` whose SQL
goes straight into the mysql client (the pipeline a DBA runs by hand, per file), with the
session writing to the target's binlog: the replayed transactions keep their GTIDs.

The proof: afterwards the target's ``@@gtid_binlog_pos`` must hold, for every GTID domain
replayed, exactly the archive's last transaction at or before the point. A target without
``log_bin`` cannot show that, so a replay into one is refused before the restore starts.

A replay for single tables (``tables``: ``restore --table ... --at``) sends the same bytes
through ``backupd.mysql.binlog_filter`` first: only the chosen tables' rows events reach the
target, re-addressed to their scratch copies, with no GTIDs (the session writes to the binlog
only if the target says ``write_binlog``). Its proof is the strictness of row application: a
rows event whose row is not there (an update or delete) or already there (an insert) stops the
replay with the server's error; ``TableReplayRefused`` when the range holds a change rows
events do not show.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime

import zstandard

from backupd.config import Settings
from backupd.errors import CorruptPart, NoBackupFound, RestoreFailed, VerificationError
from backupd.mysql.binlog_events import MAGIC, BinlogFormatError, TransactionReader, event_at, gtid_position
from backupd.mysql.binlog_filter import FilterReport, RowEventFilter, UnreplayableChange
from backupd.mysql.connection import connect, query
from backupd.mysql.options import option_file
from backupd.mysql.tools import ToolProcess
from backupd.progress import Progress
from backupd.repo.binlogs import FIRST_EVENT_POS, BinlogArchive, SegmentRecord, split_gtid
from backupd.repo.fetch import PartFetcher
from backupd.repo.model import Coordinates, Manifest
from backupd.repo.repository import Target
from restore.server_messages import redact_client_output

log = logging.getLogger(__name__)


class ReplayNotProven(VerificationError):
    """The replay ran, but the target's GTID position is not the archive's at the point (exit 3)."""


class TableReplayRefused(RestoreFailed):
    """A single table's replay met a change that its rows events do not show (exit 1)."""


@dataclass(frozen=True)
class PointInTime:
    """Where a restore ends: ``until`` (a time), ``gtid`` (a transaction), or the archive's end."""

    until: datetime | None = None
    gtid: str | None = None

    def describe(self) -> str:
        if self.gtid:
            return f"GTID {self.gtid}"
        if self.until:
            return self.until.isoformat().replace("+00:00", "Z")
        return "the newest archived point"


@dataclass(frozen=True)
class ReplayPlan:
    """The segments that take ``manifest``'s restored state to ``point`` (``plan_replay``)."""

    shard: str
    manifest: Manifest
    start: tuple[str, int]
    records: list[SegmentRecord]
    point: PointInTime
    # the archive holds another server's binlog (a replica's, or the primary's for a backup read
    # on a replica): ``start`` is where the backup's GTID position ends in it, and the
    # transactions this position holds are skipped there, by GTID
    skip_gtids: str | None = None

    @property
    def raw_bytes(self) -> int:
        return sum(r.raw_size for r in self.records)


@dataclass
class ReplayReport:
    """What a replay applied and what proved it."""

    point: PointInTime
    start: tuple[str, int]
    end: tuple[str, int]                # the file and position after the last replayed event
    by_gtid: bool = False               # ``start``/``end`` are in another server's binlog than the backup's
    transactions: int = 0
    segments: int = 0
    raw_bytes: int = 0
    seconds: float = 0.0
    last_gtids: dict[str, str] = field(default_factory=dict)  # per domain: the last replayed
    last_committed_at: datetime | None = None
    target_gtid_position: str | None = None
    tables: FilterReport | None = None  # a single tables' replay: what reached them

    @property
    def last_gtid(self) -> str | None:
        return ",".join(self.last_gtids[d] for d in sorted(self.last_gtids)) or None

    def coordinates(self, before: Coordinates) -> Coordinates:
        """The binlog coordinates the target is at after the replay (``--replica-of`` starts there)."""
        gtid = gtid_position(before.gtid, self.last_gtids.values()) if self.last_gtids else before.gtid
        if self.by_gtid:  # the archive's file and position are another server's: only the GTIDs say where
            return Coordinates(gtid=gtid)
        return Coordinates(binlog_file=self.end[0], binlog_pos=self.end[1], gtid=gtid)

    def to_json(self) -> dict[str, object]:
        return {"point": self.point.describe(), "from": f"{self.start[0]}:{self.start[1]}",
                "to": f"{self.end[0]}:{self.end[1]}", "transactions": self.transactions,
                "segments": self.segments, "raw_bytes": self.raw_bytes, "seconds": round(self.seconds, 3),
                "last_gtid": self.last_gtid, "target_gtid_position": self.target_gtid_position,
                "last_committed_at": self.last_committed_at.isoformat().replace("+00:00", "Z")
                if self.last_committed_at else None} | ({} if self.tables is None else {"tables": {
                    "transactions": self.tables.transactions, "rows_events": self.tables.rows_events,
                    "per_table": self.tables.per_table, "last_gtid": self.tables.last_gtid}})


def plan_replay(target: Target, shard_id: str, manifest: Manifest, point: PointInTime) -> ReplayPlan | None:
    """The replay from ``manifest``'s coordinates to ``point``, or None when the shard has no
    binlog archive (then only a ``gtid`` point is an error). Raises ``NoBackupFound`` naming
    the gap when the archive cannot take the backup there."""
    archive = BinlogArchive(target.stores, shard_id).load()
    for problem in archive.unreadable:
        log.warning("%s: binlog archive: %s", target.label, problem)
    if not archive.records:
        if point.gtid:
            raise NoBackupFound(f"shard {shard_id}: no binlog archive in the target's stores: cannot restore to "
                                f"GTID {point.gtid}", hint="archive the shard's binlogs: [binlogs] enabled = true")
        if point.until is not None and point.until > manifest.snapshot_at:
            log.warning("shard %s: no binlog archive in the target's stores: restoring backup %s's own point (%s), "
                        "not %s", shard_id, manifest.id, _iso(manifest.snapshot_at), _iso(point.until))
        return None
    coordinates = manifest.coordinates
    mapped = archive.needs_gtid_mapping(coordinates.server_id)
    start = archive.start_of(coordinates, what=f"shard {shard_id}: backup {manifest.id}")
    if mapped:
        log.info("shard %s: the binlog archive holds server_id %s's binlog, backup %s recorded server_id %s's "
                 "coordinates: replaying from its GTID position %s (%s:%d in the archive)", shard_id,
                 ",".join(map(str, sorted(archive.server_ids))), manifest.id, coordinates.server_id,
                 coordinates.gtid, *start)
    end = archive.end
    if end is not None and start >= end and point.gtid is None:  # nothing archived after the backup
        archived = archive.archived_until
        behind = archived is None or (point.until is not None and archived < point.until)
        if point.until is not None and point.until > manifest.snapshot_at and behind:
            raise NoBackupFound(f"shard {shard_id}: the binlog archive ends at {end[0]}:{end[1]} "
                                f"({_iso(archived)}), at or before backup {manifest.id}'s coordinates: nothing "
                                f"shows what happened until {_iso(point.until)}",
                                hint="is the shard's binlog archiver running? (backupd status)")
        log.info("shard %s: nothing is archived after backup %s's coordinates: restoring to its own point",
                 shard_id, manifest.id)
        return None
    records = archive.replay_path(*start, until=point.until, gtid=point.gtid)
    return ReplayPlan(shard_id, manifest, start, records, point, skip_gtids=coordinates.gtid if mapped else None)


def _iso(moment: datetime | None) -> str:
    return moment.isoformat().replace("+00:00", "Z") if moment else "nothing"


def holds_gtid(position: str | None, gtid: str) -> bool:
    """Whether a MariaDB GTID position (``0-1-57,1-2-9``) includes transaction ``gtid``."""
    if not position or gtid.count("-") != 2:
        return False
    domain, _, seq = gtid.split("-")
    for item in position.replace("\n", "").split(","):
        parts = item.strip().split("-")
        if len(parts) == 3 and parts[0] == domain:
            return int(parts[2]) >= int(seq)
    return False


def check_replay_target(target: Target) -> None:
    """Refuse a replay into a target whose binlog is off (its GTID position could not prove it)."""
    conn = connect(target.config, label=target.label)
    try:
        log_bin = query(conn, "SELECT @@log_bin", label=target.label)[0][0]
    finally:
        conn.close()
    if str(log_bin) not in ("1", "ON"):
        raise RestoreFailed(f"{target.label}: log_bin is off: a point-in-time restore proves its replay by the "
                            "target's GTID position", hint="enable log_bin on the target, or restore --to-backup")


def target_gtid_position(target: Target) -> str:
    conn = connect(target.config, label=target.label)
    try:
        return str(query(conn, "SELECT @@GLOBAL.gtid_binlog_pos", label=target.label)[0][0] or "")
    finally:
        conn.close()


class _Selector:
    """Which bytes of each segment the replay applies (module docstring), and what they hold."""

    def __init__(self, plan: ReplayPlan, report: ReplayReport):
        self.plan = plan
        self.point = plan.point
        self.report = report
        self.stopped = False
        self.skip_held: str | None = None  # a GTID position whose transactions the current record skips

    def select(self, record: SegmentRecord, raw: bytes, *, first_in_file: bool) -> list[bytes]:
        try:
            header, body_start = event_at(raw, len(MAGIC))
        except BinlogFormatError as exc:
            raise CorruptPart(f"binlog segment {record.object_key}: {exc}") from None
        if raw[:len(MAGIC)] != MAGIC:
            raise CorruptPart(f"binlog segment {record.object_key}: not a binary log (no magic number)")
        # the file's position of the first byte after the header
        position = FIRST_EVENT_POS + len(header.raw) if record.start_pos == FIRST_EVENT_POS else record.start_pos
        out = [MAGIC, header.raw] if first_in_file else []
        skip_to = self.plan.start[1] if (record.file, record.start_pos) < self.plan.start <= \
            (record.file, record.end_pos) else None
        cut = (self.point.until is not None and record.last_event_at is not None
               and record.last_event_at > self.point.until) or \
              (self.point.gtid is not None and record.holds_gtid(self.point.gtid))
        self.skip_held = self.plan.skip_gtids if (record.file, record.start_pos) == self.plan.start else None
        if skip_to is None and not cut and self.skip_held is None:
            out.append(raw[body_start:])
            self._took(record.transactions, record.last_gtids, record.last_event_at, (record.file, record.end_pos))
            return out
        return out + self._parse(record, raw, body_start, position, skip_to)

    def _parse(self, record: SegmentRecord, raw: bytes, offset: int, position: int,
               skip_to: int | None) -> list[bytes]:
        out: list[bytes] = []
        reader = TransactionReader()
        try:
            while offset < len(raw):
                event, offset = event_at(raw, offset)
                position += len(event.raw)
                if skip_to is not None and position <= skip_to:
                    continue
                group = reader.feed(event)
                if group is None:
                    continue
                if self.skip_held is not None and (group.gtid is None or holds_gtid(self.skip_held, group.gtid)):
                    continue  # the restored backup holds it already (a plan matched by GTID)
                self.skip_held = None
                if group.gtid is not None and self.point.until is not None and group.committed_at > self.point.until:
                    self.stopped = True
                    return out
                out.extend(e.raw for e in group.events)
                if group.gtid is None:
                    self.report.end = (record.file, group.end_pos)
                    continue
                domain, _ = split_gtid(group.gtid)
                self._took(1, {domain: group.gtid}, group.committed_at, (record.file, group.end_pos))
                if group.gtid == self.point.gtid:
                    self.stopped = True
                    return out
        except BinlogFormatError as exc:
            raise CorruptPart(f"binlog segment {record.object_key}: {exc}") from None
        return out

    def _took(self, transactions: int, last_gtids: dict[str, str], committed: datetime | None,
              end: tuple[str, int]) -> None:
        report = self.report
        report.transactions += transactions
        report.last_gtids.update(last_gtids)
        if committed is not None:
            report.last_committed_at = max(report.last_committed_at, committed) if report.last_committed_at \
                else committed
        report.end = end


class _FilePipeline:
    """``mysqlbinlog - | mysql`` for one binlog file's bytes (module docstring)."""

    def __init__(self, settings: Settings, target: Target, file: str, stack: ExitStack, *, log_bin: bool = True):
        what = f"{target.label}: replaying {file}"
        options = stack.enter_context(option_file(target.config, settings.work_dir))
        session = [] if log_bin else ["--init-command=SET SESSION sql_log_bin=0"]
        self.binlog = stack.enter_context(ToolProcess(
            what, "mysqlbinlog", [settings.mysqlbinlog, "-"], error=RestoreFailed, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, work_dir=settings.work_dir,
            missing_hint="install mariadb-client (mariadb-binlog) or set [backupd] mysqlbinlog")).start()
        self.client = stack.enter_context(ToolProcess(
            what, "mysql client", [settings.mysql, f"--defaults-file={options}", "--binary-mode",
                                   "--max-allowed-packet=1G", "--batch", *session],
            error=RestoreFailed, redact=redact_client_output, stdin=self.binlog.stdout, stdout=subprocess.DEVNULL,
            work_dir=settings.work_dir, missing_hint="install mariadb-client or set [backupd] mysql")).start()
        self.binlog.stdout.close()  # the client holds it now

    def write(self, data: bytes) -> None:
        try:
            self.binlog.write(data)
        except RestoreFailed:
            self._blame_the_client()
            raise

    def finish(self) -> None:
        self.binlog.close_stdin()
        self._blame_the_client()
        self.binlog.check()
        self.client.check()

    def _blame_the_client(self) -> None:
        """mysqlbinlog killed by SIGPIPE means the client stopped reading: its error is the cause."""
        if self.binlog.wait() == -signal.SIGPIPE:
            self.client.check()


def replay(settings: Settings, target: Target, plan: ReplayPlan,
           tables: dict[tuple[str, str], tuple[str, str]] | None = None) -> ReplayReport:
    """Replay ``plan`` into ``target`` and prove it (module docstring); with ``tables``
    (``(db, table)`` in the backup to ``(db, table)`` on the target), only those tables'
    changes. Raises ``CorruptPart`` (a segment has no good copy: nothing after it is applied),
    ``RestoreFailed`` (a tool failed), ``TableReplayRefused`` or ``ReplayNotProven``."""
    report = ReplayReport(plan.point, plan.start, plan.start, by_gtid=plan.skip_gtids is not None)
    selector = _Selector(plan, report)
    row_filter = RowEventFilter(tables) if tables is not None else None
    log_bin = row_filter is None or target.config.write_binlog
    started = time.monotonic()
    fetcher = PartFetcher(target.stores, f"binlog archive of shard {plan.shard}",
                          [r.as_part(i + 1) for i, r in enumerate(plan.records)],
                          owner=f"the binlog archive of shard {plan.shard}",
                          opener=target.keys.segment_opener(plan.records))
    by_key = {r.object_key: r for r in plan.records}
    decompressor = zstandard.ZstdDecompressor()
    current: str | None = None
    with ExitStack() as outer, Progress(f"{target.label}: replaying binlogs to {plan.point.describe()}",
                                        plan.raw_bytes) as progress:
        pipeline: _FilePipeline | None = None
        stack: ExitStack | None = None
        try:
            for part, data in fetcher.verified_parts():
                record = by_key[part.key]
                try:
                    raw = decompressor.decompress(data)
                except zstandard.ZstdError as exc:
                    raise CorruptPart(f"binlog segment {record.object_key}: {exc}") from None
                first = record.file != current
                if first:
                    if pipeline is not None and stack is not None:
                        pipeline.finish()
                        stack.close()
                    stack = outer.enter_context(ExitStack())
                    pipeline, current = _FilePipeline(settings, target, record.file, stack,
                                                      log_bin=log_bin), record.file
                assert pipeline is not None
                for chunk in selector.select(record, raw, first_in_file=first):
                    pipeline.write(_filtered(row_filter, chunk, target, plan))
                report.segments += 1
                report.raw_bytes += record.raw_size
                progress.advance(record.raw_size)
                if selector.stopped:
                    break
            if pipeline is not None:
                pipeline.finish()
        finally:
            progress.finish()
    report.seconds = time.monotonic() - started
    if row_filter is not None:
        report.tables = row_filter.report
        log.info("%s: replayed %d of %d transactions (%d rows events) into %s, up to %s", target.label,
                 row_filter.report.transactions, report.transactions, row_filter.report.rows_events,
                 ", ".join(f"{d}.{t}" for d, t in tables or {}), plan.point.describe())
        return report
    _prove(target, report)
    log.info("%s: replayed %d transactions from %s:%d to %s:%d (%s), last GTID %s", target.label,
             report.transactions, *report.start, *report.end, plan.point.describe(), report.last_gtid)
    return report


def _filtered(row_filter: RowEventFilter | None, chunk: bytes, target: Target, plan: ReplayPlan) -> bytes:
    if row_filter is None:
        return chunk
    try:
        return row_filter.feed(chunk)
    except UnreplayableChange as exc:
        tables = ", ".join(f"{d}.{t}" for d, t in row_filter.tables)
        raise TableReplayRefused(f"{target.label}: cannot replay {tables} of shard {plan.shard} to "
                                 f"{plan.point.describe()}: {exc}",
                                 hint="restore the table to a point before that transaction, or restore the whole "
                                      "shard to another target with --at and copy the table from there") from None
    except BinlogFormatError as exc:
        raise CorruptPart(f"binlog archive of shard {plan.shard}: {exc}") from None


def _prove(target: Target, report: ReplayReport) -> None:
    """The target's GTID position must show the last replayed transaction of every domain."""
    position = target_gtid_position(target)
    report.target_gtid_position = position or None
    wrong = unproven(position, report.last_gtids)
    if wrong:
        raise ReplayNotProven(f"{target.label}: the binlog replay is not proven: {'; '.join(wrong)}",
                              hint="something else wrote to the target during the replay, or it skipped "
                                   "transactions; restore again")


def unproven(position: str, last_gtids: dict[str, str]) -> list[str]:
    """Where a server's GTID position (``@@gtid_binlog_pos``) does not show the last replayed
    transaction of a domain (empty: the replay is proven)."""
    have = {item.strip().split("-")[0]: item.strip() for item in position.replace("\n", "").split(",") if item.strip()}
    return [f"domain {d}: the target is at {have.get(d, 'nothing')}, the archive's last at the point is {g}"
            for d, g in sorted(last_gtids.items()) if have.get(d) != g]
