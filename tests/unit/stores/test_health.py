"""The circuit breaker of a store (pure logic: a scripted store, a probe that answers or not)."""

from __future__ import annotations

import time

import pytest

from backupd.errors import ObjectNotFound, PermanentStoreError, StoreUnreachable, TransientStoreError
from backupd.stores.base import ObjectInfo, Payload, Store
from backupd.stores.health import HealthGuardedStore, StoreHealth


class Scripted(Store):
    """Raises ``error`` (when set) from every operation; counts the calls that reached it."""

    name = "cloud"

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.calls = 0

    def _op(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error

    def put(self, key, payload):
        self._op()

    def put_if_absent(self, key, payload):
        self._op()
        return True

    def open(self, key):
        self._op()
        raise NotImplementedError

    def stat(self, key):
        self._op()
        return ObjectInfo(key, 1)

    def list(self, prefix=""):
        self._op()
        yield ObjectInfo("a", 1)

    def delete(self, key):
        self._op()


def unreachable() -> StoreUnreachable:
    return StoreUnreachable("store cloud: cannot list s3://b: Could not connect to the endpoint URL",
                            store="cloud")


def guarded(probe_answers: list[bool]) -> tuple[HealthGuardedStore, Scripted]:
    inner = Scripted()

    def probe() -> None:
        if not probe_answers[0]:
            raise unreachable()
        raise ObjectNotFound("store cloud: object probe not found", store="cloud")  # an answer

    return HealthGuardedStore(inner, StoreHealth("cloud", probe, first_probe=0.05, max_interval=0.1)), inner


def test_the_first_unreachable_error_opens_the_breaker_and_later_calls_fail_at_once():
    store, inner = guarded([False])
    inner.error = unreachable()
    with pytest.raises(StoreUnreachable):
        store.stat("k")
    assert store.health.is_down and inner.calls == 1
    started = time.monotonic()
    for call in (lambda: store.get("k"), lambda: list(store.list("1/")), lambda: store.put("k", Payload([]))):
        with pytest.raises(StoreUnreachable, match=r"store cloud is unreachable \(for \d+s: .*Could not connect"):
            call()
    assert inner.calls == 1 and time.monotonic() - started < 0.5  # none of them reached the store
    assert store.health.outages == 1


def test_errors_of_a_store_that_answers_do_not_open_it():
    store, inner = guarded([True])
    for error in (TransientStoreError("503", store="cloud"), PermanentStoreError("403", store="cloud"),
                  ObjectNotFound("gone", store="cloud")):
        inner.error = error
        with pytest.raises(type(error)):
            store.stat("k")
    assert not store.health.is_down and inner.calls == 3


def test_a_down_store_is_probed_in_the_background_and_used_again():
    answers = [False]
    store, inner = guarded(answers)
    inner.error = unreachable()
    with pytest.raises(StoreUnreachable):
        store.stat("k")
    time.sleep(0.3)
    assert store.health.is_down  # the probes get no answer yet
    answers[0] = True
    inner.error = None
    deadline = time.monotonic() + 5
    while store.health.is_down and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not store.health.is_down
    assert store.stat("k").key == "k" and store.health.reason == ""


def test_probe_now_answers_at_once():
    answers = [False]
    health = StoreHealth("cloud", lambda: (_ for _ in ()).throw(unreachable()) if not answers[0] else None,
                         first_probe=60)
    health.failed(unreachable())
    assert not health.probe_now() and health.is_down
    answers[0] = True
    assert health.probe_now() and not health.is_down


def test_a_store_silent_a_moment_ago_is_not_probed_again():
    probes = []

    def probe() -> None:
        probes.append(1)
        raise unreachable()

    health = StoreHealth("cloud", probe, first_probe=60)
    health.failed(unreachable())
    assert not health.probe_now(unless_silent_within=30.0) and probes == []  # silent 0 s ago: taken as down
    assert not health.probe_now() and probes == [1]  # asked to probe: it does
