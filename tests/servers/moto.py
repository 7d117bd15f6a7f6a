"""moto's S3 (any AWS service, in fact) as a real HTTP server on loopback.

``moto_server -H 127.0.0.1 -p PORT`` from the project venv (``moto[server]``) runs as a child
process in its own session, under the lifeline leash of :mod:`tests.servers._process`.
Credentials: any; use access key ``testing``, secret ``testing``, region ``us-east-1``.

moto keeps everything in memory: :meth:`MotoServer.kill` / :meth:`MotoServer.restart` lose all
buckets (the port stays the same), :meth:`MotoServer.reset` clears state without a restart.
Keep payloads small: a 1 GiB upload costs GiBs of RSS. moto accepts wrong Content-MD5/CRC32,
so never test corruption detection against it.
"""

from __future__ import annotations

import http.client
import sys
from pathlib import Path

from tests.servers._process import PortTaken, ServerProcess, SingleProcessServer

__all__ = ["MotoServer", "MOTO_SERVER"]

REPO_ROOT = Path(__file__).resolve().parents[2]
MOTO_SERVER = next((p for p in (Path(sys.executable).with_name("moto_server"),
                                REPO_ROOT / ".venv" / "bin" / "moto_server") if p.exists()),
                   REPO_ROOT / ".venv" / "bin" / "moto_server")


class MotoServer(SingleProcessServer):
    """One ``moto_server`` process; log in ``root/moto.log``."""

    name = "moto_server"

    access_key = "testing"
    secret_key = "testing"
    region = "us-east-1"

    def __init__(self, root: Path, *, port: int | None = None,
                 moto_server: Path = MOTO_SERVER) -> None:
        self.root = Path(root).absolute()
        self.port = port
        self.moto_server = Path(moto_server)
        self._proc: ServerProcess | None = None

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("MotoServer has no port yet: call start() first")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "moto.log"

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until it answers HTTP (see :meth:`SingleProcessServer.start`)."""
        if not self.moto_server.exists():
            raise FileNotFoundError(f"{self.moto_server} missing: pip install 'moto[server]'")
        super().start(timeout)

    def _process(self) -> ServerProcess:
        argv = [str(self.moto_server), "-H", "127.0.0.1", "-p", str(self.port)]
        return ServerProcess("moto", argv, self.log_path)

    def restart(self, timeout: float = 30.0) -> None:
        """Kill (if running) and start again on the same port, empty."""
        self.kill()
        self.start(timeout)

    def reset(self) -> None:
        """Drop all state (``POST /moto-api/reset``)."""
        status = _request("POST", self.endpoint_url, "/moto-api/reset")
        if status != 200:
            raise RuntimeError(f"moto reset answered {status}")

    def _serves(self) -> bool:
        assert self._proc is not None and self.port is not None
        try:
            answered = _request("GET", self.endpoint_url, "/moto-api/", timeout=1) == 200
        except (OSError, http.client.HTTPException):
            return False
        if answered and not self._proc.owns_port(self.port):
            raise PortTaken()  # another server answers on "our" port
        return answered


def _request(method: str, base_url: str, path: str, timeout: float = 10) -> int:
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()
