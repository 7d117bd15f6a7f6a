"""Metrics: Graphite's plaintext protocol, and the same metrics in Prometheus text format.

Every sample has a Graphite path and a Prometheus name with labels (``Sample``); the names are
listed in the README. ``Metrics`` keeps the newest value of every gauge and the running total of
every counter (for the Prometheus textfile or ``/metrics`` endpoint) and hands each sample to the
Graphite sender.

Contract: metrics never block or fail the work they describe. ``GraphiteSender.send`` only
queues lines; a background thread writes them over TCP (``path value timestamp\\n``). When
Graphite is down the failure is logged once (and its recovery once), unsent lines are kept (up
to ``BUFFER_LINES``, oldest dropped first) and retried.
"""

from __future__ import annotations

import http.server
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from backupd.config import MetricsConfig

log = logging.getLogger(__name__)

UNDER_DAEMON_ENV = "BACKUPD_UNDER_DAEMON"  # set in the daemon's children: they leave metrics to it
BUFFER_LINES = 100_000
RETRY_EVERY = 10.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def graphite_name(text: str) -> str:
    """One Graphite path element (dots and spaces would split or break the path)."""
    return _UNSAFE.sub("_", text)


@dataclass(frozen=True)
class Sample:
    """One measurement: Graphite ``path`` (below the prefix) and Prometheus ``name{labels}``."""

    path: str
    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    kind: str = "gauge"  # "gauge" | "counter" (the value is added to the running total)
    help: str = ""


def backup_samples(shard: str, kind: str, *, seconds: float, raw_bytes: int, stored_bytes: int) -> list[Sample]:
    """A committed backup."""
    base, labels = f"shards.{graphite_name(shard)}.backup.{kind}", (("shard", shard), ("kind", kind))
    return [
        Sample(f"{base}.duration_seconds", "backupd_backup_duration_seconds", seconds, labels,
               help="Wall time of the newest backup."),
        Sample(f"{base}.raw_bytes", "backupd_backup_raw_bytes", raw_bytes, labels,
               help="Uncompressed bytes of the newest backup."),
        Sample(f"{base}.stored_bytes", "backupd_backup_stored_bytes", stored_bytes, labels,
               help="Compressed bytes stored (per store) of the newest backup."),
        Sample(f"{base}.throughput_bytes_per_second", "backupd_backup_throughput_bytes_per_second",
               raw_bytes / seconds if seconds > 0 else 0.0, labels, help="Raw bytes per second of the newest backup."),
        Sample(f"{base}.success", "backupd_backup_success_total", 1, labels, "counter",
               help="Backups committed."),
    ]


def store_samples(stats: dict[str, dict[str, int]]) -> list[Sample]:
    """Retries and errors of each store during one run (added to running totals)."""
    samples = []
    for store, counts in stats.items():
        labels = (("store", store),)
        samples += [Sample(f"stores.{graphite_name(store)}.retries", "backupd_store_retries_total",
                           counts.get("retries", 0), labels, "counter", help="Store operations retried."),
                    Sample(f"stores.{graphite_name(store)}.errors", "backupd_store_errors_total",
                           counts.get("errors", 0), labels, "counter",
                           help="Store operations that failed for good.")]
    return samples


def failure_samples(shard: str, kind: str) -> list[Sample]:
    return [Sample(f"shards.{graphite_name(shard)}.backup.{kind}.failure", "backupd_backup_failure_total", 1,
                   (("shard", shard), ("kind", kind)), "counter", help="Backups that failed.")]


def age_samples(shard: str, newest_full_age: float | None, newest_backup_age: float | None) -> list[Sample]:
    """How old the shard's newest full and newest backup are (sent every interval by the daemon)."""
    labels = (("shard", shard),)
    samples = []
    if newest_full_age is not None:
        samples.append(Sample(f"shards.{graphite_name(shard)}.newest_full_age_seconds",
                              "backupd_newest_full_age_seconds", newest_full_age, labels,
                              help="Age of the shard's newest full backup (snapshot time)."))
    if newest_backup_age is not None:
        samples.append(Sample(f"shards.{graphite_name(shard)}.newest_backup_age_seconds",
                              "backupd_newest_backup_age_seconds", newest_backup_age, labels,
                              help="Age of the shard's newest backup of any kind (snapshot time)."))
    return samples


