"""A store on OpenStack Swift or Rackspace Cloud Files, through apache-libcloud.

libcloud's drivers carry defects that this module works around, so the rest of backupd sees a
clean Store (each has a test in ``tests/integration/stores/test_swift_quirks.py``):

* ``upload_object_via_stream`` hashes the stream *after* sending it and raises
  ``ObjectHashMismatchError`` for objects it stored fine (LIBCLOUD-935). We PUT through the
  driver's connection ourselves, with ``Content-Length`` and an ``ETag`` (MD5) header, so Swift
  checks the body server-side (422 if it differs; nothing is stored then).
* ``download_object_as_stream`` reads the whole object into memory and does not URL-encode the
  name. We GET through the base connection with ``stream=True`` and read the body in chunks.
* Raw (upload/download) requests get no timeout: our connection class passes the driver's
  ``timeout`` to every request. Each thread has two drivers: one for transfers (``connect_timeout``,
  then ``timeout`` between bytes) and one for small requests (``answer_timeout``), so a server that
  accepts connections and never answers is known in seconds (``StoreUnreachable``).
* With tempauth (auth 1.0) the driver logs in again before every request and cannot find the
  storage URL in the v1 catalog: we authenticate once, then build drivers with the token and
  the storage URL (re-authenticating on a 401).
* A PUT that loses a same-key race to a newer one is answered 202, not 201 (it is superseded,
  as with any overwrite).
* ``create_container`` raises on an existing container; a missing container lists as a plain
  ``LibcloudError``; raw requests never raise on an HTTP status: every status is classified
  here into ObjectNotFound, transient (408, 429, 499, 5xx, connection errors) or permanent.
* A driver keeps per-request state, so each thread gets its own driver.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import requests
import urllib3.exceptions
from libcloud.common.base import Connection
from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError, LibcloudError, MalformedResponseError
from libcloud.http import LibcloudConnection
from libcloud.storage.base import Container
from libcloud.storage.drivers.cloudfiles import (
    CloudFilesConnection,
    CloudFilesStorageDriver,
    OpenStackSwiftConnection,
    OpenStackSwiftStorageDriver,
)
from libcloud.storage.types import ContainerDoesNotExistError, ObjectDoesNotExistError

from backupd.config import CloudFilesStoreConfig, SwiftStoreConfig
from backupd.errors import ObjectNotFound, PermanentStoreError, StoreError, StoreUnreachable, TransientStoreError
from backupd.stores.base import ObjectInfo, ObjectStream, Payload, Store, StoreProperties

T = TypeVar("T")
READ_CHUNK = 1024 * 1024
SMALL_OBJECT = 1024 * 1024  # manifests, annotations, leases: written with the answer timeout
_TRANSIENT_STATUS = {408, 425, 429, 499}
# No answer at all: refused, DNS, connect timeout, nothing within the timeout (also while a
# body streams: urllib3's own ReadTimeoutError), a connection closed before any answer.
_UNREACHABLE_EXCEPTIONS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                           urllib3.exceptions.TimeoutError, ConnectionRefusedError, TimeoutError)
# An answer that broke off mid-transfer: worth a retry.
_TRANSIENT_EXCEPTIONS = (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError,
                         ConnectionError)


class _TimeoutHTTP(LibcloudConnection):
    """libcloud's HTTP connection, but raw requests honour the timeout too."""

    def prepared_request(self, method: str, url: str, body: Any = None, headers: Any = None,
                         raw: bool = False, stream: bool = False) -> None:
        headers = self._normalize_headers(headers=headers)
        session, host = self.session, self.host
        assert session is not None and host is not None  # set up by the connection's constructor
        prepared = session.prepare_request(requests.Request(method, host + url, data=body, headers=headers))
        self.response = session.send(prepared, stream=stream, timeout=getattr(session, "timeout", None),
                                     verify=self.ca_cert if self.ca_cert is not None else self.verify)


