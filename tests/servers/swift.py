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

Config files are written by :mod:`tests.servers._swift_config`; the API helpers (``auth``,
``request``, containers) come from :class:`~tests.servers._swift_api.SwiftAPI`.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import time
from contextlib import ExitStack
from pathlib import Path

from tests.servers._process import BIND_ERROR_MARKERS, START_ATTEMPTS, PortTaken, ServerProcess, stop_all, tail
from tests.servers._swift_api import HTTPResult, SwiftAPI, _healthy, _http
from tests.servers._swift_config import BACKENDS as BACKENDS
from tests.servers._swift_config import PROXY_PIPELINE as PROXY_PIPELINE
from tests.servers._swift_config import SERVERS, write_config
from tests.servers._swift_config import _write as _write

__all__ = ["HTTPResult", "SwiftServer", "SWIFT_PYTHON"]

REPO_ROOT = Path(__file__).resolve().parents[2]
SWIFT_PYTHON = REPO_ROOT / ".testbed" / "swift-venv" / "bin" / "python"
LAUNCHER = Path(__file__).resolve().with_name("_swift_launcher.py")


class SwiftServer(SwiftAPI):
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
        write_config(self.etc_dir, self.devices_dir, self.ports)


def _free_ports(names: list[str]) -> dict[str, int]:
    """Distinct free loopback ports, one per name (all sockets held open while picking)."""
    with ExitStack() as stack:
        ports = {}
        for name in names:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports[name] = int(sock.getsockname()[1])
        return ports
