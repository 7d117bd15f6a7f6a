"""The backup manifest: the one record that makes a backup exist.

A manifest is immutable once committed. ``Manifest.from_json`` refuses any ``format_version`` it
does not know (``UnsupportedFormat``), any document that does not validate (``CatalogError``)
and, from format 5, any copy whose self-digest does not match its content (``SealBroken``,
``backupd.repo.sealed``), so a reader never acts on a record it cannot fully understand or that
was altered after it was written.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from backupd.errors import CatalogError, UnsupportedFormat
from backupd.repo.encryption import CHUNK_SIZE, CIPHER, DataKey
from backupd.repo.sealed import content_digest, parse_json, seal, unseal

# 2 added incrementals (``incremental``) and per-table schema fingerprints; 3 added physical
# backups (``physical``); 4 added exact digests (FLOAT read by its binary value), per-column
# digests (``column_digests``) and table-addressed logical backups (``sections``); 5 added the
# manifest's self-digest (``content_sha256``, required) and each part's MD5 (``md5``: what Swift's
# ETag and S3's single-request ETag report); 6 added client-side encryption (``encryption``): a
# manifest with it is written as format 6, so a backupd that cannot decrypt refuses it. Older
# versions are still read.
FORMAT_VERSION = 5
ENCRYPTED_FORMAT_VERSION = 6
REPLICA_FORMAT_VERSION = 7  # 7 added ``taken_from``: a backup read on a replica
SERVER_ID_FORMAT_VERSION = 8  # 8 added ``coordinates.server_id``: whose binary log the coordinates are in
SUPPORTED_FORMAT_VERSIONS = frozenset({1, 2, 3, 4, FORMAT_VERSION, ENCRYPTED_FORMAT_VERSION, REPLICA_FORMAT_VERSION,
                                       SERVER_ID_FORMAT_VERSION})
SEALED_FROM_VERSION = 5

# The digest algorithms of format 4 (see backupd.mysql.reference): a reference using one of them
# is written as format 4, so that a backupd that cannot compute it refuses the manifest.
EXACT_DIGEST_ALGORITHMS = ("md5-sum64-exact", "crc32-crc32c-sum64-exact")

BackupKind = Literal["full", "incremental"]
StoreState = Literal["complete", "failed"]
ToolName = Literal["mariabackup", "xtrabackup"]  # the physical backup tools


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PartRecord(_Record):
    """One stored part: an independent zstd frame holding ``raw_size`` bytes of the stream."""

    index: int = Field(ge=1)
    key: str
    size: int = Field(ge=0)
    raw_size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    md5: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")  # format 5: the providers' own checksum


class Section(_Record):
    """A self-contained piece of a table-addressed logical backup, in parts of its own (a part
    never holds two sections).

    ``preamble``: the session settings every load starts with (character set, time zone, SQL
    mode, checks off). ``database``: its ``CREATE DATABASE``. ``table``: one table's ``DROP`` and
    ``CREATE TABLE`` (raw bytes ``[0, data_start)``), its rows (``[data_start, data_end)``) and
    then its triggers (``[data_end, raw_bytes)``).
    ``objects``: a database's views, procedures, functions and events (an incremental's:
    every database's, and the triggers; ``database`` is then None), loaded after the tables.
    An incremental's table section holds what its mode carries: deletes and changed rows, or
    the whole table; it has no triggers.
    """

    kind: Literal["preamble", "database", "table", "objects"]
    database: str | None = None
    table: str | None = None
    parts: list[int]  # the indexes of its parts, in order
    raw_bytes: int = Field(ge=0)
    data_start: int | None = Field(default=None, ge=0)  # tables only
    data_end: int | None = Field(default=None, ge=0)  # tables only

    @property
    def name(self) -> str:
        return f"{self.database}.{self.table}" if self.table else (self.database or self.kind)

    @model_validator(mode="after")
    def _fields(self) -> Section:
        if (self.kind == "table") != (self.table is not None and self.data_end is not None):
            raise ValueError("a table section needs its table and data_end, and only it")
        if self.data_start is not None and not self.data_start <= (self.data_end or 0) <= self.raw_bytes:
            raise ValueError("a table section needs data_start <= data_end <= raw_bytes")
        if self.kind in ("database", "table") and self.database is None:
            raise ValueError("a database or table section needs its database")
        if self.kind == "preamble" and self.database is not None:
            raise ValueError("a preamble belongs to no database")
        return self


class Coordinates(_Record):
    """Where the snapshot sits in the source's binary log."""

    binlog_file: str | None = None
    binlog_pos: int | None = None
    gtid: str | None = None
    # the @@server_id of the server whose binary log ``binlog_file``/``binlog_pos`` point into
    # (format 8; a replica's backup records its primary's): a binlog archive streamed from
    # another server is replayed from the GTID position instead (``restore.replay``)
    server_id: int | None = None


class ServerInfo(_Record):
    """The source server's flavour and version."""

    vendor: Literal["mariadb", "mysql"]
    version: str