class _SwiftConnection(OpenStackSwiftConnection):
    conn_class = _TimeoutHTTP


class _CloudFilesConnection(CloudFilesConnection):
    conn_class = _TimeoutHTTP


class _SwiftDriver(OpenStackSwiftStorageDriver):
    connectionCls = _SwiftConnection


class _CloudFilesDriver(CloudFilesStorageDriver):
    connectionCls = _CloudFilesConnection


class _SizedBody:
    """A request body of known length (requests sends Content-Length, not chunked)."""

    def __init__(self, payload: Payload):
        self.payload: Payload | None = payload

    def __len__(self) -> int:
        return self.payload.size if self.payload is not None else 0

    def __iter__(self) -> Iterator[memoryview]:
        assert self.payload is not None
        for chunk in self.payload:
            view = memoryview(chunk)
            for offset in range(0, len(view), READ_CHUNK):
                yield view[offset:offset + READ_CHUNK]

    def release(self) -> None:
        """Drop the part's bytes (libcloud keeps the last request, and so this body, alive)."""
        self.payload = None


class SwiftStore(Store):
    def __init__(self, name: str, config: SwiftStoreConfig | CloudFilesStoreConfig):
        self.name = name
        self.config = config
        self.container = config.container
        self.prefix = config.prefix.strip("/")
        self.properties = StoreProperties(connections=config.connections, max_object_size=5 * 1024**3,
                                          atomic_create=False, etag_is_md5=True)
        self._local = threading.local()
        self._auth_lock = threading.Lock()
        self._token: tuple[str, str] | None = None  # (token, storage url) for tempauth
        self._generation = 0

    def describe(self) -> str:
        kind = "cloudfiles " + self.config.region if isinstance(self.config, CloudFilesStoreConfig) \
            else f"swift {self.config.auth_url}"
        return f"{self.name} ({kind}, container {self.container})"

    # ------------------------------------------------------------------ drivers and auth
    def _driver(self, transfer: bool = False) -> Any:
        """This thread's driver for transfers (the read timeout) or for small requests (the answer
        timeout); drivers are rebuilt after a new login."""
        if getattr(self._local, "generation", -1) != self._generation:
            self._local.drivers = {}
            self._local.generation = self._generation
        driver = self._local.drivers.get(transfer)
        if driver is None:
            read = self.config.timeout if transfer else min(self.config.answer_timeout, self.config.timeout)
            driver = self._local.drivers[transfer] = self._new_driver((self.config.connect_timeout, read))
        return driver

    def _new_driver(self, timeout: tuple[float, float]) -> Any:
        """A driver whose requests time out after (connect, read) seconds."""
        config = self.config
        if isinstance(config, CloudFilesStoreConfig):
            user, key = config.credentials
            extra: dict[str, Any] = {}
            if config.auth_url:
                extra["ex_force_auth_url"] = config.auth_url
            return _CloudFilesDriver(user, key.reveal(), region=config.region.lower(),
                                     ex_force_auth_version="2.0", timeout=timeout, **extra)
        options: dict[str, Any] = {"ex_force_auth_url": config.auth_url,
                                   "ex_force_auth_version": config.auth_version, "timeout": timeout}
        if config.region:
            options["ex_force_service_region"] = config.region
        if config.tenant_name:
            options["ex_tenant_name"] = config.tenant_name
        if config.auth_version.startswith("3"):
            options["ex_domain_name"] = config.domain_name
        if config.auth_version == "1.0":
            token, url = self._tempauth(options)
            options.update(ex_force_auth_token=token, ex_force_base_url=url)
        elif config.storage_url:
            options["ex_force_base_url"] = config.storage_url
        return _SwiftDriver(config.user, config.key.reveal(), **options)

    def _tempauth(self, options: dict[str, Any]) -> tuple[str, str]:
        """Log in once (auth 1.0) and share the token between threads."""
        with self._auth_lock:
            if self._token is None:
                assert isinstance(self.config, SwiftStoreConfig)
                probe = _SwiftDriver(self.config.user, self.config.key.reveal(),
                                     ex_force_base_url=self.config.storage_url or "http://unused", **options)
                connection: Any = probe.connection  # an OpenStack connection (typed as libcloud's base)
                auth = connection.get_auth_class()
                try:
                    auth.authenticate()
                except Exception as exc:
                    raise self._error(exc, "authenticate at", None) from None
                url = self.config.storage_url or auth.urls["cloudFiles"][0]["publicURL"]
                self._token = (auth.auth_token, url)
            return self._token

    def _reauthenticate(self) -> None:
        with self._auth_lock:
            self._token = None
            self._generation += 1

    # ------------------------------------------------------------------ helpers
    def _key(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise PermanentStoreError(f"store {self.name}: invalid object key {key!r}", store=self.name, key=key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _path(self, driver: Any, key: str) -> str:
        return f"/{driver._encode_container_name(self.container)}/{driver._encode_object_name(self._key(key))}"

    def _where(self, key: str | None) -> str:
        """Where an error happened, for messages: never validates (a listing's prefix such as
        ``1/`` is not an object key, and must not mask the real error)."""
        return "/".join(p for p in (self.container, self.prefix, key) if p)

    def _status_error(self, status: int, action: str, key: str | None, detail: str = "") -> StoreError:
        text = f"store {self.name}: cannot {action} {self._where(key)}: HTTP {status} {detail}".rstrip()
        if status == 404 and key is not None and action in ("read", "stat"):
            return ObjectNotFound(f"store {self.name}: object {key} not found", store=self.name, key=key)
        if status == 404:
            return PermanentStoreError(f"store {self.name}: container {self.container} does not exist "
                                       f"(while trying to {action} {self._where(key)})", store=self.name, key=key)
        if status in _TRANSIENT_STATUS or status >= 500 or status == 422:  # 422: body damaged in flight
            return TransientStoreError(text, store=self.name, key=key)
        return PermanentStoreError(text, store=self.name, key=key)

    def _error(self, exc: Exception, action: str, key: str | None) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, ObjectDoesNotExistError) and key is not None:
            return ObjectNotFound(f"store {self.name}: object {key} not found", store=self.name, key=key)
        if isinstance(exc, ContainerDoesNotExistError):
            return self._status_error(404, action, None)
        if isinstance(exc, BaseHTTPError):
            return self._status_error(int(exc.code), action, key, str(exc.message))
        text = f"store {self.name}: cannot {action} {self._where(key)}: {type(exc).__name__}: {exc}"
        if isinstance(exc, _UNREACHABLE_EXCEPTIONS):
            return StoreUnreachable(text, store=self.name, key=key)
        if isinstance(exc, _TRANSIENT_EXCEPTIONS):
            return TransientStoreError(text, store=self.name, key=key)
        if isinstance(exc, (InvalidCredsError, MalformedResponseError)):
            return PermanentStoreError(text, store=self.name, key=key)
        status = re.search(r"Unexpected status code: (\d+)", str(exc))
        if isinstance(exc, LibcloudError) and status:
            return self._status_error(int(status.group(1)), action, key)
        return PermanentStoreError(text, store=self.name, key=key)

    def _run(self, action: str, key: str | None, operation: Callable[[Any], T], *, transfer: bool = False) -> T:
        """Run ``operation(driver)``; on a 401 log in again once; translate every error."""
        for attempt in (1, 2):
            try:
                return operation(self._driver(transfer))
            except StoreError as exc:
                if attempt == 1 and "HTTP 401" in str(exc):
                    self._reauthenticate()
                    continue
                raise
            except BaseHTTPError as exc:
                if attempt == 1 and int(exc.code) == 401:
                    self._reauthenticate()
                    continue
                raise self._error(exc, action, key) from None
            except Exception as exc:
                raise self._error(exc, action, key) from None
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ the Store contract
    def put(self, key: str, payload: Payload) -> None:
        self._put(key, payload, {})

    def put_if_absent(self, key: str, payload: Payload) -> bool:
        """A PUT with ``If-None-Match: *``: Swift answers 412 if the object exists."""
        return self._put(key, payload, {"If-None-Match": "*"})

    def _put(self, key: str, payload: Payload, conditions: dict[str, str]) -> bool:
        md5 = payload.md5()

        def operation(driver: Any) -> bool:
            body = _SizedBody(payload)
            try:
                response = driver.connection.request(
                    self._path(driver, key), method="PUT", data=body, raw=True,
                    headers={"Content-Type": "application/octet-stream", "ETag": md5,
                             **conditions})
                status = response.status
            finally:
                body.release()
            if status == 412 and conditions:
                return False
            if status == 202:
                # The proxy answers 202 instead of 201 when a concurrent PUT of the same key
                # carries a newer timestamp: that one wins (last writer wins), the key holds a
                # whole object. A plain put is done; a create did not create.
                return not conditions
            if status != 201:
                raise self._status_error(status, "write", key)
            return True

        return self._run("write", key, operation, transfer=not conditions and payload.size > SMALL_OBJECT)

    def open(self, key: str) -> ObjectStream:
        return self._open(key)

    def _open(self, key: str) -> _Body:
        def operation(driver: Any) -> _Body:
            Connection.request(driver.connection, self._path(driver, key), method="GET", raw=True, stream=True)
            response: requests.Response = driver.connection.connection.response
            if response.status_code != 200:
                response.close()
                raise self._status_error(response.status_code, "read", key)
            length = int(response.headers.get("Content-Length", -1))
            return _Body(self, key, response, length)

        return self._run("read", key, operation, transfer=True)

    def get(self, key: str) -> bytes:
        with self._open(key) as stream:
            length = stream.length
            if length < 0:
                return stream.read()
            return self._read_whole(stream, length, key)

    def stat(self, key: str) -> ObjectInfo:
        def operation(driver: Any) -> ObjectInfo:
            response = driver.connection.request(self._path(driver, key), method="HEAD")
            if response.status not in (200, 204):
                raise self._status_error(response.status, "stat", key)
            headers = {k.lower(): v for k, v in response.headers.items()}
            return ObjectInfo(key, int(headers["content-length"]), headers.get("etag", "").strip('"') or None)

        return self._run("stat", key, operation)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0

        def operation(driver: Any) -> list[ObjectInfo]:
            container = Container(name=self.container, extra={}, driver=driver)
            return [ObjectInfo(obj.name[strip:], int(obj.size), (obj.hash or "").strip('"') or None)
                    for obj in driver.iterate_container_objects(container, prefix=full or None)]

        yield from self._run("list", prefix or None, operation)

    def delete(self, key: str) -> None:
        def operation(driver: Any) -> None:
            response = driver.connection.request(self._path(driver, key), method="DELETE")
            if response.status not in (200, 204, 404):
                raise self._status_error(response.status, "delete", key)

        self._run("delete", key, operation)


class _Body:
    """A streamed object body: chunked reads, errors translated, length checked at the end."""

    def __init__(self, store: SwiftStore, key: str, response: requests.Response, length: int):
        self._store, self._key, self._response, self.length = store, key, response, length
        self._raw = response.raw
        self._seen = 0

    def read(self, size: int = -1) -> bytes:
        try:
            if size is None or size < 0:
                pieces = []
                while chunk := self._raw.read(READ_CHUNK, decode_content=False):
                    pieces.append(chunk)
                data = b"".join(pieces)
            else:
                data = self._raw.read(size, decode_content=False)
        except Exception as exc:
            raise self._store._error(exc, "read", self._key) from None
        self._seen += len(data)
        if (not data or size is None or size < 0) and 0 <= self.length != self._seen:
            raise TransientStoreError(f"store {self._store.name}: object {self._key} ended after "
                                      f"{self._seen} of {self.length} bytes", store=self._store.name, key=self._key)
        return data

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
