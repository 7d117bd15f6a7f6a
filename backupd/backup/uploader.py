"""Sends every part to every store, concurrently, with bounded memory.

At most ``parts_in_flight`` finished parts are held while they upload (``submit`` blocks when
the limit is reached, which in turn stops reading the source: backpressure reaches mysqldump
through its pipe). A store whose put fails is marked failed for this backup and gets nothing
more; the others carry on. ``abort()`` waits for puts under way and deletes every object this
backup wrote, so a failed backup leaves nothing behind.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from backupd.errors import BackupFailed, StoreError
from backupd.repo.codec import CompressedPart
from backupd.repo.layout import part_key
from backupd.repo.model import PartRecord
from backupd.stores.base import Store

log = logging.getLogger(__name__)


class Uploader:
    def __init__(self, stores: list[Store], shard: str, backup_id: str, *, parts_in_flight: int = 1):
        if not stores:
            raise BackupFailed(f"shard {shard}: no store to write to")
        self.stores = stores
        self.shard = shard
        self.backup_id = backup_id
        self.records: list[PartRecord] = []
        self.failed: dict[str, str] = {}
        self.written: dict[str, list[str]] = {s.name: [] for s in stores}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(parts_in_flight)
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(stores) * parts_in_flight),
                                        thread_name_prefix=f"upload-{shard}")
        self._futures: list[Future[None]] = []

    @property
    def healthy(self) -> list[Store]:
        with self._lock:
            return [s for s in self.stores if s.name not in self.failed]

    def submit_all(self, parts: list[CompressedPart]) -> None:
        """Submit parts in order, keeping no reference to them afterwards (memory bound)."""
        while parts:
            self.submit(parts.pop(0))

    def submit(self, part: CompressedPart) -> None:
        """Queue ``part`` for every healthy store; blocks while ``parts_in_flight`` are held."""
        key = part_key(self.shard, self.backup_id, part.index)
        self.records.append(PartRecord(index=part.index, key=key, size=part.size,
                                       raw_size=part.raw_size, sha256=part.sha256))
        targets = self.healthy
        if not targets:
            self._raise_all_failed()
        self._slots.acquire()
        remaining = [len(targets)]

        def done(_: Future[None]) -> None:
            with self._lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                self._slots.release()

        for store in targets:
            future = self._pool.submit(self._put, store, key, part)
            future.add_done_callback(done)
            self._futures.append(future)

    def _put(self, store: Store, key: str, part: CompressedPart) -> None:
        with self._lock:
            if store.name in self.failed:
                return
            self.written[store.name].append(key)
        try:
            store.put(key, part.payload)
        except StoreError as exc:
            self._mark_failed(store, str(exc))
        except Exception as exc:  # an SDK error that escaped a store's translation
            self._mark_failed(store, f"store {store.name}: unexpected error writing {key}: {exc!r}")

    def _mark_failed(self, store: Store, reason: str) -> None:
        with self._lock:
            if store.name not in self.failed:
                self.failed[store.name] = reason
                log.error("store %s failed for backup %s: %s", store.name, self.backup_id, reason)

    def finish(self) -> list[Store]:
        """Wait for every put; return the stores holding every part (raise if there are none)."""
        for future in self._futures:
            future.result()
        self._pool.shutdown(wait=True)
        healthy = self.healthy
        if not healthy:
            self._raise_all_failed()
        return healthy

    def _raise_all_failed(self) -> None:
        reasons = "; ".join(self.failed.values())
        raise BackupFailed(f"shard {self.shard}: every store failed: {reasons}")

    def abort(self) -> None:
        """Wait for puts under way, then delete every object written (best effort, logged)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.delete_written()

    def delete_written(self, stores: list[Store] | None = None) -> None:
        """Delete the parts this backup wrote to ``stores`` (default: all)."""
        for store in stores or self.stores:
            for key in reversed(self.written[store.name]):
                try:
                    store.delete(key)
                except Exception as exc:
                    log.error("store %s: could not delete orphaned part %s: %s", store.name, key, exc)