class TableReference(_Record):
    """A table's row count and content digest in the backup's snapshot."""

    database: str
    table: str
    rows: int = Field(ge=0)
    digest: str | None = None
    schema_digest: str | None = None  # fingerprint of the table's definition (see reference.py)
    column_digests: dict[str, str] | None = None  # format 4: FLOAT and DOUBLE columns, by name

    @property
    def name(self) -> str:
        return f"{self.database}.{self.table}"


class SchemaObject(_Record):
    """A non-table object the backup must recreate (view, trigger, routine, event)."""

    database: str
    kind: Literal["view", "trigger", "procedure", "function", "event"]
    name: str


class Reference(_Record):
    """What a restore is verified against: ``mode`` is "digest" or "counts"."""

    mode: Literal["digest", "counts"]
    digest_algorithm: str | None = None
    tables: list[TableReference]
    objects: list[SchemaObject] = []

    @property
    def is_exact(self) -> bool:
        """Whether the digests read FLOAT by its binary value (format 4)."""
        return self.digest_algorithm in EXACT_DIGEST_ALGORITHMS


class Window(_Record):
    """The changes an incremental carries: rows changed in ``[since, until]`` (``until`` is
    the incremental's snapshot)."""

    since: datetime
    until: datetime


class TableChange(_Record):
    """How an incremental carries one table.

    ``changed``: rows whose ``column`` is at or after the window's start are upserted
    (REPLACE), and rows whose primary key is no longer live are deleted. ``whole``: the table
    is dropped and re-created with all its rows (``reason`` says why: no change column, no
    primary key, new or changed definition since the base full).
    """

    database: str
    table: str
    mode: Literal["changed", "whole"]
    column: str | None = None
    reason: str | None = None

    @property
    def name(self) -> str:
        return f"{self.database}.{self.table}"


class Incremental(_Record):
    """What makes a backup an incremental: its window and how each table is carried."""

    window: Window
    tables: list[TableChange]


class Physical(_Record):
    """What makes a backup physical: the tool's xbstream of the datadir, between two LSNs.

    A full has ``from_lsn == 0``; an incremental holds the pages changed after ``from_lsn``,
    which is the ``to_lsn`` of its base full (``parent_id``), and applies only to that full.
    """

    tool: ToolName
    stream: Literal["xbstream"] = "xbstream"
    from_lsn: int = Field(ge=0)
    to_lsn: int = Field(ge=0)


class Codec(_Record):
    name: Literal["zstd"] = "zstd"
    level: int


class Encryption(_Record):
    """How an encrypted backup's parts are sealed (``backupd.repo.encryption``); its data key
    is in the key object beside the manifest (``backupd.repo.keys``), and ``key_check`` says
    which key that must be (a key object can be re-wrapped, the manifest never changes)."""

    cipher: Literal["xchacha20poly1305-secretstream"]
    chunk_size: int = Field(ge=1024)
    key_check: str = Field(pattern=r"^[0-9a-f]{32}$")

    @classmethod
    def of(cls, key: DataKey) -> Encryption:
        """The record of what new objects sealed with ``key`` are (this backupd's framing)."""
        return cls(cipher=CIPHER, chunk_size=CHUNK_SIZE, key_check=key.check)


class TakenFrom(_Record):
    """A backup read on a replica: which one, and where its ``snapshot_at`` (the data's time, not
    the backup's) comes from: the heartbeat table, or the lag the replica reported. Its
    coordinates are the primary's."""

    replica: str
    data_time_from: Literal["heartbeat", "replication lag"]
    lag_seconds: float = Field(ge=0)


class StoreStatus(_Record):
    state: StoreState
    error: str | None = None


