"""The one place object keys are built and parsed.

Every store uses the same layout (a store may add its own prefix, which it handles itself)::

    <shard>/<backup_id>/part-000001.zst
    <shard>/<backup_id>/key.json               an encrypted backup's data key, wrapped (just before the manifest)
    <shard>/<backup_id>/manifest.json          written last
    <shard>/<backup_id>/annotations/<name>.json
    <shard>/locks/<generation>.json            the shard's backup lock (see backupd.backup.lease)
    <shard>/binlog-locks/<generation>.json     the shard's binlog archiver lease
    binlogs/<shard>/<file>/<start>-<end>.zst   a binlog segment (file bytes [start, end))
    binlogs/<shard>/<file>/<start>-<end>.json  its record, written after it
    binlogs/<shard>/position.json              where the archive ends (see backupd.repo.binlogs)
    binlogs/<shard>/keys/<run>.json            an encrypting archiver run's data key, wrapped

The binlog archive (tens of thousands of small objects a day per shard) lives outside the
shards' folders, so listing a shard's backups never lists its segments.

``backup_id`` sorts by time: ``20261126T080000Z-full-3f9a1c``. The same UTC stamp
(``format_id_time`` / ``parse_id_time``) ends the names of annotations, so they sort by time too.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

MANIFEST_NAME = "manifest.json"
KEY_OBJECT_NAME = "key.json"
ID_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_BACKUP_ID = re.compile(r"^(\d{8}T\d{6}Z)-(full|incremental)-([0-9a-f]{6})$")
_PART_NAME = re.compile(r"^part-(\d{6})\.zst$")
_LOCK_NAME = re.compile(r"^(\d{12})\.json$")
_SEGMENT = re.compile(r"^binlogs/(?P<shard>[^/]+)/(?P<file>[^/]+)/"
                      r"(?P<start>\d{12})-(?P<end>\d{12})\.(?P<ext>zst|json)$")
LOCK_KINDS = {"backup": "locks", "binlogs": "binlog-locks"}  # what each lease serializes: its folder


def format_id_time(moment: datetime) -> str:
    """``moment`` as the UTC stamp that starts backup ids and ends annotation names."""
    return moment.astimezone(UTC).strftime(ID_TIME_FORMAT)


def parse_id_time(text: str) -> datetime | None:
    """The UTC time a stamp (or a backup id, which starts with one) names; None if it names none."""
    try:
        return datetime.strptime(text[:16], ID_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def new_backup_id(kind: str, moment: datetime) -> str:
    """A fresh id that sorts by ``moment`` (UTC, to the second) and is unique by 24 random bits."""
    return f"{format_id_time(moment)}-{kind}-{secrets.token_hex(3)}"


def is_backup_id(text: str) -> bool:
    return bool(_BACKUP_ID.match(text))


def shard_prefix(shard: str) -> str:
    return f"{shard}/"


def backup_prefix(shard: str, backup_id: str) -> str:
    return f"{shard}/{backup_id}/"


def part_key(shard: str, backup_id: str, index: int) -> str:
    """Key of part ``index`` (1-based) of a backup."""
    if not 1 <= index <= 999_999:
        raise ValueError(f"part index {index} out of range")
    return f"{backup_prefix(shard, backup_id)}part-{index:06d}.zst"


def manifest_key(shard: str, backup_id: str) -> str:
    return backup_prefix(shard, backup_id) + MANIFEST_NAME


def key_object_key(shard: str, backup_id: str) -> str:
    """Where an encrypted backup's wrapped data key lives (``backupd.repo.keys``)."""
    return backup_prefix(shard, backup_id) + KEY_OBJECT_NAME


def annotation_key(shard: str, backup_id: str, name: str) -> str:
    return f"{backup_prefix(shard, backup_id)}annotations/{name}.json"


def lock_prefix(shard: str, kind: str = "backup") -> str:
    """Where a shard's leases of ``kind`` live: ``backup`` (one backup at a time) or ``binlogs``
    (one archiver at a time)."""
    return f"{shard}/{LOCK_KINDS[kind]}/"


def lock_key(shard: str, generation: int, kind: str = "backup") -> str:
    return f"{lock_prefix(shard, kind)}{generation:012d}.json"


def lock_generation(key: str) -> int | None:
    """The generation of a lock key (None for anything else)."""
    match = _LOCK_NAME.match(key.rsplit("/", 1)[-1])
    folder = key.rsplit("/", 2)[-2] if key.count("/") >= 2 else ""
    return int(match.group(1)) if match and folder in LOCK_KINDS.values() else None


def binlog_prefix(shard: str) -> str:
    return f"binlogs/{shard}/"


def segment_key(shard: str, file: str, start: int, end: int, *, record: bool = False) -> str:
    """A binlog segment's object (``record``: its record), named by the file bytes it holds."""
    if "/" in file or not file:
        raise ValueError(f"binlog file name {file!r} cannot be part of a key")
    return f"{binlog_prefix(shard)}{file}/{start:012d}-{end:012d}.{'json' if record else 'zst'}"


@dataclass(frozen=True)
class SegmentKey:
    """What a segment key names."""

    shard: str
    file: str
    start: int
    end: int
    record: bool


def parse_segment_key(key: str) -> SegmentKey | None:
    match = _SEGMENT.match(key)
    if match is None:
        return None
    return SegmentKey(match["shard"], match["file"], int(match["start"]), int(match["end"]), match["ext"] == "json")


@dataclass(frozen=True)
class ParsedKey:
    """What a key names: a backup's part, manifest, key object or annotation (``name`` is the last bit)."""

    shard: str
    backup_id: str
    kind: str  # "part" | "manifest" | "key" | "annotation"
    name: str


def parse_key(key: str) -> ParsedKey | None:
    """Inverse of the builders; None for keys that are not part of the layout."""
    pieces = key.split("/")
    if len(pieces) < 3 or not is_backup_id(pieces[1]):
        return None
    shard, backup_id, rest = pieces[0], pieces[1], pieces[2:]
    if rest == [MANIFEST_NAME]:
        return ParsedKey(shard, backup_id, "manifest", MANIFEST_NAME)
    if rest == [KEY_OBJECT_NAME]:
        return ParsedKey(shard, backup_id, "key", KEY_OBJECT_NAME)
    if len(rest) == 1 and _PART_NAME.match(rest[0]):
        return ParsedKey(shard, backup_id, "part", rest[0])
    if len(rest) == 2 and rest[0] == "annotations" and rest[1].endswith(".json"):
        return ParsedKey(shard, backup_id, "annotation", rest[1][:-5])
    return None