def binlog_samples(shard: str, *, rpo_seconds: float | None, segments: int | None = None,
                   stored_bytes: int | None = None) -> list[Sample]:
    """A shard's binlog archive: ``rpo_seconds`` (now minus the newest archived event, or the last
    moment the archive was known complete), sent every interval; with ``segments`` and
    ``stored_bytes``, what one archiver run committed (counters)."""
    base, labels = f"shards.{graphite_name(shard)}.binlogs", (("shard", shard),)
    samples = []
    if rpo_seconds is not None:
        samples.append(Sample(f"{base}.rpo_seconds", "backupd_binlog_rpo_seconds", rpo_seconds, labels,
                              help="Seconds of writes the shard would lose now: now minus archived_until."))
    if segments is not None:
        samples.append(Sample(f"{base}.segments", "backupd_binlog_segments_total", segments, labels, "counter",
                              help="Binlog segments committed by the archiver."))
    if stored_bytes is not None:
        samples.append(Sample(f"{base}.stored_bytes", "backupd_binlog_stored_bytes_total", stored_bytes, labels,
                              "counter", help="Compressed binlog bytes committed by the archiver."))
    return samples


def audit_samples(level: str, findings_by_shard: dict[str, int], seconds: float, bytes_read: int) -> list[Sample]:
    samples = [Sample(f"shards.{graphite_name(shard)}.audit.{level}.findings", "backupd_audit_findings", count,
                      (("shard", shard), ("level", level)), help="Findings of the newest audit.")
               for shard, count in findings_by_shard.items()]
    samples.append(Sample(f"audit.{level}.duration_seconds", "backupd_audit_duration_seconds", seconds,
                          (("level", level),), help="Wall time of the newest audit."))
    if level == "deep":
        samples.append(Sample("audit.deep.bytes_read", "backupd_audit_bytes_read", bytes_read, (("level", level),),
                              help="Bytes downloaded and checked by the newest deep audit."))
    return samples


def restore_samples(shard: str, target: str, *, seconds: float, raw_bytes: int, verified: bool,
                    rebuild_seconds: float | None = None) -> list[Sample]:
    """One restore of a shard (a fleet restore sends one set per shard)."""
    base, labels = f"shards.{graphite_name(shard)}.restore", (("shard", shard), ("target", target))
    samples = [
        Sample(f"{base}.duration_seconds", "backupd_restore_duration_seconds", seconds, labels,
               help="Wall time of the newest restore (fetch, apply, verify)."),
        Sample(f"{base}.raw_bytes", "backupd_restore_raw_bytes", raw_bytes, labels,
               help="Uncompressed bytes the newest restore applied."),
        Sample(f"{base}.verified", "backupd_restore_verified", 1 if verified else 0, labels,
               help="1 if the newest restore verified, else 0."),
        Sample(f"{base}.{'success' if verified else 'failure'}",
               f"backupd_restore_{'success' if verified else 'failure'}_total", 1, labels, "counter",
               help="Restores that verified." if verified else "Restores that failed or did not verify."),
    ]
    if rebuild_seconds is not None:
        samples.append(Sample(f"{base}.rebuild_seconds", "backupd_restore_rebuild_seconds", rebuild_seconds, labels,
                              help="Restore plus replica caught up: the time to rebuild redundancy."))
    return samples


def drill_samples(shard: str, *, seconds: float, verified: bool) -> list[Sample]:
    labels = (("shard", shard),)
    return [Sample(f"shards.{graphite_name(shard)}.drill.restore_seconds", "backupd_drill_restore_seconds", seconds,
                   labels, help="Wall time of the newest restore drill."),
            Sample(f"shards.{graphite_name(shard)}.drill.verified", "backupd_drill_verified", 1 if verified else 0,
                   labels, help="1 if the newest restore drill verified, else 0.")]


def one_shot_metrics(config: MetricsConfig) -> Metrics | None:
    """Where a one-shot command sends its results' metrics (Graphite only: the Prometheus view is
    the daemon's), or None when the daemon runs the command (it sends them itself)."""
    return None if os.environ.get(UNDER_DAEMON_ENV) else Metrics.from_config(config)


