"""The per-shard backup lock: a lease object in a store, so that it holds across hosts.

One backup per shard at a time, whichever host or process starts it (daemons on two hosts
sharing a fleet, a cron job, a human). The lock is a chain of lease objects
``<shard>/locks/<generation>.json`` in the shard's lock store; the lease with the highest
generation is the lock. Each lease names its owner (host, pid, process start time, purpose)
and an expiry.

* **Acquire**: read the newest lease; if it is live, the lock is held (``LockHeld`` names the
  owner). Otherwise create generation + 1 with a conditional create (``put_if_absent``): of
  several racing hosts exactly one succeeds on a store whose creates are atomic (local files,
  S3); the others see its lease on their next read. Older generations are then deleted.
* **Live** means: not expired, and, when the owner is on this host, its process still exists
  (a lease left by a process that crashed on this host is stale at once; one left on another
  host expires after ``ttl``).
* **Renew**: the holder rewrites its lease with a new expiry every ``ttl / 4`` (a heartbeat
  thread), after checking it is still the newest lease and still its own.
* **Fence**: before a backup commits its manifest it checks the same (``check``), so a holder
  that was stalled past its expiry and lost the lock aborts instead of committing.
* **Release**: the holder deletes its lease.

Expiry compares the lease's recorded time with this host's clock: hosts sharing a fleet need
clocks within a small fraction of ``ttl`` (default 10 minutes) of each other. On a store whose
conditional create is not atomic (Swift), two hosts racing within milliseconds could both take
the lock; backupd warns about it, and the worst outcome is one duplicate backup, never a lost
or corrupt one (each backup has its own id and commits on its own).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from backupd.errors import BackupFailed, LockHeld, LockLost, ObjectNotFound, StoreError
from backupd.processes import pid_alive, process_start
from backupd.repo.layout import lock_generation, lock_key, lock_prefix
from backupd.repo.model import utc_now
from backupd.stores.base import Payload, Store

log = logging.getLogger(__name__)
_ACQUIRE_ATTEMPTS = 5


@dataclass(frozen=True)
class Owner:
    """Who holds a lease: enough to tell a crashed local process from a live one."""

    host: str
    pid: int
    started: str  # the process's start time in clock ticks since boot ("" if unknown)
    purpose: str

    @classmethod
    def this_process(cls, purpose: str) -> Owner:
        return cls(socket.gethostname(), os.getpid(), process_start(os.getpid()), purpose)

    def describe(self) -> str:
        return f"host {self.host} pid {self.pid} ({self.purpose})"


@dataclass(frozen=True)
class LeaseRecord:
    token: str
    owner: Owner
    acquired_at: datetime
    expires_at: datetime

    def to_payload(self) -> Payload:
        document = asdict(self)
        document["acquired_at"] = self.acquired_at.isoformat()
        document["expires_at"] = self.expires_at.isoformat()
        return Payload.from_bytes(json.dumps(document, indent=1).encode() + b"\n")

    @classmethod
    def parse(cls, data: bytes) -> LeaseRecord:
        document = json.loads(data)
        return cls(token=document["token"], owner=Owner(**document["owner"]),
                   acquired_at=datetime.fromisoformat(document["acquired_at"]),
                   expires_at=datetime.fromisoformat(document["expires_at"]))


def process_alive(owner: Owner) -> bool:
    """Whether ``owner``'s process (on this host) still runs (pid reuse and zombies excluded)."""
    return pid_alive(owner.pid, owner.started)


