"""Real stores behind a loopback proxy that fails like a dead region: refused, hanging, stalling,
or answering 503. Unreachable is told from flaky, in seconds; every attempt is our own.

Each test states its time bound (generous for a busy CI machine; the short timeouts configured
here are what the bounds follow) and leaves nothing behind but the test's own bucket/container."""

from __future__ import annotations

import time

import pytest

from backupd.config import S3StoreConfig, SwiftStoreConfig
from backupd.errors import StoreUnreachable, TransientStoreError
from backupd.secrets import Secret
from backupd.stores import open_store
from backupd.stores.base import Payload
from backupd.stores.health import HealthGuardedStore
from backupd.stores.retry import RetryingStore
from backupd.stores.s3 import S3Store
from backupd.stores.swift import SwiftStore
from tests.servers.faulty_proxy import FaultyProxy

pytestmark = [pytest.mark.integration, pytest.mark.serial]  # bounds on how long commands take: run alone

TIMEOUTS = {"connect_timeout": 1.0, "answer_timeout": 1.0, "read_timeout": 2.0}


def s3_via(proxy: FaultyProxy, bucket, **extra) -> S3StoreConfig:
    config = S3StoreConfig(type="s3", bucket=bucket.name, region=bucket.region, endpoint_url=proxy.url,
                           addressing_style="path", **{**TIMEOUTS, **extra})
    config._access_key, config._secret_key = Secret(bucket.access_key), Secret(bucket.secret_key)
    return config


@pytest.fixture
def proxy(moto_server):
    with FaultyProxy(moto_server.port) as p:
        yield p


def test_one_request_per_attempt_and_every_attempt_counted(proxy, s3_bucket_moto):
    """boto3's own retries are really off: a 503 is one request, and the wrapper's retries are
    all the retries there are. ~2 s."""
    proxy.mode = "error"
    backend = S3Store("cloud", s3_via(proxy, s3_bucket_moto))
    with pytest.raises(TransientStoreError, match="503"):
        backend.stat("k")
    assert proxy.requests == 1
    retrying = RetryingStore(S3Store("cloud", s3_via(proxy, s3_bucket_moto)), budget=1.5, base_delay=0.05,
                             max_delay=0.2)
    with pytest.raises(TransientStoreError):
        retrying.get("k")
    assert retrying.stats.retries >= 2
    assert proxy.requests - 1 == retrying.stats.retries + 1  # one request per attempt, none unseen


@pytest.mark.parametrize("mode, bound", [("refuse", 3.0), ("hang", 5.0)])
def test_a_store_that_does_not_answer_is_unreachable_in_seconds(proxy, s3_bucket_moto, mode, bound):
    proxy.mode = mode
    store = S3Store("cloud", s3_via(proxy, s3_bucket_moto))
    for operation in (lambda: list(store.list("1/")), lambda: store.stat("1/x"),
                      lambda: store.put("1/manifest.json", Payload.from_bytes(b"{}"))):
        started = time.monotonic()
        with pytest.raises(StoreUnreachable, match="store cloud: cannot"):
            operation()
        assert time.monotonic() - started < bound


def test_a_download_that_stalls_mid_transfer_is_unreachable_after_the_read_timeout(proxy, s3_bucket_moto):
    s3_bucket_moto.client.put_object(Bucket=s3_bucket_moto.name, Key="1/part", Body=b"x" * (2 * 1024 * 1024))
    proxy.mode = "stall"
    store = S3Store("cloud", s3_via(proxy, s3_bucket_moto))
    assert [i.key for i in store.list("1/")] == ["1/part"]  # small answers still get through
    started = time.monotonic()
    with pytest.raises(StoreUnreachable):
        store.get("1/part")
    assert 1.5 < time.monotonic() - started < 8  # read_timeout (2 s), not the retry budget


def test_the_breaker_fails_fast_then_probes_the_store_back(proxy, s3_bucket_moto):
    """One timeout, then instant failures while down, then back in a few seconds. ~5 s."""
    proxy.mode = "hang"
    store = open_store("cloud", s3_via(proxy, s3_bucket_moto, retry_budget=30.0))
    assert isinstance(store, HealthGuardedStore)
    with pytest.raises(StoreUnreachable):
        store.stat("k")
    started = time.monotonic()
    for _ in range(20):
        with pytest.raises(StoreUnreachable, match="store cloud is unreachable"):
            list(store.list("1/"))
    assert time.monotonic() - started < 1.0
    proxy.mode = "pass"
    deadline = time.monotonic() + 10
    while store.health.is_down and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not store.health.is_down
    store.put("1/back", Payload.from_bytes(b"ok"))
    assert store.get("1/back") == b"ok"


def test_swift_names_the_real_error_of_a_failed_listing(swift_server, swift_container):
    """A listing of ``1/`` through a refusing proxy says what happened, not "invalid object key"."""
    with FaultyProxy(int(swift_server.proxy_url.rsplit(":", 1)[1]), mode="refuse") as proxy:
        config = SwiftStoreConfig(type="swift", auth_url=swift_server.auth_url, user=swift_server.user,
                                  key_env="UNUSED", container=swift_container,
                                  storage_url=f"{proxy.url}/v1/{swift_server.account}", connect_timeout=1.0,
                                  answer_timeout=1.0, timeout=2.0)
        config._key = Secret(swift_server.key)
        store = SwiftStore("swift", config)
        with pytest.raises(StoreUnreachable) as error:
            list(store.list("1/"))
        assert "invalid object key" not in error.value.message
        assert f"{swift_container}/1/" in error.value.message and "onnection" in error.value.message
