"""A real Graphite carbon-cache (plaintext line receiver + whisper files) on loopback.

carbon 1.1.10 and whisper live in their own venv, ``.testbed/carbon-venv`` (made by
scripts/setup; Twisted must not enter the project's venv). The server runs in the foreground
under the lifeline leash of :mod:`tests.servers._process`::

    .testbed/carbon-venv/bin/python .testbed/carbon-venv/bin/carbon-cache.py \\
        --config=ROOT/carbon.conf --nodaemon start

Layout under ``root``::

    carbon.conf, storage-schemas.conf, storage-aggregation.conf
    storage/whisper/          whisper_dir: metric ``a.b.c`` is ``a/b/c.wsp``
    run/carbon-cache-a.pid    removed before every start (a stale one blocks the start)
    carbon.log                carbon's stdout/stderr (twistd logs to stdout with --nodaemon)

Only the line receiver listens for metrics (127.0.0.1, a free port picked at the first start
and kept across restarts); the pickle receiver and UDP are off, the cache-query port is an
ephemeral one on 127.0.0.1, carbon's own ``carbon.agents.*`` metrics and tags are off.
Retention ``1s:1d,60s:30d`` for every metric (sparse files, ~1.5 MB apparent size each).

Timing: start ~0.5 s; a point is in its .wsp file ~0-1.2 s after it was sent (carbon's writer
thread drains the whole cache, then sleeps 1 s): poll with :meth:`CarbonServer.wait_for`.
Stop (SIGTERM) ~0.7 s, and it does NOT flush: points received in the last ~1 s are lost
(carbon 1.1.10's writer thread just ends), unless ``stop(flush=True)``, which waits 1.5 s
first. Whisper keeps one value per second (a second point with the same timestamp
overwrites the first), drops points older than its retention and hides points newer than
"now" until their time has come.

carbon binds its receiver with SO_REUSEPORT, so a second carbon could share "our" port
without an error: :meth:`CarbonServer.start` insists that every listening socket on the port
belongs to our process group, and picks another port otherwise.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from tests.servers._process import (
    PortTaken,
    ServerProcess,
    SingleProcessServer,
    _listening_inodes,
    tail,
)

__all__ = ["CARBON_CACHE", "CARBON_PYTHON", "FLUSH_SECONDS", "CarbonServer"]

REPO_ROOT = Path(__file__).resolve().parents[2]
CARBON_VENV = REPO_ROOT / ".testbed" / "carbon-venv"
CARBON_PYTHON = CARBON_VENV / "bin" / "python"
CARBON_CACHE = CARBON_VENV / "bin" / "carbon-cache.py"
#: carbon's writer thread drains the whole cache, then sleeps 1 s: after this long, every
#: point received before is in its whisper file (for test-sized caches).
FLUSH_SECONDS = 1.5

# Runs under the carbon venv's python: prints [[timestamp, value], ...] for one .wsp file,
# finest archive first, coarser archives only for times the finer ones do not cover.
_READ_SCRIPT = """
import json, sys, time, whisper
path = sys.argv[1]
now = int(time.time())
points = {}
covered_from = now + 1
for archive in whisper.info(path)["archives"]:
    (start, _end, step), values = whisper.fetch(path, now - archive["retention"], now, now=now)
    for i, value in enumerate(values):
        ts = start + i * step
        if value is not None and ts < covered_from:
            points[ts] = value
    covered_from = min(covered_from, start)
