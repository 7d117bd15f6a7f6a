"""Store health: a store that does not answer costs seconds once, not minutes per operation.

A circuit breaker per store, shared by every thread of the process. The first ``StoreUnreachable``
(connection refused, DNS failure, connect timeout, no answer within the timeout) marks the store
down: from then on every operation on it fails at once with a ``StoreUnreachable`` that says
since when and why, so the work goes on with the other stores. Meanwhile a background thread
probes the store (a ``stat`` of a key that does not exist: any answer will do) with backoff, and
marks it up again when it answers. Errors of a store that answers (5xx, throttling, a reset
mid-transfer) are the retry wrapper's business (``backupd.stores.retry``), not the breaker's.

The wrappers stack as ``HealthGuardedStore(RetryingStore(backend))``: a down store is not even
retried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from backupd.errors import ObjectNotFound, StoreError, StoreUnreachable
from backupd.stores.base import ObjectInfo, ObjectStream, Payload, Store
from backupd.stores.stats import RetryStats

log = logging.getLogger(__name__)
T = TypeVar("T")

PROBE_KEY = "backupd-health-probe"  # never written: a store that answers "not found" is up
FIRST_PROBE = 1.0
MAX_PROBE_INTERVAL = 30.0


class StoreHealth:
    """Whether one store answers (see the module docstring). Thread-safe."""

    def __init__(self, name: str, probe: Callable[[], None], *, first_probe: float = FIRST_PROBE,
                 max_interval: float = MAX_PROBE_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.name = name
        self._probe = probe
        self._first_probe = first_probe
        self._max_interval = max_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_silence = 0.0  # when the store last failed to answer (an operation or a probe)
        self._reason = ""
        self._prober: threading.Thread | None = None
        self.outages = 0  # how many times the store went down in this process

    @property
    def is_down(self) -> bool:
        with self._lock:
            return self._down_since is not None

    @property
    def reason(self) -> str:
        """Why the store is down (the error that marked it), or "" when it is up."""
        with self._lock:
            return self._reason if self._down_since is not None else ""

    def check(self) -> None:
        """Raise ``StoreUnreachable`` at once if the store is down."""
        with self._lock:
            if self._down_since is None:
                return
            for_seconds = self._clock() - self._down_since
            reason = self._reason
        raise StoreUnreachable(f"store {self.name} is unreachable (for {for_seconds:.0f}s: {reason}); "
                               "not waiting for it", store=self.name)

    def failed(self, error: StoreUnreachable) -> None:
        """The store did not answer: mark it down and start probing it."""
        with self._lock:
            self._last_silence = self._clock()
            if self._down_since is not None:
                return
            self._down_since = self._last_silence
            self._reason = error.message
            self.outages += 1
            self._prober = threading.Thread(target=self._probe_until_up, name=f"probe-{self.name}", daemon=True)
            self._prober.start()
        log.warning("store %s is unreachable (%s); going on without it and probing it in the background",
                    self.name, error.message)

    def probe_now(self, *, unless_silent_within: float = 0.0) -> bool:
        """Probe once, now (bounded by the store's timeouts); True if the store is up (again).
        A store that failed to answer less than ``unless_silent_within`` seconds ago is taken as
        still down without a probe (a hanging store would cost its answer timeout again)."""
        if not self.is_down:
            return True
        with self._lock:
            recent = self._clock() - self._last_silence < unless_silent_within
        return False if recent else self._try_probe()

    def _try_probe(self) -> bool:
        try:
            self._probe()
        except StoreUnreachable:
            with self._lock:
                self._last_silence = self._clock()
            return False
        except (ObjectNotFound, StoreError):
            pass  # it answered: it is reachable, whatever it said
        self._up()
        return True

    def _up(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            down_for = self._clock() - self._down_since
            self._down_since = None
            self._reason = ""
        log.warning("store %s answers again (it was unreachable for %.0fs); using it again", self.name, down_for)

    def _probe_until_up(self) -> None:
        interval = self._first_probe
        while self.is_down:
            time.sleep(interval)
            if self._try_probe():
                return
            interval = min(self._max_interval, interval * 2)


class HealthGuardedStore(Store):
    """A store behind its circuit breaker: fails at once while the store is down (module docstring)."""

    def __init__(self, inner: Store, health: StoreHealth, stats: RetryStats | None = None):
        """``stats`` (shared with the retry wrapper) counts each operation failed at once as an error."""
        self.inner = inner
        self.name = inner.name
        self.properties = inner.properties
        self.health = health
        self.stats = stats if stats is not None else RetryStats()

    def describe(self) -> str:
        return self.inner.describe()

    def _call(self, operation: Callable[[], T]) -> T:
        try:
            self.health.check()
        except StoreUnreachable:
            self.stats.count(errors=1)
            raise
        try:
            return operation()
        except StoreUnreachable as exc:
            self.health.failed(exc)
            raise

    def put(self, key: str, payload: Payload) -> None:
        self._call(lambda: self.inner.put(key, payload))

    def put_if_absent(self, key: str, payload: Payload) -> bool:
        return self._call(lambda: self.inner.put_if_absent(key, payload))

    def open(self, key: str) -> ObjectStream:
        return self._call(lambda: self.inner.open(key))

    def get(self, key: str) -> bytes:
        return self._call(lambda: self.inner.get(key))

    def stat(self, key: str) -> ObjectInfo:
        return self._call(lambda: self.inner.stat(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        yield from self._call(lambda: list(self.inner.list(prefix)))

    def delete(self, key: str) -> None:
        self._call(lambda: self.inner.delete(key))
