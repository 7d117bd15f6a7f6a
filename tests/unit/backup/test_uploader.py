"""The uploader's memory bound and failure handling, with in-memory fake stores."""

from __future__ import annotations

import threading
import time

import pytest

from backupd.backup.uploader import Uploader
from backupd.errors import BackupFailed, PermanentStoreError
from backupd.repo.codec import CompressedPart
from backupd.stores.base import ObjectInfo, Payload, Store


class SlowStore(Store):
    def __init__(self, name, delay=0.02, fail_on=None):
        self.name = name
        self.delay = delay
        self.fail_on = fail_on
        self.objects: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def put(self, key, payload):
        time.sleep(self.delay)
        if self.fail_on and self.fail_on in key:
            raise PermanentStoreError(f"store {self.name}: denied", store=self.name, key=key)
        with self.lock:
            self.objects[key] = payload.to_bytes()

    def put_if_absent(self, key, payload):
        raise NotImplementedError

    def open(self, key):
        raise NotImplementedError

    def stat(self, key):
        return ObjectInfo(key, len(self.objects[key]))

    def list(self, prefix=""):
        return iter([ObjectInfo(k, len(v)) for k, v in sorted(self.objects.items()) if k.startswith(prefix)])

    def delete(self, key):
        with self.lock:
            self.objects.pop(key, None)


def part(i: int) -> CompressedPart:
    return CompressedPart(i, Payload([bytes([i]) * 100]), 300, "0" * 64)


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_parts_in_flight_bound_memory(in_flight):
    stores = [SlowStore("a"), SlowStore("b", delay=0.05)]
    uploader = Uploader(stores, "7", "20261126T000000Z-full-abcdef", parts_in_flight=in_flight)
    peak = 0
    for i in range(1, 13):
        uploader.submit(part(i))
        # after submit returns, at most in_flight parts are still being uploaded
        pending = sum(1 for f in uploader._futures if not f.done())
        peak = max(peak, -(-pending // len(stores)))
    complete = uploader.finish()
    assert peak <= in_flight
    assert [s.name for s in complete] == ["a", "b"]
    assert stores[0].objects == stores[1].objects and len(stores[0].objects) == 12


def test_a_failing_store_is_dropped_and_the_others_carry_on():
    good, bad = SlowStore("good"), SlowStore("bad", fail_on="part-000003")
    uploader = Uploader([good, bad], "7", "20261126T000000Z-full-abcdef", parts_in_flight=1)
    for i in range(1, 7):
        uploader.submit(part(i))
    complete = uploader.finish()
    assert [s.name for s in complete] == ["good"]
    assert "denied" in uploader.failed["bad"]
    assert len(good.objects) == 6
    assert len(bad.objects) < 6  # nothing after its failure was sent to it
    uploader.delete_written([bad])
    assert bad.objects == {}


def test_all_stores_failing_raises_and_abort_deletes_everything():
    a, b = SlowStore("a", fail_on="part-000002"), SlowStore("b", fail_on="part-000002")
    uploader = Uploader([a, b], "7", "20261126T000000Z-full-abcdef", parts_in_flight=1)
    with pytest.raises(BackupFailed, match="every store failed"):
        for i in range(1, 6):
            uploader.submit(part(i))
        uploader.finish()
    uploader.abort()
    assert a.objects == {} and b.objects == {}
