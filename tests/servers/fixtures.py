"""pytest fixtures for real object-store servers on loopback (registered in tests/conftest.py
with ``pytest_plugins = ["tests.servers.fixtures"]``).

Session-scoped, started on first use and stopped at the end of the session (one set per
xdist worker):

- ``swift_server``: :class:`~tests.servers.swift.SwiftServer` (Swift API with tempauth
  ``test:tester``/``testing``, S3 through s3api with the same pair);
- ``rackspace_identity``: :class:`~tests.servers.identity.RackspaceIdentity` in front of it
  (for libcloud's ``Provider.CLOUDFILES``);
- ``moto_server``: :class:`~tests.servers.moto.MotoServer`.

Function-scoped, each a fresh uniquely named container/bucket that is emptied and deleted at
teardown (also when the test failed):

- ``swift_container``: the container *name* (str), created through the Swift API; teardown
  deletes it and every container whose name starts with it (``<name>_segments`` etc.);
- ``s3_bucket_moto`` / ``s3_bucket_swift``: an :class:`S3Bucket` (name, endpoint, credentials,
  region and a ready boto3 client). Teardown aborts multipart uploads, deletes every object
  version and delete marker, then the bucket.

The Swift fixtures start the proxy again if a test left it down (``kill_proxy()``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers.identity import RackspaceIdentity
from tests.servers.moto import MotoServer
from tests.servers.swift import SwiftServer

__all__ = [
    "S3Bucket",
    "boto3_config",
    "empty_and_delete_bucket",
    "moto_server",
    "rackspace_identity",
    "s3_bucket_moto",
    "s3_bucket_swift",
    "s3_client",
    "swift_container",
    "swift_server",
    "unique_name",
]


def unique_name(prefix: str = "test") -> str:
    """A fresh lower-case name valid as Swift container and S3 bucket (DNS-compliant)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def boto3_config(region: str = "us-east-1") -> Any:
    """botocore Config that works with Swift's s3api and moto: SigV4, path-style addressing,
    checksums only where the API requires them (boto3 >= 1.36 otherwise sends aws-chunked
    CRC trailers by default, which older S3-compatible servers reject)."""
    from botocore.config import Config

    return Config(signature_version="s3v4", region_name=region,
                  s3={"addressing_style": "path"},
                  request_checksum_calculation="when_required",
                  response_checksum_validation="when_required")


def s3_client(endpoint_url: str, access_key: str, secret_key: str,
              region: str = "us-east-1") -> Any:
    """A boto3 S3 client with explicit credentials (never the environment's)."""
    import boto3

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name=region, config=boto3_config(region))


@dataclass(frozen=True)
class S3Bucket:
    """A bucket on a test S3 server, with everything a store needs to reach it."""

    name: str
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    client: Any  # boto3 S3 client configured with boto3_config()


def empty_and_delete_bucket(client: Any, bucket: str) -> None:
    """Abort multipart uploads, delete all object versions/delete markers/objects, then the
    bucket. No error if the bucket is already gone."""
    from botocore.exceptions import ClientError

    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                              UploadId=upload["UploadId"])
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            keys = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                    for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            _delete_keys(client, bucket, keys)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            _delete_keys(client, bucket, [{"Key": o["Key"]} for o in page.get("Contents", [])])
        client.delete_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
            raise


def _delete_keys(client: Any, bucket: str, keys: list[dict[str, str]]) -> None:
    for start in range(0, len(keys), 1000):
        batch = keys[start:start + 1000]
        result = client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        if result.get("Errors"):
            raise RuntimeError(f"deleting objects in {bucket}: {result['Errors'][:5]}")


# ----------------------------------------------------------------------------- session servers
@pytest.fixture(scope="session")
def swift_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwiftServer]:
    """A running single-node Swift for the whole session (logs under its ``root/log``)."""
    server = SwiftServer(tmp_path_factory.mktemp("swift"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rackspace_identity(swift_server: SwiftServer) -> Iterator[RackspaceIdentity]:
    """Rackspace identity v2.0 handing out ``swift_server`` tokens; see
    :meth:`RackspaceIdentity.libcloud_kwargs` for the CLOUDFILES driver arguments."""
    identity = RackspaceIdentity(swift_server)
    identity.start()
    try:
        yield identity
    finally:
        identity.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(Path(tmp_path_factory.mktemp("moto")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ----------------------------------------------------------------------------- per-test spaces
@pytest.fixture
def swift_container(swift_server: SwiftServer) -> Iterator[str]:
    """Name of a fresh, empty Swift container in account ``AUTH_test``."""
    swift_server.start_proxy()
    name = unique_name()
    swift_server.create_container(name)
    try:
        yield name
    finally:
        swift_server.start_proxy()
        for container in swift_server.list_containers(prefix=name):
            swift_server.delete_container(container)


@pytest.fixture
def s3_bucket_moto(moto_server: MotoServer) -> Iterator[S3Bucket]:
    """A fresh, empty bucket on moto."""
    if not moto_server.running():  # a test killed it
        moto_server.start()
    client = s3_client(moto_server.endpoint_url, moto_server.access_key,
                       moto_server.secret_key, moto_server.region)
    bucket = S3Bucket(unique_name(), moto_server.endpoint_url, moto_server.access_key,
                      moto_server.secret_key, moto_server.region, client)
    client.create_bucket(Bucket=bucket.name)
    try:
        yield bucket
    finally:
        if moto_server.running():
            empty_and_delete_bucket(client, bucket.name)


@pytest.fixture
def s3_bucket_swift(swift_server: SwiftServer) -> Iterator[S3Bucket]:
    """A fresh, empty bucket on Swift's s3api (a Swift container of the same name)."""
    swift_server.start_proxy()
    client = s3_client(swift_server.s3_endpoint, swift_server.s3_access_key,
                       swift_server.s3_secret_key, swift_server.region)
    bucket = S3Bucket(unique_name(), swift_server.s3_endpoint, swift_server.s3_access_key,
                      swift_server.s3_secret_key, swift_server.region, client)
    client.create_bucket(Bucket=bucket.name)
    try:
        yield bucket
    finally:
        swift_server.start_proxy()
        empty_and_delete_bucket(client, bucket.name)
        for container in swift_server.list_containers(prefix=bucket.name):  # e.g. "+segments"
            swift_server.delete_container(container)


# ----------------------------------------------------------------------------- Graphite carbon
from tests.servers.carbon import CarbonServer  # noqa: E402  (appended section)

__all__ += ["carbon_server"]


@pytest.fixture
def carbon_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CarbonServer]:
    """A fresh carbon-cache (:class:`~tests.servers.carbon.CarbonServer`) for this test alone:
    plaintext line receiver on ``127.0.0.1:carbon_server.port``, empty ``whisper_dir``; read
    points back with ``carbon_server.wait_for(path)`` / ``read(path)``. Function scope (start
    ~0.5 s, stop ~1 s) so a test may stop, kill or restart it and sees only its own metrics."""
    server = CarbonServer(tmp_path_factory.mktemp("carbon"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
