"""Loading a table-addressed backup over several connections at once, each table verified as
soon as it is loaded.

Order: the preamble and every ``CREATE DATABASE`` on one connection; then the tables, largest
first, taken by ``jobs`` workers, each with a connection of its own (``restore.statements``:
statements go to the server directly, without a mysql client parsing them first) that runs the
preamble once, then per table ``USE db`` and the table's section (structure, rows, triggers;
every INSERT is committed: one transaction per table measured 1.45x slower); then the table is
handed to the verifier,
so verification overlaps the other tables' loads; last, each database's views, routines and
events through the mysql client (their definitions may hold string literals with raw newlines,
which only a parser that knows SQL quoting splits right).

Every part is fetched and checked (size, sha256) before a byte of it is written, and decoded as
it streams. When a worker fails (a part with no good copy, the server's error), the others stop
at their next chunk and close their connections (statements not executed yet are dropped).
The error names the table; ``LoadProgress`` says which tables were loaded.

Memory: each worker holds at most two parts (the one it applies and the one being fetched; an
encrypted one is held twice while it is decrypted), a decode buffer and its statement being
read (about 1 MiB), so ``jobs x 2 x part size`` (compressed; ``jobs x 3 x part size`` encrypted)
plus a few MiB.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from backupd.config import Settings
from backupd.errors import BackupdError, CorruptPart
from backupd.mysql.connection import quote_identifier
from backupd.progress import Progress
from backupd.repo.codec import PartDecodeError, decode_part
from backupd.repo.fetch import PartFetcher
from backupd.repo.model import Manifest, Section
from backupd.repo.repository import Target
from restore.apply import MysqlClientApplier
from restore.statements import ServerApplier
from restore.verify import TableVerifier

log = logging.getLogger(__name__)


def default_jobs(settings: Settings) -> int:
    return settings.restore_jobs or os.cpu_count() or 2


@dataclass
class LoadProgress:
    """Which tables of a load are done; what a failure's hint reports."""

    total: int
    loaded: list[str] = field(default_factory=list)
    failed: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self, name: str) -> None:
        with self._lock:
            self.loaded.append(name)

    def describe(self) -> str:
        names = ", ".join(self.loaded[:5]) + (f" and {len(self.loaded) - 5} more" if len(self.loaded) > 5 else "")
        text = f"{len(self.loaded)} of {self.total} tables loaded" + (f" ({names})" if self.loaded else "")
        return text + (f"; loading {self.failed} failed (no byte of an unverified part was applied)"
                       if self.failed else "")


class SectionLoader:
    """Loads sections of one backup into a target (see the module docstring)."""

    def __init__(self, settings: Settings, target: Target, manifest: Manifest, fetcher: PartFetcher, *,
                 verifier: TableVerifier | None, jobs: int, progress: Progress,
                 rename: Callable[[Section], str] | None = None):
        """``rename(section)``: the database a table section is loaded into (default: its own)."""
        self.settings = settings
        self.target = target
        self.manifest = manifest
        self.fetcher = fetcher
        self.verifier = verifier
        self.jobs = max(1, jobs)
        self.progress = progress
        self.rename = rename
        self.preamble = next((s for s in manifest.sections or [] if s.kind == "preamble"), None)
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public
    def load_in_order(self, sections: Iterable[Section], *, use: bool = True, start: int = 0,
                      client: bool = False) -> None:
        """``sections`` one after the other on one connection (databases, objects); ``start``:
        skip each section's first raw bytes (a table's triggers start at its ``data_end``).
        ``client``: through the mysql client (views, routines and events: their definitions may
        hold string literals with raw newlines, which only a parser that knows SQL quoting splits
        right; they are small)."""
        applier = MysqlClientApplier(self.target, mysql=self.settings.mysql, work_dir=self.settings.work_dir) \
            if client else self._applier()
        with applier:
            self._write_section(applier, self.preamble)
            for section in sections:
                if use and section.database:
                    applier.write(f"USE {quote_identifier(section.database)};\n".encode())
                self._write_section(applier, section, start=start)
            applier.finish()

    def load_tables(self, tables: list[Section], load: LoadProgress, *, data_only: bool = False) -> None:
        """The table sections, largest first, over ``jobs`` connections; ``data_only``: without
        their triggers (loaded later by the caller)."""
        pending: queue.Queue[Section] = queue.Queue()
        for section in sorted(tables, key=lambda s: -s.raw_bytes):
            pending.put(section)
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                self._work(pending, load, data_only)
            except BaseException as exc:  # reported below; the others stop at their next chunk
                with self._lock:
                    errors.append(exc)
                self._stop.set()

        threads = [threading.Thread(target=worker, name=f"load-{i}", daemon=True)
                   for i in range(min(self.jobs, len(tables)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            first = next((e for e in errors if not isinstance(e, _Stopped)), errors[0])
            raise first

    # ------------------------------------------------------------------ workers
    def _work(self, pending: queue.Queue[Section], load: LoadProgress, data_only: bool) -> None:
        with self._applier() as applier:
            self._write_section(applier, self.preamble)
            applier.finish()
            while not self._stop.is_set():
                try:
                    section = pending.get_nowait()
                except queue.Empty:
                    break
                database = self.rename(section) if self.rename else section.database
                assert database is not None
                try:
                    applier.execute(f"USE {quote_identifier(database)}".encode())
                    self._write_section(applier, section, limit=section.data_end if data_only else None)
                    applier.finish()
                except _Stopped:
                    raise
                except BaseException as exc:
                    load.failed = section.name
                    raise _name_table(exc, section) from None
                load.done(section.name)
                if self.verifier is not None and section.table:
                    self.verifier.table_loaded(database, section.table)
            if self._stop.is_set():
                raise _Stopped()

    def _applier(self) -> ServerApplier:
        return ServerApplier(self.target.config, label=self.target.label)

    def _write_section(self, client: ServerApplier | MysqlClientApplier, section: Section | None, *, start: int = 0,
                       limit: int | None = None) -> None:
        """Stream ``section``'s verified parts into ``client``: its raw bytes from ``start`` up to
        ``limit`` (parts wholly outside are not fetched)."""
        if section is None:
            return
        parts, offset = [], 0
        for part in self.manifest.section_parts(section):
            if offset + part.raw_size > start and (limit is None or offset < limit):
                parts.append((part, offset))
            offset += part.raw_size
        if not parts:
            return
        first = {part.index: at for part, at in parts}
        for part, data in self.fetcher.verified_parts([p for p, _ in parts]):
            position = first[part.index]
            try:
                for chunk in decode_part(data):
                    if self._stop.is_set():
                        raise _Stopped()
                    end = position + len(chunk)
                    piece = chunk[max(0, start - position):(len(chunk) if limit is None else max(0, limit - position))]
                    position = end
                    if piece:
                        client.write(piece)
            except PartDecodeError as exc:
                raise CorruptPart(f"part {part.key} of backup {self.manifest.id}: {exc}") from None
            self.progress.advance(part.raw_size)


class _Stopped(Exception):
    """Another worker failed: this one stopped without finishing its table."""


def _name_table(exc: BaseException, section: Section) -> BaseException:
    """The error, its message naming the table it happened in."""
    if isinstance(exc, BackupdError) and not isinstance(exc, _Stopped):
        exc.message = f"table {section.name}: {exc.message}"
        exc.args = (exc.message,)
    return exc
