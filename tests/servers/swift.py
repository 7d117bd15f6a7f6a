"""A throwaway single-node OpenStack Swift (Swift API + S3 through s3api) on loopback.

Layout under ``root`` (everything absolute, nothing under /etc)::

    etc/swift.conf            hash prefix/suffix, storage policy 0
    etc/rings.json            ring spec; the launcher builds etc/{account,container,object}.ring.gz
    etc/{proxy,account,container,object}-server.conf
    srv/node/d1/              the one "device" (a plain directory, mount_check = false)
    log/{memcached,proxy,account,container,object}.log

Processes: memcached (tempauth tokens, proxy caches) and four Swift servers (``workers = 0``,
each one process), each the leader of its own session, started through
``_swift_launcher.py`` under Swift's own venv (``.testbed/swift-venv``, made by
scripts/setup). The launcher repoints Swift's hard-coded /etc/swift/swift.conf to
``etc/swift.conf`` and builds the rings (part power 6, 1 replica, 1 device) on first start;
they are rebuilt only if ports change. Rings are not cached across instances: they embed the
servers' ports and take ~10 ms to build, the interpreter start dominates.

Credentials: tempauth ``user_test_tester = testing .admin``: Swift user ``test:tester``, key
``testing``, account ``AUTH_test``; the same pair is the S3 access key / secret for s3api
(region ``us-east-1``, path-style addressing).

Ports are picked at the first :meth:`SwiftServer.start` and kept for the object's lifetime (the
proxy comes back on the same port after :meth:`SwiftServer.kill_proxy`); if a port turns out to
be taken at start, all ports are picked again (up to 3 attempts). Every child process is also
tied to the test process by a lifeline pipe: if the test process dies, they exit on their own.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from tests.servers._process import BIND_ERROR_MARKERS, START_ATTEMPTS, PortTaken, ServerProcess, stop_all, tail

__all__ = ["HTTPResult", "SwiftServer", "SWIFT_PYTHON"]

REPO_ROOT = Path(__file__).resolve().parents[2]
SWIFT_PYTHON = REPO_ROOT / ".testbed" / "swift-venv" / "bin" / "python"
LAUNCHER = Path(__file__).resolve().with_name("_swift_launcher.py")

PROXY_PIPELINE = (
    "catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl "
    "s3api tempauth copy slo dlo versioned_writes symlink proxy-logging proxy-server"
)
BACKENDS = ("account", "container", "object")
SERVERS = (*BACKENDS, "proxy")


@dataclass(frozen=True)
class HTTPResult:
    """A finished HTTP exchange: status, headers (lower-case names) and the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class SwiftServer:
    """One Swift cluster of one node, fully contained in ``root``.

    ``start()`` / ``stop()`` run the whole thing; ``kill_proxy()`` / ``start_proxy()`` take
    the API down and bring it back on the same port with all data kept (backends and
    memcached keep running, so tokens stay valid). ``stop()`` is idempotent and leaves no
    process behind; the data under ``root`` stays until the caller deletes it.
    """

    account = "AUTH_test"
    user = "test:tester"
    key = "testing"
    region = "us-east-1"

    def __init__(self, root: Path, *, swift_python: Path = SWIFT_PYTHON,
                 memcached: str = "memcached") -> None:
        self.root = Path(root).absolute()
        self.swift_python = Path(swift_python)
        self.memcached = memcached
        self.ports: dict[str, int] = {}
        self._procs: dict[str, ServerProcess] = {}
        self._token: str | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self._port('proxy')}"

    @property
    def auth_url(self) -> str:
        """tempauth v1.0: GET with X-Auth-User/X-Auth-Key -> X-Auth-Token, X-Storage-Url."""
        return f"{self.proxy_url}/auth/v1.0"

    @property
    def storage_url(self) -> str:
        return f"{self.proxy_url}/v1/{self.account}"

    @property
    def s3_endpoint(self) -> str:
        return self.proxy_url

    @property
    def s3_access_key(self) -> str:
        return self.user

    @property
    def s3_secret_key(self) -> str:
        return self.key

    @property
    def etc_dir(self) -> Path:
        return self.root / "etc"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def devices_dir(self) -> Path:
        return self.root / "srv" / "node"

    def log_path(self, name: str) -> Path:
        """Log of ``memcached`` or one of ``proxy``, ``account``, ``container``, ``object``."""
        return self.log_dir / f"{name}.log"

    def _port(self, name: str) -> int:
        if name not in self.ports:
            raise RuntimeError("SwiftServer has no ports yet: call start() first")
        return self.ports[name]

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 30.0) -> None:
        """Start memcached and the four servers; return when all answer and auth works.

        Raises RuntimeError (with log tails) if a process exits or nothing is ready within
        ``timeout`` seconds; everything started is stopped first.
        """
        if self._procs:
            raise RuntimeError(f"Swift under {self.root} already started")
        if not self.swift_python.exists():
            raise FileNotFoundError(f"{self.swift_python} missing: run scripts/setup")
        memcached = shutil.which(self.memcached)
        if memcached is None:
            raise FileNotFoundError(f"{self.memcached} not found: run scripts/setup")
        for directory in (self.etc_dir, self.log_dir, self.devices_dir / "d1"):
            directory.mkdir(parents=True, exist_ok=True)
        for attempt in range(START_ATTEMPTS):
            if attempt or not self.ports:
                self.ports = _free_ports(["memcached", *SERVERS])
            self._write_config()
            offsets = {n: self.log_path(n).stat().st_size if self.log_path(n).exists() else 0
                       for n in ("memcached", *SERVERS)}
            self._procs = {"memcached": self._memcached_process(memcached)}
            self._procs.update({name: self._swift_process(name) for name in SERVERS})
            try:
                for proc in self._procs.values():
                    proc.start()
                self._wait_ready(list(self._procs), time.monotonic() + timeout, offsets)
                return
            except PortTaken:
                self.stop()
                continue
            except BaseException:
                self.stop()
                raise
        raise RuntimeError(f"Swift under {self.root}: ports kept being taken; gave up")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every process (SIGTERM, SIGKILL after ``timeout``). Idempotent."""
        procs, self._procs = self._procs, {}
        stop_all(procs.values(), timeout)
        self._token = None

    def kill_proxy(self) -> None:
        """SIGKILL the proxy (clients see connection refused/reset); data is kept."""
        proxy = self._procs.get("proxy")
        if proxy is None:
            raise RuntimeError("Swift is not started")
        proxy.kill()

    def start_proxy(self, timeout: float = 30.0) -> None:
        """Start the proxy again on its old port and wait until it serves authenticated
        requests. No-op if it is running."""
        proxy = self._procs.get("proxy")
        if proxy is None:
            raise RuntimeError("Swift is not started")
        if proxy.running():
            return
        offsets = {"proxy": self.log_path("proxy").stat().st_size}
        proxy.start()
        try:
            self._wait_ready(["proxy"], time.monotonic() + timeout, offsets)
        except PortTaken:
            proxy.kill()
            raise RuntimeError(f"proxy port {self.ports['proxy']} was taken meanwhile; log:\n"
                               f"{tail(self.log_path('proxy'))}") from None
        except BaseException:
            proxy.kill()
            raise

    @property
    def pids(self) -> dict[str, int]:
        """Pid of each started process (memcached: its leash), each a process group leader."""
        return {name: proc.pid for name, proc in self._procs.items() if proc.pid is not None}

    def running(self) -> bool:
        """True if every process of the cluster is running."""
        return bool(self._procs) and all(p.running() for p in self._procs.values())

    def __enter__(self) -> SwiftServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ auth and HTTP
    def auth(self) -> tuple[str, str, int]:
        """A fresh tempauth token: ``(token, storage_url, seconds_until_expiry)``."""
        result = _http("GET", self.proxy_url, "/auth/v1.0",
                       {"X-Auth-User": self.user, "X-Auth-Key": self.key})
        token = result.headers.get("x-auth-token")
        if result.status // 100 != 2 or not token:
            raise RuntimeError(f"tempauth failed: {result.status} {result.body[:200]!r}")
        expires = int(result.headers.get("x-auth-token-expires", "86400"))
        return token, result.headers.get("x-storage-url", self.storage_url), expires

    def token(self, *, refresh: bool = False) -> str:
        """A tempauth token, cached until ``refresh`` (tokens live 24 h in memcached)."""
        if refresh or self._token is None:
            self._token = self.auth()[0]
        return self._token

    def request(self, method: str, path: str = "", *, params: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None, body: bytes | None = None,
                timeout: float = 30.0) -> HTTPResult:
        """One authenticated Swift API request; ``path`` is relative to the account
        (``""``, ``"container"``, ``"container/object"``) and gets percent-quoted."""
        url_path = f"/v1/{self.account}"
        if path:
            url_path += "/" + urllib.parse.quote(path)
        if params:
            url_path += "?" + urllib.parse.urlencode(params)
        for attempt in (0, 1):
            all_headers = {"X-Auth-Token": self.token(refresh=attempt == 1), **(headers or {})}
            result = _http(method, self.proxy_url, url_path, all_headers, body, timeout)
            if result.status != 401:
                break
        return result

    def create_container(self, name: str) -> None:
        result = self.request("PUT", name)
        if result.status not in (201, 202):
            raise RuntimeError(f"PUT container {name}: {result.status} {result.body[:200]!r}")

    def list_containers(self, prefix: str = "") -> list[str]:
        return [c["name"] for c in self._listing("", prefix)]

    def list_objects(self, container: str, prefix: str = "") -> list[str]:
        return [o["name"] for o in self._listing(container, prefix)]

    def delete_container(self, name: str) -> None:
        """Delete container ``name`` with every object in it (bulk delete); no error if it
        does not exist."""
        while True:
            names = self.list_objects(name)
            if not names:
                break
            listing = "\n".join(urllib.parse.quote(f"/{name}/{obj}") for obj in names)
            result = self.request("POST", params={"bulk-delete": "1"}, body=listing.encode(),
                                  headers={"Content-Type": "text/plain",
                                           "Accept": "application/json"})
            report = result.json() if result.status == 200 else {}
            if result.status != 200 or report.get("Errors"):  # type: ignore[union-attr]
                raise RuntimeError(f"bulk delete in {name}: {result.status} {result.body!r}")
        result = self.request("DELETE", name)
        if result.status not in (204, 404):
            raise RuntimeError(f"DELETE container {name}: {result.status} {result.body[:200]!r}")

    def _listing(self, path: str, prefix: str) -> Iterator[dict[str, object]]:
        marker = ""
        while True:
            params = {"format": "json", "prefix": prefix, "marker": marker}
            result = self.request("GET", path, params=params)
            if result.status == 404:
                return
            if result.status not in (200, 204):
                raise RuntimeError(f"GET {path!r}: {result.status} {result.body[:200]!r}")
            page = json.loads(result.body or b"[]")
            if not page:
                return
            yield from page
            marker = page[-1]["name"]

    # ------------------------------------------------------------------ internals
    def _memcached_process(self, binary: str) -> ServerProcess:
        argv = [binary, "-l", "127.0.0.1", "-p", str(self.ports["memcached"]), "-U", "0",
                "-m", "64", "-c", "1024"]
        if os.geteuid() == 0:
            argv += ["-u", "root"]
        # memcached only holds tokens and caches; SIGTERM would take it up to 1 s to notice.
        return ServerProcess("memcached", argv, self.log_path("memcached"),
                             leash_signal=signal.SIGKILL)

    def _swift_process(self, name: str) -> ServerProcess:
        # -I: ignore PYTHON* variables and user site-packages, and do not put the launcher's
        # directory (holding this swift.py) on sys.path.
        argv = [str(self.swift_python), "-I", str(LAUNCHER), name,
                str(self.etc_dir / f"{name}-server.conf")]
        return ServerProcess(name, argv, self.log_path(name), lifeline="self")

    def _wait_ready(self, names: list[str], deadline: float, offsets: dict[str, int]) -> None:
        pending = [n for n in names if n != "memcached"]
        while True:
            for name in names:
                code = self._procs[name].exit_code()
                if code is not None:
                    log = self.log_path(name)
                    with open(log, "rb") as f:
                        f.seek(offsets.get(name, 0))
                        fresh = f.read().decode(errors="replace")
                    if any(marker in fresh for marker in BIND_ERROR_MARKERS):
                        raise PortTaken(name)
                    raise RuntimeError(f"Swift {name} exited with code {code} during start; "
                                       f"last lines of {log}:\n{tail(log)}")
            for name in [n for n in pending if _healthy(self.ports[n])]:
                if not self._procs[name].owns_port(self.ports[name]):
                    raise PortTaken(name)  # another server answers on "our" port
                pending.remove(name)
            if not pending and self._serves_requests():
                return
            if time.monotonic() > deadline:
                waiting = pending or ["authenticated requests"]
                logs = "\n".join(f"== {n}:\n{tail(self.log_path(n), 10)}" for n in names)
                raise RuntimeError(f"Swift under {self.root}: not ready in time, waiting for "
                                   f"{', '.join(waiting)}\n{logs}")
            time.sleep(0.02)

    def _serves_requests(self) -> bool:
        """tempauth hands out a token and the account answers a HEAD with it (this goes
        through memcached, the proxy and the account server)."""
        try:
            token = self.token(refresh=True)
            result = _http("HEAD", self.proxy_url, f"/v1/{self.account}",
                           {"X-Auth-Token": token}, timeout=5)
        except (OSError, RuntimeError, http.client.HTTPException):
            return False
        return result.status // 100 == 2

    def _write_config(self) -> None:
        etc = self.etc_dir
        _write(etc / "swift.conf", _SWIFT_CONF)
        _write(etc / "rings.json", json.dumps({
            "part_power": 6, "replicas": 1, "min_part_hours": 1, "ip": "127.0.0.1",
            "device": "d1", "ports": {name: self.ports[name] for name in BACKENDS},
        }, sort_keys=True) + "\n")
        user = pwd.getpwuid(os.geteuid()).pw_name
        for name in SERVERS:
            common = _DEFAULT_SECTION.format(
                port=self.ports[name], user=user, swift_dir=etc, devices=self.devices_dir,
                name=name)
            if name == "proxy":
                body = _PROXY_CONF.format(pipeline=PROXY_PIPELINE,
                                          memcached=self.ports["memcached"])
            else:
                body = _BACKEND_CONF.format(name=name)
            _write(etc / f"{name}-server.conf", common + body)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _free_ports(names: list[str]) -> dict[str, int]:
    """Distinct free loopback ports, one per name (all sockets held open while picking)."""
    with ExitStack() as stack:
        ports = {}
        for name in names:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports[name] = int(sock.getsockname()[1])
        return ports


def _http(method: str, base_url: str, path: str, headers: Mapping[str, str] | None = None,
          body: bytes | None = None, timeout: float = 30.0) -> HTTPResult:
    parsed = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        data = response.read()
        return HTTPResult(response.status,
                          {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def _healthy(port: int) -> bool:
    try:
        return _http("GET", f"http://127.0.0.1:{port}", "/healthcheck", timeout=1).status == 200
    except (OSError, http.client.HTTPException):
        return False


_SWIFT_CONF = """\
[swift-hash]
swift_hash_path_prefix = backupd-testbed-prefix
swift_hash_path_suffix = backupd-testbed-suffix

[storage-policy:0]
name = Policy-0
default = yes
"""

_DEFAULT_SECTION = """\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
bind_timeout = 3
workers = 0
user = {user}
swift_dir = {swift_dir}
devices = {devices}
mount_check = false
disable_fallocate = true
fallocate_reserve = 0
log_name = {name}
log_level = INFO

"""

_BACKEND_CONF = """\
[pipeline:main]
pipeline = healthcheck {name}-server

[app:{name}-server]
use = egg:swift#{name}

[filter:healthcheck]
use = egg:swift#healthcheck
"""

_PROXY_CONF = """\
[pipeline:main]
pipeline = {pipeline}

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcached}

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:bulk]
use = egg:swift#bulk

[filter:tempurl]
use = egg:swift#tempurl

[filter:s3api]
use = egg:swift#s3api
location = us-east-1

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo
allow_async_delete = false

[filter:dlo]
use = egg:swift#dlo

[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_versioned_writes = true
allow_object_versioning = true

[filter:symlink]
use = egg:swift#symlink
"""