print(json.dumps(sorted(points.items())))
"""


class CarbonServer(SingleProcessServer):
    """One carbon-cache process writing whisper files under ``root/storage/whisper``."""

    name = "carbon-cache"

    def __init__(self, root: Path, *, port: int | None = None,
                 carbon_python: Path = CARBON_PYTHON, carbon_cache: Path = CARBON_CACHE) -> None:
        self.root = Path(root).absolute()
        self.port = port
        self.carbon_python = Path(carbon_python)
        self.carbon_cache = Path(carbon_cache)
        self._proc: ServerProcess | None = None

    # ------------------------------------------------------------------ paths
    @property
    def whisper_dir(self) -> Path:
        return self.root / "storage" / "whisper"

    @property
    def config_path(self) -> Path:
        return self.root / "carbon.conf"

    @property
    def log_path(self) -> Path:
        return self.root / "carbon.log"

    @property
    def pid_path(self) -> Path:
        return self.root / "run" / "carbon-cache-a.pid"

    @property
    def address(self) -> tuple[str, int]:
        """``("127.0.0.1", port)`` of the plaintext line receiver."""
        if self.port is None:
            raise RuntimeError("CarbonServer has no port yet: call start() first")
        return ("127.0.0.1", self.port)

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until the line receiver accepts connections (see
        :meth:`SingleProcessServer.start`)."""
        for path in (self.carbon_python, self.carbon_cache):
            if not path.exists():
                raise FileNotFoundError(f"{path} missing: run scripts/setup")
        super().start(timeout)

    def _process(self) -> ServerProcess:
        self._write_config()
        self.pid_path.unlink(missing_ok=True)  # stale after a kill; its pid may be reused
        argv = [str(self.carbon_python), str(self.carbon_cache),
                f"--config={self.config_path}", "--nodaemon", "start"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPHITE_")}
        env["GRAPHITE_ROOT"] = str(self.root)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return ServerProcess("carbon-cache", argv, self.log_path, env=env)

    def stop(self, timeout: float = 10.0, *, flush: bool = False) -> None:
        """SIGTERM, SIGKILL after ``timeout`` s. Idempotent.

        carbon 1.1.10 does *not* write out its cache on SIGTERM: points received in the last
        ~1 s are lost. ``flush=True`` first waits :data:`FLUSH_SECONDS` (one full pass of
        carbon's writer thread) so that everything sent before the call is on disk."""
        if flush and self.running():
            time.sleep(FLUSH_SECONDS)
        super().stop(timeout)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop (if running) and start again on the same port; whisper files are kept."""
        self.stop()
        self.start(timeout)

    # ------------------------------------------------------------------ metrics
    def send(self, *lines: str) -> None:
        """Send plaintext lines (``path value timestamp``; a missing newline is added)."""
        data = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
        with socket.create_connection(self.address, timeout=10) as sock:
            sock.sendall(data.encode())

    def metric_file(self, metric_path: str) -> Path:
        return self.whisper_dir.joinpath(*metric_path.split(".")).with_suffix(".wsp")

    def metrics(self) -> list[str]:
        """Dotted names of every metric with a whisper file, sorted."""
        return sorted(".".join(p.relative_to(self.whisper_dir).with_suffix("").parts)
                      for p in self.whisper_dir.rglob("*.wsp"))

    def read(self, metric_path: str) -> list[tuple[int, float]]:
        """The stored ``(timestamp, value)`` points of a metric, oldest first (empty if it has
        no whisper file yet). Reads with the carbon venv's ``whisper`` in a subprocess."""
        path = self.metric_file(metric_path)
        if not path.exists():
            return []
        result = subprocess.run([str(self.carbon_python), "-c", _READ_SCRIPT, str(path)],
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"reading {path} failed:\n{result.stderr.strip()}")
        return [(int(ts), float(value)) for ts, value in json.loads(result.stdout)]

    def wait_for(self, metric_path: str, timeout: float = 30.0) -> list[tuple[int, float]]:
        """Poll until the metric's .wsp file exists and holds a point; return its points."""
        deadline = time.monotonic() + timeout
        path = self.metric_file(metric_path)
        error: Exception | None = None
        while True:
            if path.exists():
                try:
                    points = self.read(metric_path)
                except RuntimeError as exc:  # e.g. read while carbon was creating the file
                    error = exc
                else:
                    if points:
                        return points
            if time.monotonic() > deadline:
                state = f"last read error: {error}" if error else (
                    "file has no point" if path.exists() else f"{path} does not exist")
                raise TimeoutError(f"{metric_path}: no datapoint after {timeout} s ({state}); "
                                   f"carbon log:\n{tail(self.log_path)}")
            time.sleep(0.1)

    # ------------------------------------------------------------------ internals
    def _serves(self) -> bool:
        assert self._proc is not None and self.port is not None
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
        except OSError:
            return False
        if not self._sole_listener():
            raise PortTaken()  # another server (maybe a carbon, SO_REUSEPORT) is there
        return True

    def _sole_listener(self) -> bool:
        """True if every socket listening on our port belongs to our process group."""
        assert self._proc is not None and self.port is not None
        wanted = {f"socket:[{inode}]" for inode in _listening_inodes(self.port)}
        for pid in self._proc.pids():
            try:
                with os.scandir(f"/proc/{pid}/fd") as fds:
                    for fd in fds:
                        try:
                            wanted.discard(os.readlink(fd.path))
                        except OSError:
                            continue
            except OSError:
                continue
        return not wanted and bool(_listening_inodes(self.port))

    def _write_config(self) -> None:
        for directory in (self.whisper_dir, self.pid_path.parent, self.root / "storage" / "log"):
            directory.mkdir(parents=True, exist_ok=True)
        _write(self.config_path, _CARBON_CONF.format(
            storage=self.root / "storage", whisper=self.whisper_dir,
            log=self.root / "storage" / "log", run=self.pid_path.parent, port=self.port))
        _write(self.root / "storage-schemas.conf", _STORAGE_SCHEMAS)
        _write(self.root / "storage-aggregation.conf", _STORAGE_AGGREGATION)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


_CARBON_CONF = """\
[cache]
STORAGE_DIR = {storage}
LOCAL_DATA_DIR = {whisper}
LOG_DIR = {log}
PID_DIR = {run}
USER =

LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {port}
# 0 turns the pickle receiver off; the cache-query port 0 is an ephemeral loopback port.
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = 0
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = 0
ENABLE_UDP_LISTENER = False
UDP_RECEIVER_INTERFACE = 127.0.0.1
ENABLE_MANHOLE = False
ENABLE_AMQP = False

MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = inf
MAX_CREATES_PER_MINUTE = inf
CACHE_WRITE_STRATEGY = sorted
WHISPER_SPARSE_CREATE = True
WHISPER_AUTOFLUSH = False

LOG_UPDATES = False
LOG_CREATES = False
LOG_CACHE_HITS = False
LOG_CACHE_QUEUE_SORTS = False
LOG_LISTENER_CONN_SUCCESS = False

# No carbon.agents.* self-metrics, no tag database (it would call graphite-web over HTTP).
CARBON_METRIC_INTERVAL = 0
ENABLE_TAGS = False
"""

_STORAGE_SCHEMAS = """\
[everything]
pattern = .*
retentions = 1s:1d,60s:30d
"""

_STORAGE_AGGREGATION = """\
[everything]
pattern = .*
xFilesFactor = 0
aggregationMethod = average
"""