class Manifest(_Record):
    """Everything needed to find, check and restore one backup."""

    format_version: int = FORMAT_VERSION
    id: str
    shard: str
    kind: BackupKind
    method: str
    parent_id: str | None = None
    started_at: datetime
    finished_at: datetime
    snapshot_at: datetime
    databases: list[str]
    coordinates: Coordinates
    server: ServerInfo
    codec: Codec
    parts: list[PartRecord]
    raw_bytes: int
    stored_bytes: int
    reference: Reference
    stores: dict[str, StoreStatus]
    tool_versions: dict[str, str] = {}
    incremental: Incremental | None = None  # logical incrementals: their window and tables
    physical: Physical | None = None  # physical backups (full or incremental): their LSNs
    sections: list[Section] | None = None  # table-addressed logical backups (format 4)
    encryption: Encryption | None = None  # encrypted backups (format 6)
    taken_from: TakenFrom | None = None  # backups read on a replica (format 7)

    @model_validator(mode="after")
    def _kind_fields(self) -> Manifest:
        if self.physical is not None:
            if self.incremental is not None:
                raise ValueError("a physical backup has no logical 'incremental' record")
            if (self.kind == "incremental") != (self.physical.from_lsn > 0):
                raise ValueError("a physical incremental needs physical.from_lsn > 0, and only it")
        elif (self.kind == "incremental") != (self.incremental is not None):
            raise ValueError("an incremental backup needs its 'incremental' record, and only it")
        if self.kind == "incremental" and not self.parent_id:
            raise ValueError("an incremental backup needs the parent_id of its base full")
        if self.sections is not None:
            indexes = [i for section in self.sections for i in section.parts]
            if sorted(indexes) != [p.index for p in self.parts]:
                raise ValueError("the sections must hold every part exactly once")
        if "format_version" not in self.model_fields_set:  # a new manifest: the version it is written in
            object.__setattr__(self, "format_version", self.written_format_version)
        return self

    @property
    def written_format_version(self) -> int:
        """The format a new manifest is written in: every new manifest is sealed (format 5), an
        encrypted one is format 6, one read on a replica format 7, one whose coordinates name their
        server format 8."""
        if self.coordinates.server_id is not None:
            return SERVER_ID_FORMAT_VERSION
        if self.taken_from is not None:
            return REPLICA_FORMAT_VERSION
        return ENCRYPTED_FORMAT_VERSION if self.encryption is not None else FORMAT_VERSION

    @property
    def is_encrypted(self) -> bool:
        return self.encryption is not None

    @property
    def is_physical(self) -> bool:
        return self.physical is not None

    @property
    def is_table_addressed(self) -> bool:
        """Whether every table sits in parts of its own (``sections``, format 4)."""
        return self.sections is not None

    def section_parts(self, section: Section) -> list[PartRecord]:
        by_index = {p.index: p for p in self.parts}
        return [by_index[i] for i in section.parts]

    def to_json(self) -> bytes:
        """Serialize for storage: sealed (``content_sha256``), stable key order, UTC timestamps,
        keys a backup does not use (``physical``, ``sections``, ``encryption``, a part's ``md5``)
        left out."""
        absent = {name for name in ("physical", "sections", "encryption", "taken_from") if getattr(self, name) is None}
        document = self.model_dump(mode="json", exclude=absent or None)
        document["format_version"] = self.written_format_version
        for table in document["reference"]["tables"]:
            if table.get("column_digests") is None:
                table.pop("column_digests", None)
        if document["coordinates"].get("server_id") is None:
            document["coordinates"].pop("server_id", None)
        for part in document["parts"]:
            if part.get("md5") is None:
                part.pop("md5", None)
        return seal(document)

    @classmethod
    def from_json(cls, data: bytes, *, origin: str) -> Manifest:
        """Parse a stored manifest; ``origin`` (store and key) is named in every error."""
        what = f"manifest {origin}"
        document = parse_json(data, what=what)
        version = document.get("format_version")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise UnsupportedFormat(
                f"manifest {origin} has format_version {version!r}; this backupd reads "
                f"{', '.join(map(str, sorted(SUPPORTED_FORMAT_VERSIONS)))}",
                hint="upgrade backupd to read it")
        document = unseal(document, what=what, required=version >= SEALED_FROM_VERSION)
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise CatalogError(f"manifest {origin} is invalid: {where}: {first['msg']}") from None

    @staticmethod
    def copy_digest(data: bytes) -> str:
        """What tells two stored copies of a manifest apart: the sha256 of the parsed content's
        canonical form (so whitespace does not count), or of the bytes if they do not parse."""
        try:
            return content_digest(parse_json(data, what="manifest"))
        except CatalogError:
            return "unparseable:" + hashlib.sha256(data).hexdigest()

    @property
    def complete_stores(self) -> list[str]:
        """Stores that hold every part and this manifest, in the order recorded."""
        return [name for name, status in self.stores.items() if status.state == "complete"]

    @property
    def compression_ratio(self) -> float:
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else 0.0

    @property
    def window(self) -> Window | None:
        return self.incremental.window if self.incremental else None

    def summary(self) -> dict[str, object]:
        """The fields ``backupd list --json`` prints for this backup."""
        window = self.window
        return {
            "id": self.id, "shard": self.shard, "kind": self.kind, "method": self.method,
            "parent_id": self.parent_id,
            "window_since": _iso(window.since) if window else None,
            "window_until": _iso(window.until) if window else None,
            "started_at": _iso(self.started_at), "finished_at": _iso(self.finished_at),
            "snapshot_at": _iso(self.snapshot_at),
            "raw_bytes": self.raw_bytes, "stored_bytes": self.stored_bytes,
            "parts": len(self.parts), "databases": self.databases,
            "stores": self.complete_stores,
            "degraded_stores": [n for n, s in self.stores.items() if s.state != "complete"],
            "binlog_file": self.coordinates.binlog_file, "binlog_pos": self.coordinates.binlog_pos,
            "gtid": self.coordinates.gtid,
            "from_lsn": self.physical.from_lsn if self.physical else None,
            "to_lsn": self.physical.to_lsn if self.physical else None,
            "encrypted": self.is_encrypted,
            "taken_from": self.taken_from.replica if self.taken_from else None,
        }


def utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
