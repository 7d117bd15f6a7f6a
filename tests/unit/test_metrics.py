"""Metrics: Graphite lines over real TCP sockets, a Graphite that is down, Prometheus text."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

from backupd.config import MetricsConfig
from backupd.metrics import GraphiteSender, Metrics, age_samples, backup_samples, failure_samples


class LineServer:
    """A TCP listener on loopback that collects what it receives."""

    def __init__(self, port: int = 0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.data = b""
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while chunk := conn.recv(65536):
                    self.data += chunk

    def lines(self) -> list[str]:
        return self.data.decode().splitlines()

    def close(self) -> None:
        self.sock.close()


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_graphite_lines_and_prometheus_text(tmp_path):
    server = LineServer()
    config = MetricsConfig(graphite=f"127.0.0.1:{server.port}", prefix="prod.backupd",
                           prometheus_textfile=str(tmp_path / "backupd.prom"))
    metrics = Metrics.from_config(config, owner=True)
    metrics.emit(backup_samples("7", "full", seconds=10.0, raw_bytes=1000, stored_bytes=250), at=1_700_000_000)
    metrics.emit(backup_samples("7", "full", seconds=5.0, raw_bytes=1000, stored_bytes=250), at=1_700_000_060)
    metrics.emit(failure_samples("7", "incremental") + age_samples("7", 3600.0, 60.0), at=1_700_000_120)
    metrics.close()
    wait_until(lambda: len(server.lines()) == 13)
    lines = server.lines()
    assert "prod.backupd.shards.7.backup.full.duration_seconds 10 1700000000" in lines
    assert "prod.backupd.shards.7.backup.full.throughput_bytes_per_second 200 1700000060" in lines
    assert "prod.backupd.shards.7.backup.full.success 2 1700000060" in lines  # a running total
    assert "prod.backupd.shards.7.backup.incremental.failure 1 1700000120" in lines
    assert "prod.backupd.shards.7.newest_full_age_seconds 3600 1700000120" in lines
    text = (tmp_path / "backupd.prom").read_text()
    assert 'backupd_backup_duration_seconds{shard="7",kind="full"} 5' in text
    assert 'backupd_backup_success_total{shard="7",kind="full"} 2' in text
    assert "# TYPE backupd_backup_success_total counter" in text
    assert 'backupd_newest_backup_age_seconds{shard="7"} 60' in text
    server.close()


def test_a_down_graphite_is_retried_and_nothing_blocks(caplog):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    sender = GraphiteSender(f"127.0.0.1:{port}", timeout=0.5)
    started = time.monotonic()
    for i in range(100):
        sender.send([f"a.b {i} 1700000000\n"])
    assert time.monotonic() - started < 0.5  # send() only queues
    wait_until(lambda: sender._down)
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    server = LineServer(port)  # graphite comes back: the kept lines arrive
    with sender._wake:
        sender._wake.notify()
    wait_until(lambda: len(server.lines()) == 100, timeout=20)
    assert server.lines()[0] == "a.b 0 1700000000"
    sender.close()
    server.close()


def test_prometheus_endpoint():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    metrics = Metrics.from_config(MetricsConfig(prometheus_port=port), owner=True)
    try:
        metrics.emit(age_samples("3", 10.0, 5.0))
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'backupd_newest_full_age_seconds{shard="3"} 10' in body
    finally:
        metrics.close()