class ShardLease:
    """The lock of one shard in one store (see the module docstring)."""

    def __init__(self, store: Store, shard: str, *, ttl: float, owner: Owner,
                 clock: Callable[[], datetime] = utc_now, host: str | None = None,
                 alive: Callable[[Owner], bool] = process_alive, kind: str = "backup"):
        """``kind``: what the lease serializes (``backup``: backups of the shard; ``binlogs``:
        its binlog archiver), each in its own folder (``backupd.repo.layout.lock_prefix``)."""
        self.store = store
        self.shard = shard
        self.kind = kind
        self.name = "backup lock" if kind == "backup" else "binlog archiver lease"
        self.ttl = timedelta(seconds=ttl)
        self.owner = owner
        self.clock = clock
        self.host = host if host is not None else socket.gethostname()
        self.alive = alive
        self.token = secrets.token_hex(8)
        self.generation: int | None = None
        self.lost: str | None = None
        self._lock = threading.Lock()
        if not store.properties.atomic_create:
            log.warning("shard %s: the lock lives in store %s, whose conditional creates are not "
                        "atomic: two hosts starting at the same instant could both back it up",
                        shard, store.name)

    # ------------------------------------------------------------------ reading
    def _generations(self) -> list[int]:
        found = [lock_generation(info.key) for info in self.store.list(lock_prefix(self.shard, self.kind))]
        return sorted(g for g in found if g is not None)

    def _read(self, generation: int) -> LeaseRecord | None:
        try:
            data = self.store.get(lock_key(self.shard, generation, self.kind))
        except ObjectNotFound:
            return None
        try:
            return LeaseRecord.parse(data)
        except (ValueError, KeyError, TypeError):
            log.warning("shard %s: lease %s in store %s is unreadable; treating it as expired",
                        self.shard, lock_key(self.shard, generation, self.kind), self.store.name)
            return None

    def is_live(self, record: LeaseRecord) -> bool:
        if record.expires_at <= self.clock():
            return False
        if record.owner.host == self.host and not self.alive(record.owner):
            return False
        return True

    def holder(self) -> LeaseRecord | None:
        """The live lease holding the lock now, or None."""
        generations = self._generations()
        record = self._read(generations[-1]) if generations else None
        return record if record is not None and self.is_live(record) else None

    # ------------------------------------------------------------------ acquire / release
    def acquire(self) -> None:
        """Take the lock or raise LockHeld naming its holder."""
        for _ in range(_ACQUIRE_ATTEMPTS):
            generations = self._generations()
            if generations:
                newest = generations[-1]
                record = self._read(newest)
                if record is not None and self.is_live(record):
                    raise self._held(record)
                if record is not None:
                    log.info("shard %s: taking over the expired lock of %s", self.shard,
                             record.owner.describe())
                generation = newest + 1
            else:
                generation = 1
            record = self._record()
            if self.store.put_if_absent(lock_key(self.shard, generation, self.kind), record.to_payload()):
                return self._acquired(generation, generations)
            mine = self._read(generation)  # a retried create that did succeed reads as ours
            if mine is not None and mine.token == self.token:
                return self._acquired(generation, generations)
        holder = self.holder()
        if holder is not None:
            raise self._held(holder)
        raise LockHeld(f"shard {self.shard}: could not take the {self.name} in store "
                       f"{self.store.name} after {_ACQUIRE_ATTEMPTS} attempts (other hosts are racing for it)")

    def _acquired(self, generation: int, older: list[int]) -> None:
        self.generation = generation
        log.debug("shard %s: lock generation %d taken in store %s", self.shard, generation, self.store.name)
        for old in older:
            if old < generation:
                try:
                    self.store.delete(lock_key(self.shard, old, self.kind))
                except StoreError as exc:
                    log.debug("shard %s: old lease %d not deleted: %s", self.shard, old, exc)

    def _held(self, record: LeaseRecord) -> LockHeld:
        left = max(0, int((record.expires_at - self.clock()).total_seconds()))
        running = "a backup is" if self.kind == "backup" else "a binlog archiver is"
        return LockHeld(f"shard {self.shard}: {running} already running: the lock is held by "
                        f"{record.owner.describe()} since {record.acquired_at.isoformat()} "
                        f"(lease expires in {left}s unless renewed)")

    def _record(self) -> LeaseRecord:
        now = self.clock()
        return LeaseRecord(self.token, self.owner, now, now + self.ttl)

    def still_ours(self) -> bool:
        if self.generation is None:
            return False
        generations = self._generations()
        if not generations or generations[-1] != self.generation:
            return False
        record = self._read(self.generation)
        return record is not None and record.token == self.token

    def renew(self) -> None:
        """Extend the lease (or mark it lost if another run holds the lock now)."""
        with self._lock:
            if self.generation is None or self.lost:
                return
            if not self.still_ours():
                self.lost = "another run took the lock over (our lease had expired)"
                log.error("shard %s: lost the %s: %s", self.shard, self.name, self.lost)
                return
            self.store.put(lock_key(self.shard, self.generation, self.kind), self._record().to_payload())

    def check(self) -> None:
        """The fence: raise LockLost unless this run still holds the lock."""
        with self._lock:
            if self.lost is None and not self.still_ours():
                self.lost = "our lease expired or was taken over"
            if self.lost:
                raise LockLost(f"shard {self.shard}: lost the {self.name} before committing: {self.lost}",
                               hint="another run may be backing this shard up; this backup was discarded")

    def release(self) -> None:
        with self._lock:
            generation, self.generation = self.generation, None
            if generation is None:
                return
            try:
                record = self._read(generation)
                if record is not None and record.token == self.token:
                    self.store.delete(lock_key(self.shard, generation, self.kind))
            except StoreError as exc:
                log.warning("shard %s: could not release the lock (%s); it expires in %s", self.shard,
                            exc, self.ttl)

    @contextmanager
    def renewing(self) -> Iterator[ShardLease]:
        """Renew the (acquired) lease every ``ttl / 4`` in a background thread while the block runs."""
        stop = threading.Event()
        interval = max(1.0, self.ttl.total_seconds() / 4)

        def heartbeat() -> None:
            while not stop.wait(interval):
                try:
                    self.renew()
                except StoreError as exc:  # a store hiccup: the next beat retries
                    log.warning("shard %s: renewing the lock failed (%s); retrying", self.shard, exc)

        thread = threading.Thread(target=heartbeat, name=f"lease-{self.shard}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=30)


class ShardLock:
    """The shard's lock over its candidate stores, so that a cloud outage does not stop backups.

    The lease is taken in the first candidate store that answers (``[schedule] lock_store``
    first if set, then the shard's stores in order); a store that cannot be reached is skipped
    with a warning. After taking it, the other reachable candidates are read: a live lease
    there (another host fell back to it while this one could not reach it, or the other way
    round) means the lock is held, and ours is given back. Everything else is the lease's.
    """

    def __init__(self, leases: list[ShardLease]):
        if not leases:
            raise ValueError("a shard lock needs at least one store")
        self.leases = leases
        self.shard = leases[0].shard
        self.held: ShardLease | None = None

    def acquire(self) -> None:
        problems = []
        for index, lease in enumerate(self.leases):
            try:
                lease.acquire()
            except StoreError as exc:
                problems.append(f"{lease.store.name}: {exc}")
                log.warning("shard %s: cannot use store %s for the %s (%s); trying the next store",
                            self.shard, lease.store.name, lease.name, exc)
                continue
            if index:
                log.warning("shard %s: the %s is in store %s instead of %s", self.shard, lease.name,
                            lease.store.name, self.leases[0].store.name)
            self._check_others(lease)
            self.held = lease
            return
        raise BackupFailed(f"shard {self.shard}: every store failed: the {self.leases[0].name} could not be "
                           f"taken in any of them ({'; '.join(problems)})")

    def _check_others(self, mine: ShardLease) -> None:
        for other in self.leases:
            if other is mine:
                continue
            try:
                holder = other.holder()
            except StoreError:
                continue
            if holder is not None:
                mine.release()
                raise mine._held(holder)

    def check(self) -> None:
        assert self.held is not None
        self.held.check()

    def renewing(self) -> contextlib.AbstractContextManager[ShardLease]:
        assert self.held is not None
        return self.held.renewing()

    def release(self) -> None:
        if self.held is not None:
            self.held.release()
            self.held = None
