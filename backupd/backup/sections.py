"""Writing a sectioned stream: every section in parts of its own, several producers at once.

Each producer of a ``SectionedSourceStream`` is drained by a ``SectionWriter`` in a thread of
its own, with its own compressor: a section starts a new part (``PartCompressor.cut``), so a
part never holds two sections, and the writer records each section's part indexes, raw size
and, for a table, where its rows end. Part numbers come from one counter shared by the
writers; parts go to the one uploader (which bounds the parts held in memory). When a producer
fails, the stream is aborted (its other producers see their runs end and stop) and the first
error is raised.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from backupd.backup.uploader import Uploader
from backupd.config import Settings
from backupd.progress import Progress
from backupd.repo.codec import CompressedPart, PartCompressor, Sealer
from backupd.repo.model import Section
from backupd.sources.base import SectionedSourceStream
from backupd.sources.dump_sections import DataEnd, DataStart, Event, SectionStart


class SectionWriter:
    """Compresses one producer's events into sections (see the module docstring)."""

    def __init__(self, uploader: Uploader, settings: Settings, progress: Progress, indexes: Callable[[], int],
                 *, threads: int, sealer: Sealer | None = None):
        self.uploader = uploader
        self.progress = progress
        self.compressor = PartCompressor(settings.part_size, settings.compression_level, threads, indexes=indexes,
                                         sealer=sealer)
        self.sections: list[Section] = []
        self._start: SectionStart | None = None
        self._parts: list[int] = []
        self._raw = 0
        self._data_start: int | None = None
        self._data_end: int | None = None

    def write(self, events: Iterator[Event]) -> list[Section]:
        try:
            for event in events:
                if isinstance(event, SectionStart):
                    self._close()
                    self._start, self._parts, self._raw, self._data_start, self._data_end = event, [], 0, None, None
                elif isinstance(event, DataStart):
                    if self._data_start is None:  # the first one: an incremental's deletes are data too
                        self._data_start = self._raw
                elif isinstance(event, DataEnd):
                    self._data_end = self._raw
                elif event:
                    if self._start is None:
                        raise AssertionError("a sectioned stream's bytes came before its first section")
                    self._raw += len(event)
                    self.progress.advance(len(event))
                    self._submit(self.compressor.write(event))
            self._close()
        finally:
            self.compressor.close()
        return self.sections

    def _submit(self, parts: list[CompressedPart]) -> None:
        for part in parts:
            self._parts.append(part.index)
        self.uploader.submit_all(parts)

    def _close(self) -> None:
        if self._start is None:
            return
        self._submit(self.compressor.cut())
        start = self._start
        self.sections.append(Section(kind=start.kind, database=start.database, table=start.table,
                                     parts=list(self._parts), raw_bytes=self._raw,
                                     data_start=self._data_start if start.kind == "table" else None,
                                     data_end=self._data_end if start.kind == "table" else None))
        self._start = None


def write_sections(stream: SectionedSourceStream, uploader: Uploader, settings: Settings,
                   progress: Progress, sealer: Sealer | None = None) -> list[Section]:
    """Drain every producer of ``stream`` (each in a thread), then its objects; the sections in
    manifest order: preamble, databases, tables (by name), objects. ``sealer``: encrypt the parts."""
    counter = itertools.count(1)
    lock = threading.Lock()

    def indexes() -> int:
        with lock:
            return next(counter)

    producers = stream.streams()
    threads = max(0, settings.compression_threads // max(1, len(producers))) if len(producers) > 1 \
        else settings.compression_threads
    writers = [SectionWriter(uploader, settings, progress, indexes, threads=threads, sealer=sealer)
               for _ in producers]
    sections: list[Section] = []
    if producers:
        with ThreadPoolExecutor(len(producers), thread_name_prefix="dump-stream") as pool:
            futures = [pool.submit(w.write, events) for w, events in zip(writers, producers, strict=True)]
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:  # stopped (a signal): the producers must not be waited for
                stream.abort()
                raise
            first = next((f.exception() for f in done if f.exception() is not None), None)
            if first is not None:
                stream.abort()  # the other producers' runs end, so they stop too
                wait(futures)
                raise first
            for future in futures:
                sections += future.result()
    sections += SectionWriter(uploader, settings, progress, indexes, threads=settings.compression_threads,
                              sealer=sealer).write(stream.objects())
    order = {"preamble": 0, "database": 1, "table": 2, "objects": 3}
    return sorted(sections, key=lambda s: (order[s.kind], s.database or "", s.table or ""))
