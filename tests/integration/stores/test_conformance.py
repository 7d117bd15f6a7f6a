"""One conformance suite, run against every store implementation (restic's backend suite).

The ``store`` fixture is parametrized over store kinds; later stores add themselves to
``BACKENDS`` and must pass the same tests, alone, inside the retry wrapper backupd puts around
every store, and (``+flaky``) behind a network that loses every other answer, where a retried
operation must return what a first try would have.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from backupd.config import CloudFilesStoreConfig, S3StoreConfig, SwiftStoreConfig
from backupd.errors import ObjectNotFound, PermanentStoreError
from backupd.secrets import Secret
from backupd.stores.base import Payload, Store
from backupd.stores.local import LocalStore
from backupd.stores.retry import RetryingStore
from backupd.stores.s3 import S3Store
from backupd.stores.swift import SwiftStore
from tests.integration.support import FlakyStore

pytestmark = pytest.mark.integration


def make_local(request: pytest.FixtureRequest) -> Store:
    return LocalStore("local-test", request.getfixturevalue("tmp_path") / "store", prefix="fleet")


def s3_config(bucket, **extra) -> S3StoreConfig:
    config = S3StoreConfig(type="s3", bucket=bucket.name, region=bucket.region, prefix="fleet",
                           endpoint_url=bucket.endpoint_url, addressing_style="path", **extra)
    config._access_key, config._secret_key = Secret(bucket.access_key), Secret(bucket.secret_key)
    return config


def make_s3_moto(request: pytest.FixtureRequest) -> Store:
    return S3Store("s3-moto", s3_config(request.getfixturevalue("s3_bucket_moto")))


def make_s3_swift(request: pytest.FixtureRequest) -> Store:
    bucket = request.getfixturevalue("s3_bucket_swift")
    return S3Store("s3-swift", s3_config(bucket, checksum_mode="when_required", atomic_create=False))


def make_swift(request: pytest.FixtureRequest) -> Store:
    server = request.getfixturevalue("swift_server")
    config = SwiftStoreConfig(type="swift", auth_url=server.auth_url, user=server.user, key_env="UNUSED",
                              container=request.getfixturevalue("swift_container"), prefix="fleet")
    config._key = Secret(server.key)
    return SwiftStore("swift", config)


def make_cloudfiles(request: pytest.FixtureRequest) -> Store:
    identity = request.getfixturevalue("rackspace_identity")
    config = CloudFilesStoreConfig(type="cloudfiles", region=identity.region, auth_url=identity.auth_url,
                                   container=request.getfixturevalue("swift_container"))
    config._username, config._api_key = identity.username, Secret(identity.api_key)
    return SwiftStore("cloudfiles", config)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Store]] = {
    "local": make_local, "s3-moto": make_s3_moto, "s3-swift-s3api": make_s3_swift,
    "swift": make_swift, "cloudfiles": make_cloudfiles,
}


def retrying(backend: Callable[[pytest.FixtureRequest], Store]) -> Callable[[pytest.FixtureRequest], Store]:
    """The backend as backupd opens it: inside the retry wrapper (``backupd.stores.open_store``)."""
    return lambda request: RetryingStore(backend(request), budget=30)


def flaky(backend: Callable[[pytest.FixtureRequest], Store]) -> Callable[[pytest.FixtureRequest], Store]:
    """The backend behind a network that fails every other call (``FlakyStore``), inside the
    retry wrapper: every test of the suite must still see the same results. Fails the test if no
    fault was injected (then the case would prove nothing)."""
    def make(request: pytest.FixtureRequest) -> Store:
        faulty = FlakyStore(backend(request))
        request.addfinalizer(lambda: _faults_were_injected(faulty))
        return RetryingStore(faulty, budget=30, sleep=lambda _: None)
    return make


def _faults_were_injected(store: FlakyStore) -> None:
    assert store.injected > 0, "the flaky store injected no fault"


# Every backend alone, inside the retry wrapper, and (three of them) behind a flaky network.
STORE_FACTORIES: dict[str, Callable[[pytest.FixtureRequest], Store]] = {
    **BACKENDS,
    **{f"{name}+retry": retrying(make) for name, make in BACKENDS.items()},
    **{f"{name}+flaky+retry": flaky(BACKENDS[name]) for name in ("local", "s3-moto", "swift")},
}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store(request) -> Store:
    return STORE_FACTORIES[request.param](request)


def test_put_get_roundtrip(store):
    store.put("7/a/part-000001.zst", Payload([b"hello ", b"world"]))
    assert store.get("7/a/part-000001.zst") == b"hello world"
    with store.open("7/a/part-000001.zst") as stream:
        assert stream.read(5) == b"hello"
        assert stream.read() == b" world"


def test_stat(store):
    store.put("k/one", Payload.from_bytes(b"x" * 1234))
    info = store.stat("k/one")
    assert info.key == "k/one" and info.size == 1234


def test_empty_object(store):
    store.put("k/empty", Payload([]))
    assert store.get("k/empty") == b""
    assert store.stat("k/empty").size == 0


def test_overwrite_replaces_whole_object(store):
    store.put("k/obj", Payload.from_bytes(b"first version, longer"))
    store.put("k/obj", Payload.from_bytes(b"second"))
    assert store.get("k/obj") == b"second"
    assert [i.key for i in store.list("k/")] == ["k/obj"]


def test_missing_objects_raise_not_found(store):
    for call in (lambda: store.get("no/such"), lambda: store.open("no/such"),
                 lambda: store.stat("no/such")):
        with pytest.raises(ObjectNotFound) as info:
            call()
        assert info.value.store == store.name and info.value.key == "no/such"


def test_delete_is_idempotent(store):
    store.put("d/x", Payload.from_bytes(b"1"))
    store.delete("d/x")
    store.delete("d/x")
    with pytest.raises(ObjectNotFound):
        store.stat("d/x")
    assert list(store.list("d/")) == []


def test_list_prefix_sorted_and_exact(store):
    for key in ["7/b/2", "7/a/1", "7/a/10", "70/a/1", "8/a/1"]:
        store.put(key, Payload.from_bytes(key.encode()))
    assert [i.key for i in store.list("7/")] == ["7/a/1", "7/a/10", "7/b/2"]
    assert [i.key for i in store.list("7/a/1")] == ["7/a/1", "7/a/10"]
    assert [i.key for i in store.list("7")] == ["7/a/1", "7/a/10", "7/b/2", "70/a/1"]
    assert list(store.list("nothing-here/")) == []
    assert len(list(store.list(""))) == 5
    sizes = {i.key: i.size for i in store.list("")}
    assert sizes["70/a/1"] == len(b"70/a/1")


@pytest.fixture(params=sorted(name for name in STORE_FACTORIES if not name.endswith("+retry") or "flaky" in name))
def paging_store(request) -> Store:
    """The stores whose listing pages differ: each backend, and under a flaky retry (a page that
    fails and is asked again); a plain retry wrapper passes listings through unchanged."""
    return STORE_FACTORIES[request.param](request)


def test_list_past_one_thousand_keys(paging_store):
    store = paging_store
    keys = [f"many/{i:05d}" for i in range(1100)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: store.put(k, Payload.from_bytes(b"")), keys))
    assert [i.key for i in store.list("many/")] == keys


def test_concurrent_puts_of_distinct_and_same_keys(store):
    # A server may answer a racing writer with a transient error (moto: 500 on one key written by
    # many at once), as the contract allows; writers retry it, as backupd's always do. (botocore
    # used to retry it unseen, before its own retries were really turned off.)
    writer = store if isinstance(store, RetryingStore) else RetryingStore(store, budget=30, base_delay=0.05)
    blobs = {f"c/{i}": hashlib.sha256(str(i).encode()).digest() * 1000 for i in range(16)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: writer.put(kv[0], Payload.from_bytes(kv[1])), blobs.items()))
        # the same key from many writers: the result is one of the writes, whole
        same = [bytes([i]) * 50_000 for i in range(8)]
        list(pool.map(lambda b: writer.put("c/same", Payload.from_bytes(b)), same))
    for key, blob in blobs.items():
        assert store.get(key) == blob
    assert store.get("c/same") in same


def test_put_if_absent_creates_once(store):
    assert store.put_if_absent("lock/1", Payload.from_bytes(b"first")) is True
    assert store.put_if_absent("lock/1", Payload.from_bytes(b"second")) is False
    assert store.get("lock/1") == b"first"
    store.delete("lock/1")
    assert store.put_if_absent("lock/1", Payload.from_bytes(b"third")) is True
    assert store.get("lock/1") == b"third"


def test_put_if_absent_has_exactly_one_winner_among_racers(store):
    if not store.properties.atomic_create:
        # Swift checks If-None-Match before it writes: racing creators may all win, which is
        # why the store says so (backupd.backup.lease warns when such a store holds locks). One late
        # creator still loses:
        assert store.put_if_absent("lock/race", Payload.from_bytes(b"early")) is True
        assert store.put_if_absent("lock/race", Payload.from_bytes(b"late")) is False
        return
    contenders = [f"writer-{i}".encode() for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda b: store.put_if_absent("lock/race", Payload.from_bytes(b)), contenders))
    assert results.count(True) == 1
    assert store.get("lock/race") == contenders[results.index(True)]


def test_invalid_keys_are_refused(store):
    for key in ["", "/abs", "a/../b", "a//b"]:
        with pytest.raises(PermanentStoreError):
            store.put(key, Payload.from_bytes(b"x"))


def test_payload_is_streamed_from_chunks(store):
    chunks = [bytes([i]) * 100_000 for i in range(10)]
    store.put("big/obj", Payload(chunks))
    assert store.get("big/obj") == b"".join(chunks)
    assert io.BytesIO(store.get("big/obj")).getbuffer().nbytes == 1_000_000


def test_local_put_is_atomic_on_failure(tmp_path):
    store = LocalStore("local", tmp_path / "s")

    class Exploding(Payload):
        def __iter__(self):
            yield b"partial"
            raise OSError(28, "No space left on device")

    with pytest.raises(PermanentStoreError, match="No space left"):
        store.put("x/y", Exploding([b"partial"]))
    with pytest.raises(ObjectNotFound):
        store.stat("x/y")
    assert not any(p.is_file() for p in (tmp_path / "s").rglob("*"))
