"""The test servers work: each is driven through the client the stores will use."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.servers._process import group_members
from tests.servers.fixtures import S3Bucket, s3_client, unique_name
from tests.servers.identity import RackspaceIdentity
from tests.servers.moto import MotoServer
from tests.servers.swift import SwiftServer

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def swift_token(swift: SwiftServer) -> tuple[str, str]:
    response = requests.get(swift.auth_url, headers={"X-Auth-User": swift.user,
                                                     "X-Auth-Key": swift.key}, timeout=10)
    assert response.status_code == 200
    return response.headers["X-Auth-Token"], response.headers["X-Storage-Url"]


# ----------------------------------------------------------------------------- Swift API
def test_swift_api_put_get_list_with_tempauth_token(swift_server, swift_container):
    token, storage_url = swift_token(swift_server)
    assert storage_url == swift_server.storage_url
    base = f"{storage_url}/{swift_container}"
    auth = {"X-Auth-Token": token}
    payload = os.urandom(200_000)

    put = requests.put(f"{base}/dir/obj.bin", data=payload, headers=auth, timeout=10)
    assert put.status_code == 201
    assert put.headers["Etag"] == hashlib.md5(payload).hexdigest()
    assert requests.put(f"{base}/dir/other", data=b"x", headers=auth, timeout=10).status_code == 201
    assert requests.put(f"{base}/top", data=b"", headers=auth, timeout=10).status_code == 201

    get = requests.get(f"{base}/dir/obj.bin", headers=auth, timeout=10)
    assert get.status_code == 200 and get.content == payload
    ranged = requests.get(f"{base}/dir/obj.bin", headers={**auth, "Range": "bytes=10-19"},
                          timeout=10)
    assert ranged.status_code == 206 and ranged.content == payload[10:20]

    listing = requests.get(base, params={"format": "json", "prefix": "dir/"}, headers=auth,
                           timeout=10)
    assert [(o["name"], o["bytes"]) for o in listing.json()] == [("dir/obj.bin", 200_000),
                                                                 ("dir/other", 1)]
    containers = requests.get(storage_url, params={"format": "json"}, headers=auth, timeout=10)
    assert swift_container in [c["name"] for c in containers.json()]

    assert requests.get(f"{base}/missing", headers=auth, timeout=10).status_code == 404
    assert requests.get(f"{base}/top", timeout=10).status_code == 401  # no token


def test_swift_rejects_wrong_key(swift_server):
    response = requests.get(swift_server.auth_url, headers={"X-Auth-User": swift_server.user,
                                                            "X-Auth-Key": "wrong"}, timeout=10)
    assert response.status_code == 401


def test_kill_proxy_then_start_proxy_keeps_data(swift_server, swift_container):
    token, storage_url = swift_token(swift_server)
    url = f"{storage_url}/{swift_container}/kept"
    assert requests.put(url, data=b"survives", headers={"X-Auth-Token": token},
                        timeout=10).status_code == 201
    old_url = swift_server.proxy_url

    swift_server.kill_proxy()
    try:
        with pytest.raises(requests.ConnectionError):
            requests.get(url, headers={"X-Auth-Token": token}, timeout=5)
    finally:
        swift_server.start_proxy()

    assert swift_server.proxy_url == old_url
    # The token lives in memcached, which kept running: it is still valid.
    response = requests.get(url, headers={"X-Auth-Token": token}, timeout=10)
    assert response.status_code == 200 and response.content == b"survives"


# ----------------------------------------------------------------------------- S3 (boto3)
@pytest.fixture(params=["moto", "swift"])
def s3_bucket(request) -> S3Bucket:
    return request.getfixturevalue(f"s3_bucket_{request.param}")


def test_s3_put_get_list(s3_bucket):
    client = s3_bucket.client
    client.put_object(Bucket=s3_bucket.name, Key="a/one", Body=b"first")
    client.put_object(Bucket=s3_bucket.name, Key="a/two", Body=b"second")
    client.put_object(Bucket=s3_bucket.name, Key="b/three", Body=b"")

    assert client.get_object(Bucket=s3_bucket.name, Key="a/two")["Body"].read() == b"second"
    head = client.head_object(Bucket=s3_bucket.name, Key="a/one")
    assert head["ContentLength"] == 5
    assert head["ETag"].strip('"') == hashlib.md5(b"first").hexdigest()
    listing = client.list_objects_v2(Bucket=s3_bucket.name, Prefix="a/")
    assert [(o["Key"], o["Size"]) for o in listing["Contents"]] == [("a/one", 5), ("a/two", 6)]
    everything = client.list_objects_v2(Bucket=s3_bucket.name)
    assert [o["Key"] for o in everything["Contents"]] == ["a/one", "a/two", "b/three"]
    with pytest.raises(client.exceptions.NoSuchKey):
        client.get_object(Bucket=s3_bucket.name, Key="missing")


def test_s3_multipart_upload(s3_bucket):
    client = s3_bucket.client
    parts_data = [os.urandom(5 * 1024 * 1024), b"tail"]
    upload = client.create_multipart_upload(Bucket=s3_bucket.name, Key="big")
    parts = []
    for number, data in enumerate(parts_data, start=1):
        part = client.upload_part(Bucket=s3_bucket.name, Key="big", PartNumber=number,
                                  UploadId=upload["UploadId"], Body=data)
        parts.append({"PartNumber": number, "ETag": part["ETag"]})
    client.complete_multipart_upload(Bucket=s3_bucket.name, Key="big",
                                     UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": parts})
    body = client.get_object(Bucket=s3_bucket.name, Key="big")["Body"].read()
    assert body == b"".join(parts_data)


def test_swift_s3api_rejects_wrong_secret(s3_bucket_swift):
    from botocore.exceptions import ClientError

    bad = s3_client(s3_bucket_swift.endpoint_url, s3_bucket_swift.access_key, "not-the-secret")
    with pytest.raises(ClientError) as excinfo:
        bad.list_objects_v2(Bucket=s3_bucket_swift.name)
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_moto_reset_and_restart_lose_data(moto_server):
    client = s3_client(moto_server.endpoint_url, moto_server.access_key, moto_server.secret_key)
    name = unique_name()
    client.create_bucket(Bucket=name)
    moto_server.reset()
    assert name not in [b["Name"] for b in client.list_buckets()["Buckets"]]

    client.create_bucket(Bucket=name)
    endpoint = moto_server.endpoint_url
    moto_server.restart()
    assert moto_server.endpoint_url == endpoint
    assert name not in [b["Name"] for b in client.list_buckets()["Buckets"]]


# ----------------------------------------------------------------------------- libcloud
def _exercise_libcloud(driver, container_name: str, tmp_path: Path) -> None:
    assert container_name in [c.name for c in driver.list_containers()]
    container = driver.get_container(container_name)

    source = tmp_path / "source.bin"
    payload = os.urandom(300_000)
    source.write_bytes(payload)
    obj = driver.upload_object(str(source), container, "from/file")
    assert obj.hash == hashlib.md5(payload).hexdigest() and obj.size == len(payload)
    # A seekable stream: libcloud hashes it again after sending (see the quirk below).
    driver.upload_object_via_stream(io.BytesIO(b"streamed"), container, "from/stream")

    fetched = driver.get_object(container_name, "from/file")
    assert fetched.size == len(payload)
    assert b"".join(driver.download_object_as_stream(fetched)) == payload
    target = tmp_path / "download.bin"
    assert driver.download_object(fetched, str(target), overwrite_existing=True)
    assert target.read_bytes() == payload
    names = sorted(o.name for o in driver.list_container_objects(container, prefix="from/"))
    assert names == ["from/file", "from/stream"]
    assert b"".join(driver.download_object_as_stream(
        driver.get_object(container_name, "from/stream"))) == b"streamed"
    assert driver.delete_object(fetched)


def test_libcloud_openstack_swift_driver(swift_server, swift_container, tmp_path):
    from libcloud.storage.providers import Provider, get_driver

    driver = get_driver(Provider.OPENSTACK_SWIFT)(
        swift_server.user, swift_server.key,
        ex_force_auth_url=swift_server.auth_url,
        ex_force_auth_version="1.0",
        ex_force_base_url=swift_server.storage_url,
        secure=False,
    )
    _exercise_libcloud(driver, swift_container, tmp_path)


def test_libcloud_cloudfiles_driver_through_rackspace_identity(
        rackspace_identity: RackspaceIdentity, swift_container, tmp_path):
    from libcloud.storage.providers import Provider, get_driver

    before = rackspace_identity.token_requests
    driver = get_driver(Provider.CLOUDFILES)(
        rackspace_identity.username, rackspace_identity.api_key,
        region="dfw",
        ex_force_auth_url=rackspace_identity.auth_url,
        ex_force_auth_version="2.0",
    )
    _exercise_libcloud(driver, swift_container, tmp_path)
    assert rackspace_identity.token_requests == before + 1  # token reused until it expires

    again = get_driver(Provider.CLOUDFILES)(**rackspace_identity.libcloud_kwargs())
    assert swift_container in [c.name for c in again.list_containers()]


def test_libcloud_cloudfiles_wrong_api_key(rackspace_identity):
    from libcloud.common.types import InvalidCredsError
    from libcloud.storage.providers import Provider, get_driver

    kwargs = {**rackspace_identity.libcloud_kwargs(), "secret": "wrong"}
    driver = get_driver(Provider.CLOUDFILES)(**kwargs)
    with pytest.raises(InvalidCredsError):
        driver.list_containers()


def test_libcloud_stream_from_generator_quirk(swift_server, swift_container):
    """LIBCLOUD-935, pinned so we notice a fix: upload_object_via_stream from a generator
    stores the object but raises ObjectHashMismatchError (libcloud hashes the already
    consumed iterator: the md5 of nothing)."""
    from libcloud.storage.providers import Provider, get_driver
    from libcloud.storage.types import ObjectHashMismatchError

    driver = get_driver(Provider.OPENSTACK_SWIFT)(
        swift_server.user, swift_server.key, ex_force_auth_url=swift_server.auth_url,
        ex_force_auth_version="1.0", ex_force_base_url=swift_server.storage_url)
    container = driver.get_container(swift_container)
    with pytest.raises(ObjectHashMismatchError):
        driver.upload_object_via_stream(iter([b"abc", b"def"]), container, "gen")
    assert swift_server.request("GET", f"{swift_container}/gen").body == b"abcdef"


# ----------------------------------------------------------------------------- processes
_CHILD = """
import json, sys, time
sys.path.insert(0, {repo!r})
from tests.servers.swift import SwiftServer
from tests.servers.moto import MotoServer
swift = SwiftServer({swift_root!r}); swift.start()
moto = MotoServer({moto_root!r}); moto.start()
pids = [*swift.pids.values(), moto.pid]
print(json.dumps({{"pids": pids, "proxy": swift.proxy_url, "moto": moto.endpoint_url}}), flush=True)
time.sleep(600)
"""


def _group_members(pgids: set[int]) -> list[int]:
    """Live (non-zombie) processes whose process group is one of ``pgids``."""
    return [pid for pgid in sorted(pgids) for pid in group_members(pgid)]


def _wait_no_members(pgids: set[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _group_members(pgids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_stop_leaves_no_process(tmp_path):
    swift = SwiftServer(tmp_path / "swift")
    moto = MotoServer(tmp_path / "moto")
    try:
        swift.start()
        moto.start()
        pgids = {*swift.pids.values(), moto.pid}
        # 4 Swift servers, memcached and its leash, moto_server and its leash
        assert len(_group_members(pgids)) == 8
    finally:
        swift.stop()
        moto.stop()
    assert _group_members(pgids) == []
    swift.stop()  # idempotent
    moto.stop()


def test_servers_exit_when_the_test_process_dies(tmp_path):
    """The lifeline: SIGKILL the process that started the servers; they all go away."""
    code = _CHILD.format(repo=str(REPO_ROOT), swift_root=str(tmp_path / "swift"),
                         moto_root=str(tmp_path / "moto"))
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              start_new_session=True)
    pgids: set[int] = set()
    try:
        line = parent.stdout.readline()
        assert line, "child failed to start the servers"
        info = json.loads(line)
        pgids = set(info["pids"])
        assert requests.get(f"{info['proxy']}/healthcheck", timeout=5).status_code == 200
        assert len(_group_members(pgids)) == 8
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert _wait_no_members(pgids, timeout=15) == []
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
        for member in _group_members(pgids):  # only if the lifeline failed
            try:
                os.kill(member, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ----------------------------------------------------------------------------- Graphite carbon
def test_carbon_line_receiver_writes_whisper(carbon_server):
    import socket

    now = int(time.time())
    with socket.create_connection(("127.0.0.1", carbon_server.port), timeout=10) as sock:
        sock.sendall(f"test.selftest.value 42 {now}\n".encode())
    points = carbon_server.wait_for("test.selftest.value", timeout=30)
    assert (now, 42.0) in points
    assert carbon_server.read("test.selftest.value") == points
    assert (carbon_server.whisper_dir / "test" / "selftest" / "value.wsp").is_file()
    assert carbon_server.metrics() == ["test.selftest.value"]
    assert carbon_server.read("test.never.sent") == []


def test_carbon_stop_flush_and_restart_keep_files(carbon_server):
    now = int(time.time())
    port = carbon_server.port
    carbon_server.send(f"test.flush.a 1.5 {now - 2}", f"test.flush.a 2.5 {now - 1}")
    carbon_server.stop(flush=True)  # a plain SIGTERM would lose carbon's cache
    assert carbon_server.read("test.flush.a") == [(now - 2, 1.5), (now - 1, 2.5)]
    carbon_server.start()
    assert carbon_server.port == port
    carbon_server.send(f"test.flush.a 3 {now}")
    carbon_server.stop(flush=True)
    assert carbon_server.read("test.flush.a") == [(now - 2, 1.5), (now - 1, 2.5), (now, 3.0)]


@pytest.mark.parametrize("kind", ["moto", "carbon"])
def test_single_process_server_on_a_taken_port(tmp_path, kind):
    """A port given to the constructor that something else holds is an error naming the port;
    without one, the server picks another port and starts."""
    import socket

    from tests.servers.carbon import CarbonServer

    make = {"moto": MotoServer, "carbon": CarbonServer}[kind]
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        port = squatter.getsockname()[1]
        fixed = make(tmp_path / "fixed", port=port)
        with pytest.raises(RuntimeError, match=f"port {port} is taken"):
            fixed.start(timeout=30)
        assert not fixed.running()
        with make(tmp_path / "free") as free:
            assert free.running() and free.port != port
        assert not free.running()
