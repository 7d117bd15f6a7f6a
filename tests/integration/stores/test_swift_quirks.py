"""Each libcloud defect the swift store works around, shown on a real Swift on loopback."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import tracemalloc

import pytest
from libcloud.storage.providers import Provider, get_driver
from libcloud.storage.types import ObjectHashMismatchError

from backupd.config import SwiftStoreConfig
from backupd.errors import PermanentStoreError, StoreUnreachable, TransientStoreError
from backupd.secrets import Secret
from backupd.stores.base import Payload
from backupd.stores.swift import SwiftStore

pytestmark = [pytest.mark.integration, pytest.mark.serial]  # bounds on how long commands take: run alone
MIB = 1024 * 1024


def swift_store(server, container, **overrides) -> SwiftStore:
    config = SwiftStoreConfig(type="swift", auth_url=server.auth_url, user=server.user, key_env="UNUSED",
                              container=container, **overrides)
    config._key = Secret(server.key)
    return SwiftStore("swift", config)


def plain_driver(server):
    return get_driver(Provider.OPENSTACK_SWIFT)(server.user, server.key, ex_force_auth_url=server.auth_url,
                                                ex_force_auth_version="1.0", ex_force_base_url=server.storage_url)


def test_streamed_upload_does_not_hit_libcloud_935(swift_server, swift_container):
    driver = plain_driver(swift_server)
    container = driver.get_container(swift_container)
    with pytest.raises(ObjectHashMismatchError):  # the defect, still there in this libcloud
        driver.upload_object_via_stream(iter([b"a" * 1000, b"b" * 1000]), container, "plain")
    store = swift_store(swift_server, swift_container)
    data = os.urandom(3 * MIB)
    store.put("7/x/part-000001.zst", Payload([data[:MIB], data[MIB:]]))
    info = store.stat("7/x/part-000001.zst")
    assert info.size == len(data) and info.etag == hashlib.md5(data).hexdigest()
    assert store.get("7/x/part-000001.zst") == data


def test_body_changed_in_flight_is_rejected_by_swift(swift_server, swift_container):
    class Shifty(Payload):
        """Yields other bytes the second time it is read (after the MD5 was taken)."""
        reads = 0

        def __iter__(self):
            Shifty.reads += 1
            yield b"x" * 1000 if Shifty.reads == 1 else b"y" * 1000

    store = swift_store(swift_server, swift_container)
    with pytest.raises(TransientStoreError, match="HTTP 422"):
        store.put("k/shifty", Shifty([b"x" * 1000]))
    assert "k/shifty" not in [i.key for i in store.list("k/")]


def test_downloads_really_stream(swift_server, swift_container):
    store = swift_store(swift_server, swift_container)
    size = 48 * MIB
    store.put("big/object", Payload([os.urandom(MIB)] * 48))
    tracemalloc.start()
    try:
        total = 0
        with store.open("big/object") as stream:
            while chunk := stream.read(MIB):
                total += len(chunk)
        _, ours = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        driver = plain_driver(swift_server)
        obj = driver.get_object(swift_container, "big/object")
        theirs_total = sum(len(c) for c in driver.download_object_as_stream(obj, chunk_size=MIB))
        _, theirs = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == theirs_total == size
    assert ours < 8 * MIB            # bounded: a chunk or two
    assert theirs > size             # libcloud's own download holds the whole object


def test_raw_requests_time_out(swift_server, swift_container):
    # A server that accepts connections and never answers.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        store = swift_store(swift_server, swift_container, timeout=1.0,
                            storage_url=f"http://127.0.0.1:{port}/v1/AUTH_test")
        started = time.monotonic()
        with pytest.raises(StoreUnreachable):  # no answer at all: the breaker's business, not a retry's
            store.open("any/object")
        assert time.monotonic() - started < 10
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def test_tempauth_logs_in_once_and_again_after_a_401(swift_server, swift_container):
    store = swift_store(swift_server, swift_container)
    store.put("t/1", Payload.from_bytes(b"1"))
    token = store._token
    for _ in range(5):
        store.stat("t/1")
    assert store._token == token  # no new login per request
    store._token = ("AUTH_tk_not_a_valid_token", token[1])
    store._generation += 1        # drivers rebuilt with the stale token: the server answers 401
    assert store.get("t/1") == b"1"
    assert store._token != ("AUTH_tk_not_a_valid_token", token[1])


def test_missing_container_is_a_permanent_error_naming_it(swift_server):
    store = swift_store(swift_server, "no-such-container-here")
    with pytest.raises(PermanentStoreError, match="container no-such-container-here does not exist"):
        store.put("k/x", Payload.from_bytes(b"x"))
    with pytest.raises(PermanentStoreError, match="no-such-container-here"):
        list(store.list(""))
