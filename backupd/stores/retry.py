"""Retrying transient store errors: a wrapper that fits around any Store (restic's retry backend).

Only ``TransientStoreError`` is retried; ``ObjectNotFound`` and permanent errors pass straight
through. Attempts back off exponentially with full jitter, inside a total time budget per
operation; every retry and every late success is logged, and counted in ``stats``. A put is
retried with a fresh reader of its payload, so no attempt ever sends a half-consumed stream.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from backupd.errors import ObjectNotFound, StoreError, TransientStoreError
from backupd.stores.base import ObjectInfo, ObjectStream, Payload, Store
from backupd.stores.stats import RetryStats

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetryingStore(Store):
    def __init__(self, inner: Store, *, budget: float = 120.0, base_delay: float = 0.25,
                 max_delay: float = 15.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[float], float] = lambda cap: random.uniform(0, cap),
                 stats: RetryStats | None = None):
        """``jitter(cap)`` picks each wait in ``[0, cap]`` (full jitter); ``cap`` doubles from
        ``base_delay`` with each attempt, up to ``max_delay``."""
        self.inner = inner
        self.name = inner.name
        self.properties = inner.properties
        self.budget = budget
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.stats = stats if stats is not None else RetryStats()
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter

    def describe(self) -> str:
        return self.inner.describe()

    def _call(self, what: str, operation: Callable[[], T]) -> T:
        deadline = self._clock() + self.budget
        attempt = 0
        while True:
            try:
                result = operation()
            except ObjectNotFound:
                raise  # "not found" is an answer, not an error
            except TransientStoreError as exc:
                attempt += 1
                delay = self._jitter(min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
                if self._clock() + delay > deadline:
                    self.stats.count(gave_up=1, errors=1)
                    log.error("store %s: %s failed after %d attempts in %.0fs: %s", self.name, what,
                              attempt, self.budget, exc)
                    raise
                self.stats.count(retries=1)
                log.warning("store %s: %s failed (%s); retrying in %.2fs (attempt %d)", self.name,
                            what, exc, delay, attempt + 1)
                self._sleep(delay)
                continue
            except StoreError:
                self.stats.count(errors=1)
                raise
            if attempt:
                self.stats.count(recovered=1)
                log.info("store %s: %s succeeded after %d retries", self.name, what, attempt)
            return result

    def put(self, key: str, payload: Payload) -> None:
        self._call(f"put {key}", lambda: self.inner.put(key, payload))

    def put_if_absent(self, key: str, payload: Payload) -> bool:
        return self._call(f"create {key}", lambda: self.inner.put_if_absent(key, payload))

    def open(self, key: str) -> ObjectStream:
        return self._call(f"open {key}", lambda: self.inner.open(key))

    def get(self, key: str) -> bytes:
        return self._call(f"get {key}", lambda: self.inner.get(key))

    def stat(self, key: str) -> ObjectInfo:
        return self._call(f"stat {key}", lambda: self.inner.stat(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # A listing is retried from the start, so it is collected before anything is yielded.
        yield from self._call(f"list {prefix or '/'}", lambda: list(self.inner.list(prefix)))

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", lambda: self.inner.delete(key))