class GraphiteSender:
    """Queues plaintext lines and writes them from a thread (see the module contract)."""

    def __init__(self, address: str, *, timeout: float = 5.0):
        host, _, port = address.rpartition(":")
        self.address = (host.strip("[]"), int(port))
        self.timeout = timeout
        self._lines: deque[bytes] = deque(maxlen=BUFFER_LINES)
        self._wake = threading.Condition()
        self._stop = False
        self._down = False
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="graphite", daemon=True)
        self._thread.start()

    def send(self, lines: Iterable[str]) -> None:
        with self._wake:
            self._lines.extend(line.encode() for line in lines)
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._lines and not self._stop:
                    self._wake.wait()
                if not self._lines:
                    return
                batch = list(self._lines)
            try:
                with socket.create_connection(self.address, timeout=self.timeout) as conn:
                    conn.sendall(b"".join(batch))
            except OSError as exc:
                if not self._down:
                    self._down = True
                    log.warning("metrics: graphite %s:%d unreachable (%s); keeping up to %d lines and "
                                "retrying every %.0fs", *self.address, exc, BUFFER_LINES, RETRY_EVERY)
                with self._wake:
                    if self._stop:
                        return
                    self._wake.wait(RETRY_EVERY)
                continue
            if self._down:
                self._down = False
                log.info("metrics: graphite %s:%d reachable again", *self.address)
            with self._wake:
                for _ in range(min(len(batch), len(self._lines))):
                    self._lines.popleft()
            self.sent += len(batch)

    def close(self, wait: float = 5.0) -> None:
        """Try to send what is queued for up to ``wait`` seconds, then stop."""
        deadline = time.monotonic() + wait
        while self._lines and not self._down and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()) + 0.5)


@dataclass
class _Series:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    kind: str
    help: str


@dataclass
class Metrics:
    """Where samples go: Graphite (if configured) and the Prometheus view (kept in memory)."""

    config: MetricsConfig
    graphite: GraphiteSender | None = None
    series: dict[tuple[str, tuple[tuple[str, str], ...]], _Series] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: http.server.ThreadingHTTPServer | None = None

    owner: bool = False  # the daemon: it owns the Prometheus textfile and endpoint

    @classmethod
    def from_config(cls, config: MetricsConfig, *, owner: bool = False) -> Metrics:
        """``owner`` (the daemon): also keep the Prometheus textfile and endpoint; one-shot
        commands only send to Graphite (their totals would overwrite the daemon's)."""
        metrics = cls(config, GraphiteSender(config.graphite, timeout=config.timeout) if config.graphite else None,
                      owner=owner)
        if owner and config.prometheus_port:
            metrics._serve(config.prometheus_port)
        return metrics

    def emit(self, samples: list[Sample], *, at: float | None = None) -> None:
        timestamp = int(at if at is not None else time.time())
        lines = []
        with self._lock:
            for sample in samples:
                key = (sample.name, sample.labels)
                current = self.series.get(key)
                value = sample.value + (current.value if current and sample.kind == "counter" else 0)
                self.series[key] = _Series(sample.name, sample.labels, value, sample.kind, sample.help)
                # a counter goes to Graphite as its running total (graph it with nonNegativeDerivative)
                lines.append(f"{self.config.prefix}.{sample.path} {value:g} {timestamp}\n")
        if self.graphite is not None:
            self.graphite.send(lines)
        if self.owner and self.config.prometheus_textfile:
            self.write_textfile(Path(self.config.prometheus_textfile))

    def prometheus_text(self) -> str:
        """Every series in the Prometheus text exposition format."""
        with self._lock:
            series = sorted(self.series.values(), key=lambda s: (s.name, s.labels))
        lines: list[str] = []
        seen: set[str] = set()
        for s in series:
            if s.name not in seen:
                seen.add(s.name)
                lines += [f"# HELP {s.name} {s.help}", f"# TYPE {s.name} {s.kind}"]
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels)
            lines.append(f"{s.name}{{{labels}}} {s.value:g}" if labels else f"{s.name} {s.value:g}")
        return "\n".join(lines) + "\n"

    def write_textfile(self, path: Path) -> None:
        """Atomically replace ``path`` (node_exporter's textfile collector reads it)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(self.prometheus_text())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("metrics: cannot write %s: %s", path, exc)

    def _serve(self, port: int) -> None:
        metrics = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = metrics.prometheus_text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        try:
            self._server = http.server.ThreadingHTTPServer((self.config.prometheus_address, port), Handler)
        except OSError as exc:
            log.warning("metrics: cannot serve Prometheus metrics on %s:%d: %s",
                        self.config.prometheus_address, port, exc)
            return
        threading.Thread(target=self._server.serve_forever, name="prometheus", daemon=True).start()

    def close(self) -> None:
        """Stop the endpoint and flush Graphite (briefly); safe to call twice."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.graphite is not None:
            self.graphite.close()
            self.graphite = None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
