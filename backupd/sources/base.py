"""What a Source is: a producer of one backup stream and, once drained, of its facts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from backupd.repo.model import Coordinates, Incremental, Physical, Reference, ServerInfo, TakenFrom
from backupd.sources.dump_sections import Event


@dataclass(frozen=True)
class SourceResult:
    """Facts about a drained stream: where its snapshot sits and what it holds."""

    method: str
    databases: list[str]
    snapshot_at: datetime
    coordinates: Coordinates
    server: ServerInfo
    reference: Reference
    tool_versions: dict[str, str] = field(default_factory=dict)
    incremental: Incremental | None = None  # the window and table modes of an incremental
    physical: Physical | None = None  # the LSNs of a physical backup
    taken_from: TakenFrom | None = None  # read on a replica


class SourceStream(Protocol):
    def chunks(self) -> Iterator[bytes]:
        """The stream's bytes, in chunks; raises SourceError if the producer fails."""

    def result(self) -> SourceResult:
        """Valid once ``chunks()`` is exhausted; raises SourceError if the producer failed."""


class Source(Protocol):
    """``with source.open() as stream:`` yields a SourceStream; leaving the block early aborts
    the producer and releases everything it held."""

    method: str

    def open(self) -> AbstractContextManager[SourceStream | SectionedSourceStream]: ...


@runtime_checkable
class SectionedSourceStream(Protocol):
    """A stream cut into sections (``backupd.sources.dump_sections`` events), produced by several
    streams at once: each of ``streams()`` is drained in a thread of its own, then ``objects()``;
    ``abort()`` stops every producer when one failed."""

    def streams(self) -> list[Iterator[Event]]: ...

    def objects(self) -> Iterator[Event]: ...

    def abort(self) -> None: ...

    def result(self) -> SourceResult: ...
