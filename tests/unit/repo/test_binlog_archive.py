"""What a binlog archive covers (``backupd.repo.binlogs``): contiguous ranges, gaps, and the
segments a point-in-time restore replays, refused with the gap named when one is in the way."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from backupd.errors import NoBackupFound
from backupd.repo.binlogs import BinlogArchive, Position, SegmentRecord, gtid_position
from backupd.repo.model import Coordinates

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def record(file: str, start: int, end: int, *, seqs: tuple[int, int], at: int, sealed_to: str | None = None) -> SegmentRecord:
    return SegmentRecord(shard="1", file=file, start_pos=start, end_pos=end, sealed=sealed_to is not None,
                         next_file=sealed_to, transactions=seqs[1] - seqs[0] + 1, gtids={"0": list(seqs)},
                         last_gtids={"0": f"0-1-{seqs[1]}"}, first_gtid=f"0-1-{seqs[0]}", last_gtid=f"0-1-{seqs[1]}",
                         first_event_at=T0 + timedelta(seconds=at - 1), last_event_at=T0 + timedelta(seconds=at),
                         size=10, raw_size=20, sha256="0" * 64, archived_at=T0)


def archive(*records: SegmentRecord, position: Position | None = None) -> BinlogArchive:
    made = BinlogArchive([], "1")
    made.records = sorted(records, key=lambda r: (r.file, r.start_pos))
    made.position = position
    return made


FULL = archive(record("bin.000001", 100, 200, seqs=(1, 3), at=10),
               record("bin.000001", 200, 300, seqs=(4, 6), at=20, sealed_to="bin.000002"),
               record("bin.000002", 4, 400, seqs=(7, 9), at=30))


def test_contiguous_records_across_a_rotation_are_one_range():
    assert [(a.start_pos, b.end_pos, n) for a, b, n in FULL.ranges()] == [(100, 400, 3)]
    assert FULL.gaps() == [] and FULL.end == ("bin.000002", 400)
    assert FULL.gaps(since=("bin.000001", 50))[0].describe() == "bin.000001:50 to bin.000001:100"


def test_replay_path_stops_at_the_segment_past_the_point():
    path = FULL.replay_path("bin.000001", 150, until=T0 + timedelta(seconds=15))
    assert [r.start_pos for r in path] == [100, 200]  # the second holds the first commit after the point
    assert [r.file for r in FULL.replay_path("bin.000001", 150)] == ["bin.000001", "bin.000001", "bin.000002"]
    assert [r.start_pos for r in FULL.replay_path("bin.000001", 100, gtid="0-1-5")] == [100, 200]


def test_a_gap_on_the_way_is_refused_naming_it():
    holed = archive(record("bin.000001", 100, 200, seqs=(1, 3), at=10),
                    record("bin.000001", 300, 400, seqs=(7, 9), at=30))
    assert [g.describe() for g in holed.gaps()] == ["bin.000001:200 to bin.000001:300"]
    with pytest.raises(NoBackupFound, match="gap from bin.000001:200 to bin.000001:300"):
        holed.replay_path("bin.000001", 100, until=T0 + timedelta(seconds=25))
    with pytest.raises(NoBackupFound, match="gap from bin.000001:200 to bin.000001:300"):
        holed.replay_path("bin.000001", 100)  # the newest point is past the gap
    with pytest.raises(NoBackupFound, match="0-1-8 is not in the binlog archive"):
        holed.replay_path("bin.000001", 100, gtid="0-1-8")
    holed.replay_path("bin.000001", 100, until=T0 + timedelta(seconds=5))  # before the gap: fine
    with pytest.raises(NoBackupFound, match="gap from bin.000001:50"):
        holed.replay_path("bin.000001", 50)  # the backup's coordinates are before the archive


def test_a_point_after_the_archive_is_refused_unless_the_archiver_saw_nothing_newer():
    late = T0 + timedelta(seconds=60)
    with pytest.raises(NoBackupFound, match="nothing newer is archived yet"):
        FULL.replay_path("bin.000001", 100, until=late)
    idle = archive(*FULL.records, position=Position("bin.000002", 400, caught_up_at=late + timedelta(seconds=1)))
    assert len(idle.replay_path("bin.000001", 100, until=late)) == 3
    assert idle.archived_until == late + timedelta(seconds=1)
    stale = archive(*FULL.records, position=Position("bin.000002", 300, caught_up_at=late))  # not the archive's end
    assert stale.archived_until == T0 + timedelta(seconds=30)


def test_the_empty_record_where_a_crashed_servers_file_ended_is_walked_past_once():
    """A server killed with -9 leaves a file with no rotate event: the archiver records where it
    ended with an empty sealed record, which starts where it ends. It follows the record before
    it, never itself (a restore once looped on it forever)."""
    ended = SegmentRecord(shard="1", file="bin.000001", start_pos=300, end_pos=300, sealed=True,
                          next_file="bin.000002", transactions=0, size=10, raw_size=20, sha256="0" * 64,
                          archived_at=T0)
    crashed = archive(record("bin.000001", 100, 300, seqs=(1, 3), at=10), ended,
                      record("bin.000002", 4, 400, seqs=(4, 6), at=20))
    assert [(r.file, r.start_pos, r.end_pos) for r in crashed.replay_path("bin.000001", 100)] == \
        [("bin.000001", 100, 300), ("bin.000001", 300, 300), ("bin.000002", 4, 400)]
    assert [(a.start_pos, b.end_pos, n) for a, b, n in crashed.ranges()] == [(100, 400, 3)]
    assert crashed.gaps() == [] and crashed.end == ("bin.000002", 400)


def on_replica(*records: SegmentRecord) -> BinlogArchive:
    """The same records, as archived from a replica (server_id 2)."""
    return archive(*(r.model_copy(update={"server_id": 2}) for r in records))


def test_a_backup_in_another_servers_binlog_is_found_in_the_archive_by_gtid():
    replica = on_replica(*FULL.records)
    primary_backup = Coordinates(binlog_file="primary-bin.000009", binlog_pos=777, gtid="0-1-4", server_id=1)
    assert not FULL.needs_gtid_mapping(1) and replica.needs_gtid_mapping(1) and not replica.needs_gtid_mapping(2)
    # 0-1-4 is inside the second record: the replay starts there (and skips 0-1-4 by GTID)
    assert replica.start_of(primary_backup, what="b") == ("bin.000001", 200)
    assert replica.start_of(primary_backup.model_copy(update={"gtid": "0-1-3"}), what="b") == ("bin.000001", 200)
    assert replica.start_of(primary_backup.model_copy(update={"gtid": "0-1-2"}), what="b") == ("bin.000001", 100)
    assert replica.start_of(primary_backup.model_copy(update={"gtid": "0-1-9"}), what="b") == replica.end
    # the same server: its own file and position, whatever the GTIDs
    assert replica.start_of(primary_backup.model_copy(update={"server_id": 2}), what="b") == ("primary-bin.000009", 777)


def test_a_gtid_matched_backup_before_the_archive_or_without_gtid_is_refused_naming_the_gap():
    late = on_replica(*FULL.records[1:])  # the archive starts at 0-1-4
    backup = Coordinates(binlog_file="primary-bin.000001", binlog_pos=5, gtid="0-1-1", server_id=1)
    with pytest.raises(NoBackupFound, match=r"gap after b's GTID position 0-1-1: domain 0 seq 2-3"):
        late.start_of(backup, what="b")
    assert late.start_of(backup.model_copy(update={"gtid": "0-1-3"}), what="b") == ("bin.000001", 200)
    with pytest.raises(NoBackupFound, match="recorded no GTID position"):
        late.start_of(backup.model_copy(update={"gtid": None}), what="b")
    with pytest.raises(NoBackupFound, match="MySQL GTID sets"):
        late.start_of(backup.model_copy(update={"gtid": "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"}), what="b")


def test_gtid_positions_parse_per_domain_and_refuse_mysql_sets_with_holes():
    assert gtid_position("0-1-57,1-2-9\n", what="x") == {"0": 57, "1": 9}
    assert gtid_position("uuid:1-57", what="x") == {"uuid": 57}
    assert gtid_position("", what="x") == {}
    with pytest.raises(NoBackupFound, match="has holes"):
        gtid_position("uuid:1-5:7-9", what="x")


def test_a_record_names_its_server_in_format_4():
    named = FULL.records[0].model_copy(update={"server_id": 2})
    document = json.loads(named.to_json())
    assert document["format_version"] == 4 and document["server_id"] == 2
    assert SegmentRecord.from_json(named.to_json(), origin="o").server_id == 2
    assert "server_id" not in json.loads(FULL.records[0].to_json())
