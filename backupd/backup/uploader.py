"""Sends every part to every store, concurrently, with bounded memory.

At most ``parts_in_flight`` finished parts are held while they upload (``submit`` blocks when
the limit is reached, which in turn stops reading the source: backpressure reaches mysqldump
through its pipe). A store whose put fails (a permanent error, or transient ones past its retry
budget) is marked failed for this backup and gets nothing more; the others carry on.

A store that is unreachable (``StoreUnreachable``: its circuit breaker is open, so this costs
nothing per part) is not given up on: the parts it missed are noted, and when the backup's
uploads are done, a store that answers again (it was probed in the background, and is probed
once more now) gets them copied from a store that holds them, each verified on the way
(``backupd.repo.fetch``). It then holds the whole backup, and the backup is not DEGRADED. A store
still down by then is DEGRADED, with the reason. If every store is down while parts are still
coming, the backup fails at once instead of reading the whole source for nobody.

``abort()`` waits for puts under way and deletes every object this backup wrote, so a failed
backup leaves nothing behind.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from backupd.errors import BackupFailed, StoreError, StoreUnreachable
from backupd.repo.codec import CompressedPart
from backupd.repo.fetch import PartFetcher
from backupd.repo.layout import part_key
from backupd.repo.model import PartRecord
from backupd.stores.base import Payload, Store
from backupd.stores.health import HealthGuardedStore

log = logging.getLogger(__name__)

ALL_DOWN_GRACE = 30.0  # how long a backup waits for one of its stores when every one is down
RECENTLY = 2.0  # a store silent this recently is not probed again before the commit


class Uploader:
    def __init__(self, stores: list[Store], shard: str, backup_id: str, *, parts_in_flight: int = 1):
        if not stores:
            raise BackupFailed(f"shard {shard}: no store to write to")
        self.stores = stores
        self.shard = shard
        self.backup_id = backup_id
        self.records: list[PartRecord] = []
        self.failed: dict[str, str] = {}
        self.missing: dict[str, list[PartRecord]] = {s.name: [] for s in stores}  # missed while unreachable
        self.unreachable: dict[str, str] = {}  # why each store that missed parts was unreachable
        self.written: dict[str, list[str]] = {s.name: [] for s in stores}
        # each part's MD5 (what Swift's and S3's ETags report), for the manifest: computed in the
        # upload threads, off the stream's path, and only if a store reports MD5s
        self._md5_wanted = any(s.properties.etag_is_md5 for s in stores)
        self._md5s: dict[int, str] = {}
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
        record = PartRecord(index=part.index, key=key, size=part.size, raw_size=part.raw_size, sha256=part.sha256)
        self.records.append(record)
        targets = self.healthy
        if not targets or (all(_is_down(s) for s in targets) and not self._wait_for_a_store(targets)):
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
            future = self._pool.submit(self._put, store, record, part)
            future.add_done_callback(done)
            self._futures.append(future)

    def _put(self, store: Store, record: PartRecord, part: CompressedPart) -> None:
        key = record.key
        with self._lock:
            if store.name in self.failed:
                return
            self.written[store.name].append(key)
        if self._md5_wanted and record.index not in self._md5s:
            md5 = part.payload.md5()  # memoized: a Swift store's PUT uses the same
            with self._lock:
                self._md5s[record.index] = md5
        try:
            store.put(key, part.payload)
        except StoreUnreachable as exc:
            with self._lock:
                self.missing[store.name].append(record)
                self.unreachable[store.name] = str(exc)
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
        """Wait for every put, give stores that answer again the parts they missed; return the
        stores holding every part (raise if there are none)."""
        for future in self._futures:
            future.result()
        self._pool.shutdown(wait=True)
        self._catch_up()
        self.records = [r.model_copy(update={"md5": self._md5s.get(r.index)}) for r in self.records]
        healthy = self.healthy
        if not healthy:
            self._raise_all_failed()
        return healthy

    def _catch_up(self) -> None:
        """Copy to each store that missed parts while unreachable what it missed, from a store
        that holds every part, if it answers now; a store still down is failed (DEGRADED)."""
        behind = [s for s in self.healthy if self.missing[s.name]]
        sources = [s for s in self.healthy if not self.missing[s.name]]
        for store in behind:
            missed = self.missing[store.name]
            if not sources:
                self._mark_failed(store, f"unreachable: {self.unreachable[store.name]}")
                continue
            health = store.health if isinstance(store, HealthGuardedStore) else None
            if health is not None and not health.probe_now(unless_silent_within=RECENTLY):
                self._mark_failed(store, f"unreachable: {self.unreachable[store.name]}")
                continue
            log.warning("store %s answers again: copying the %d part(s) of backup %s it missed from %s",
                        store.name, len(missed), self.backup_id, ", ".join(s.name for s in sources))
            fetcher = PartFetcher(sources, self.backup_id, missed)
            try:
                for record, data in fetcher.verified_parts():
                    store.put(record.key, Payload.from_bytes(data))
            except StoreError as exc:
                self._mark_failed(store, f"{exc} (while copying the parts it missed)")
                continue
            self.missing[store.name] = []

    def _wait_for_a_store(self, stores: list[Store]) -> bool:
        """Every store is down: probe them for up to ``ALL_DOWN_GRACE`` seconds (the source waits
        meanwhile); True as soon as one answers."""
        deadline = time.monotonic() + ALL_DOWN_GRACE
        log.warning("shard %s: every store is unreachable; waiting up to %.0fs for one to answer",
                    self.shard, ALL_DOWN_GRACE)
        while time.monotonic() < deadline:
            if any(s.health.probe_now() for s in stores if isinstance(s, HealthGuardedStore)):
                return True
            time.sleep(1.0)
        return False

    def _raise_all_failed(self) -> None:
        reasons = list(self.failed.values())
        for store in self.stores:
            if store.name not in self.failed:
                why = self.unreachable.get(store.name) or (
                    store.health.reason if isinstance(store, HealthGuardedStore) else "")
                if why:
                    reasons.append(why)
        raise BackupFailed(f"shard {self.shard}: every store failed: {'; '.join(reasons)}")

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


def _is_down(store: Store) -> bool:
    """Whether ``store``'s circuit breaker says it does not answer now."""
    return isinstance(store, HealthGuardedStore) and store.health.is_down
