"""The retry wrapper, on a scripted fake store (pure logic: no server needed)."""

from __future__ import annotations

import pytest

from backupd.errors import ObjectNotFound, PermanentStoreError, TransientStoreError
from backupd.stores.base import ObjectInfo, Payload, Store
from backupd.stores.retry import RetryingStore


class Flaky(Store):
    """Fails the first ``failures`` calls of each operation with the given error."""

    name = "flaky"

    def __init__(self, failures: int, error=TransientStoreError):
        self.failures = failures
        self.error = error
        self.calls = 0
        self.received: list[bytes] = []

    def _maybe_fail(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error("boom", store=self.name, key="k")

    def put(self, key, payload):
        reader = payload.reader()
        data = reader.read(3)  # a half-consumed stream on the failing attempt
        self._maybe_fail()
        self.received.append(data + reader.read())

    def put_if_absent(self, key, payload):
        self._maybe_fail()
        return True

    def open(self, key):
        raise NotImplementedError

    def get(self, key):
        self._maybe_fail()
        return b"data"

    def stat(self, key):
        self._maybe_fail()
        return ObjectInfo(key, 4)

    def list(self, prefix=""):
        yield ObjectInfo("a", 1)
        self._maybe_fail()
        yield ObjectInfo("b", 1)

    def delete(self, key):
        self._maybe_fail()


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self):
        return self.now


def wrap(inner, budget=60.0):
    fake = FakeTime()
    return RetryingStore(inner, budget=budget, sleep=fake.sleep, clock=fake.clock), fake


def test_transient_errors_are_retried_with_a_fresh_payload_reader():
    inner = Flaky(failures=3)
    store, fake = wrap(inner)
    store.put("k", Payload([b"hello ", b"world"]))
    assert inner.received == [b"hello world"]
    assert store.stats.retries == 3 and store.stats.recovered == 1
    assert len(fake.sleeps) == 3 and all(s >= 0 for s in fake.sleeps)


def test_backoff_grows_and_is_capped():
    inner = Flaky(failures=50)
    store, fake = wrap(inner, budget=1e9)
    store.max_delay = 2.0
    with pytest.raises(TransientStoreError):
        store.budget = 30.0
        store.get("k")
    assert max(fake.sleeps) <= 2.0
    assert fake.now <= 30.0
    assert store.stats.gave_up == 1
    # the waits' upper bound doubles from base_delay up to max_delay (jitter picks below it)
    fake = FakeTime()
    ceilings = RetryingStore(Flaky(failures=6), budget=60, base_delay=0.25, max_delay=2.0,
                             sleep=fake.sleep, clock=fake.clock, jitter=lambda cap: cap)
    ceilings.get("k")
    assert fake.sleeps == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert all(later >= earlier for earlier, later in zip(fake.sleeps, fake.sleeps[1:]))


@pytest.mark.parametrize("error", [PermanentStoreError, ObjectNotFound])
def test_permanent_and_not_found_are_not_retried(error):
    inner = Flaky(failures=1, error=error)
    store, fake = wrap(inner)
    with pytest.raises(error):
        store.stat("k")
    assert inner.calls == 1 and fake.sleeps == []


def test_listing_is_retried_from_the_start_without_duplicates():
    inner = Flaky(failures=1)
    store, _ = wrap(inner)
    assert [i.key for i in store.list("")] == ["a", "b"]


def test_errors_are_counted_for_metrics_but_not_found_is_an_answer():
    permanent = RetryingStore(Flaky(1, PermanentStoreError), budget=1, sleep=lambda _: None)
    with pytest.raises(PermanentStoreError):
        permanent.get("k")
    missing = RetryingStore(Flaky(1, ObjectNotFound), budget=1, sleep=lambda _: None)
    with pytest.raises(ObjectNotFound):
        missing.get("k")
    flaky = RetryingStore(Flaky(2), budget=60, sleep=lambda _: None)
    assert flaky.get("k") == b"data"
    assert (permanent.stats.errors, missing.stats.errors, flaky.stats.errors) == (1, 0, 0)
    assert flaky.stats.retries == 2 and flaky.stats.recovered == 1
