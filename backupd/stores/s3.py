"""A store on Amazon S3 or any S3-compatible server, through boto3.

Every part is one ``PutObject`` of at most ``part_size`` (no multipart upload state that could
leak). boto3's own retries are off (``total_max_attempts = 1``: botocore's ``max_attempts`` counts
retries after the first attempt, so ``1`` there still sent two requests): the retry wrapper
(``backupd.stores.retry``) retries transient errors with a time budget, so every attempt is
visible, counted, and rewinds the payload.

Timeouts: ``connect_timeout`` (short: a dead endpoint is known in seconds); ``answer_timeout`` for
small requests (list, stat, delete, conditional creates), after which a server that accepted the
connection but says nothing is unreachable; ``read_timeout`` for transfers (the longest a part's
upload or download may go without moving a byte). A store that does not answer raises
``StoreUnreachable`` (the circuit breaker's business, ``backupd.stores.health``); one that
answers badly or breaks off mid-transfer raises ``TransientStoreError`` (retried).
``checksum_mode = "when_required"`` is for S3-compatible servers that reject boto3's newer
default checksums; a Content-MD5 header is then sent instead so the server still checks the
bytes it received.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from backupd.config import S3StoreConfig
from backupd.errors import ObjectNotFound, PermanentStoreError, StoreError, StoreUnreachable, TransientStoreError
from backupd.stores.base import ObjectInfo, ObjectStream, Payload, Store, StoreProperties

SMALL_OBJECT = 1024 * 1024  # manifests, annotations, leases: written with the answer timeout
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                    "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "503", "500",
                    "RequestLimitExceeded", "TooManyRequests", "429"}
# No answer at all: refused, DNS, connect timeout, nothing within the timeout.
_UNREACHABLE_EXCEPTIONS = (
    botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
)
# An answer that broke off, or a connection dropped mid-request: worth a retry.
_TRANSIENT_EXCEPTIONS = (
    botocore.exceptions.ConnectionClosedError, botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError, botocore.exceptions.ConnectionError,
)


class S3Store(Store):
    def __init__(self, name: str, config: S3StoreConfig):
        self.name = name
        self.config = config
        self.bucket = config.bucket
        self.prefix = config.prefix.strip("/")
        self.properties = StoreProperties(connections=config.connections, max_object_size=5 * 1024**3,
                                          atomic_create=config.atomic_create,
                                          etag_is_md5=config.server_side_encryption != "aws:kms",
                                          head_sha256=config.checksum_mode == "when_supported")
        keys: dict[str, Any] = {}
        if config.credentials:
            access, secret = config.credentials
            keys = {"aws_access_key_id": access.reveal(), "aws_secret_access_key": secret.reveal()}
        session = boto3.session.Session()

        def client(read_timeout: float) -> Any:
            return session.client("s3", endpoint_url=config.endpoint_url, config=botocore.config.Config(
                region_name=config.region, signature_version="s3v4",
                s3={"addressing_style": config.addressing_style},
                connect_timeout=config.connect_timeout, read_timeout=read_timeout,
                retries={"total_max_attempts": 1, "mode": "standard"},
                max_pool_connections=max(10, config.connections * 2),
                request_checksum_calculation=config.checksum_mode,
                response_checksum_validation=config.checksum_mode), **keys)

        self.client = client(config.read_timeout)  # transfers: parts up and down
        self.small = client(min(config.answer_timeout, config.read_timeout))  # everything else
        self._extra: dict[str, str] = {}
        if config.server_side_encryption:
            self._extra["ServerSideEncryption"] = config.server_side_encryption
            if config.sse_kms_key_id:
                self._extra["SSEKMSKeyId"] = config.sse_kms_key_id

    def describe(self) -> str:
        where = self.config.endpoint_url or f"AWS {self.config.region}"
        return f"{self.name} (s3://{self.bucket}/{self.prefix} at {where})"

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or "//" in key or any(p in (".", "..") for p in key.split("/")):
            raise PermanentStoreError(f"store {self.name}: invalid object key {key!r}", store=self.name, key=key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, exc: Exception, action: str, key: str | None) -> StoreError:
        where = f"s3://{self.bucket}/{self._key(key) if key else self.prefix}"
        if isinstance(exc, botocore.exceptions.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            message = exc.response.get("Error", {}).get("Message", "") or code
            text = f"store {self.name}: cannot {action} {where}: {code or status} {message}".rstrip()
            if code in _NOT_FOUND or (status == 404 and code != "NoSuchBucket"):
                return ObjectNotFound(f"store {self.name}: object {key} not found", store=self.name, key=key)
            if code in _TRANSIENT_CODES or status >= 500 or status == 429 or status == 409:
                return TransientStoreError(text, store=self.name, key=key)  # 409: racing conditional writes
            error = PermanentStoreError(text, store=self.name, key=key)
            error.status = status
            return error
        text = f"store {self.name}: cannot {action} {where}: {exc}"
        if isinstance(exc, _UNREACHABLE_EXCEPTIONS):
            return StoreUnreachable(text, store=self.name, key=key)
        if isinstance(exc, _TRANSIENT_EXCEPTIONS):
            return TransientStoreError(text, store=self.name, key=key)
        return PermanentStoreError(text, store=self.name, key=key)

    def put(self, key: str, payload: Payload) -> None:
        self._put(key, payload)

    def put_if_absent(self, key: str, payload: Payload) -> bool:
        """A conditional PutObject (``If-None-Match: *``); the server answers 412 if the key exists."""
        try:
            self._put(key, payload, IfNoneMatch="*")
        except PermanentStoreError as exc:
            if exc.status == 412:
                return False
            raise
        return True

    def _put(self, key: str, payload: Payload, **conditions: str) -> None:
        extra = dict(self._extra, **conditions)
        if self.config.checksum_mode == "when_required":  # a server without flexible checksums
            extra["ContentMD5"] = base64.b64encode(bytes.fromhex(payload.md5())).decode()
        else:  # the provider checks it on receipt and keeps it (HEAD with ChecksumMode reports it)
            extra["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(payload.sha256())).decode()
        body = payload.reader()
        try:
            client = self.small if payload.size <= SMALL_OBJECT else self.client
            client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body,
                                   ContentLength=payload.size, **extra)
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc, "write", key) from None
        finally:
            body.close()

    def open(self, key: str) -> ObjectStream:
        return self._open(key)

    def _open(self, key: str) -> _Body:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc, "read", key) from None
        return _Body(self, key, response["Body"], int(response["ContentLength"]))

    def get(self, key: str) -> bytes:
        with self._open(key) as stream:
            return self._read_whole(stream, stream.length, key)

    def stat(self, key: str) -> ObjectInfo:
        try:
            head = self.small.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc, "stat", key) from None
        checksum = head.get("ChecksumSHA256")
        return ObjectInfo(key, int(head["ContentLength"]), str(head.get("ETag", "")).strip('"') or None,
                          base64.b64decode(checksum).hex() if checksum else None)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.small.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                for item in page.get("Contents", []):
                    etag = str(item.get("ETag", "")).strip('"') or None
                    yield ObjectInfo(item["Key"][strip:], int(item["Size"]), etag)
        except Exception as exc:
            raise self._error(exc, "list", prefix) from None

    def delete(self, key: str) -> None:
        try:
            self.small.delete_object(Bucket=self.bucket, Key=self._key(key))
        except StoreError:
            raise
        except Exception as exc:
            error = self._error(exc, "delete", key)
            if not isinstance(error, ObjectNotFound):
                raise error from None


class _Body:
    """A StreamingBody whose read errors become store errors (and that is a context manager)."""

    def __init__(self, store: S3Store, key: str, body: Any, length: int):
        self._store, self._key, self._body = store, key, body
        self.length = length

    def read(self, size: int = -1, /) -> bytes:
        try:
            data: bytes = self._body.read(None if size is None or size < 0 else size)
            return data
        except Exception as exc:
            raise self._store._error(exc, "read", self._key) from None

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
