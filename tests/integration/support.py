"""Helpers for integration tests: config files for test-bed servers, CLI runs, store peeking."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import zstandard

from backupd.errors import TransientStoreError
from backupd.repo.sealed import seal
from backupd.stores.base import ObjectInfo, ObjectStream, Payload, Store
from tests.testbed.config import write_config as testbed_write_config

T = TypeVar("T")

BIN = Path(sys.executable).parent


def write_config(path: Path, **kwargs: Any) -> Path:
    """``tests.testbed.config.write_config`` with tests' default of 64 KiB parts (many parts)."""
    settings = {"part_size": "64KiB", **kwargs.pop("settings", {})}
    return testbed_write_config(path, settings=settings, **kwargs)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def run(tool: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Run:
    """Run the ``backupd`` or ``restore`` console script. Past ``timeout`` the command is asked
    for every thread's stack (SIGUSR1), killed, and the test fails showing where it was stuck."""
    with subprocess.Popen([str(BIN / tool), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, **(env or {})}) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)
            time.sleep(2)
            proc.kill()
            stdout, stderr = proc.communicate()
            raise AssertionError(f"{tool} {' '.join(args)} ran past {timeout:.0f}s; its stacks and log:\n"
                                 f"{stderr[-20000:]}") from None
    return Run(proc.returncode, stdout, stderr)


def backup(config: Path, shard: str) -> str:
    result = run("backupd", "--config", str(config), "backup", "--shard", shard)
    assert result.code == 0, result.stderr
    return result.stdout.strip()


def listing(config: Path, shard: str | None = None) -> list[dict[str, Any]]:
    args = ["--config", str(config), "list", "--json"] + (["--shard", shard] if shard else [])
    result = run("backupd", *args)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def store_files(store_dir: Path) -> list[str]:
    """Every file under a local store, relative, sorted (temporary files included)."""
    if not store_dir.exists():
        return []
    return sorted(p.relative_to(store_dir).as_posix() for p in store_dir.rglob("*") if p.is_file())


@contextmanager
def application_writes(server: Any, *, first_id: int, deletes: bool = False) -> Iterator[list[int]]:
    """Keep committing to the bucket tables of ``server`` in a thread while the block runs (an
    insert and an update per round, and a delete with ``deletes``), as a live application does.
    Yields a one-item list counting the rounds done; the writes start before the block does."""
    stop = threading.Event()
    done = [0]
    tables = [r[0] for r in server.query("SELECT TABLE_NAME FROM information_schema.TABLES "
                                         "WHERE TABLE_SCHEMA='app' AND TABLE_NAME LIKE 'bucket%'")]

    def writer() -> None:
        conn = server.connect(database="app")
        i = 0
        while not stop.is_set():
            table = tables[i % len(tables)]
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO `{table}` (id, data, created_at, updated_at) VALUES "
                            f"(%s, '{{\"w\": 1}}', NOW(6), NOW(6))", (first_id + i,))
                cur.execute(f"UPDATE `{table}` SET updated_at = NOW(6) ORDER BY id LIMIT 2")
                if deletes:
                    cur.execute(f"DELETE FROM `{table}` ORDER BY id LIMIT 1")
            i += 1
            done[0] = i
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        yield done
    finally:
        stop.set()
        thread.join()


def slow_mysqldump(tmp_path: Path, seconds: int) -> Path:
    """A mysqldump that streams 800 kB, then stalls ``seconds`` before the rest."""
    wrapper = tmp_path / f"slow-mysqldump-{seconds}"
    wrapper.write_text(f"#!/bin/sh\n[ \"$1\" = --version ] && exec mysqldump --version\n"
                       f"mysqldump \"$@\" | (head -c 800000; sleep {seconds}; cat)\n")
    wrapper.chmod(0o755)
    return wrapper


def daemon_config(tmp_path: Path, shards, *, schedule=None, retention=None, settings=None, audit=None,
                  extra: str = "", targets=None, stores=None) -> Path:
    """A daemon config; audits after backups and deep audits are off unless ``audit`` says so
    (most daemon tests count backups by the second)."""
    path = write_config(tmp_path / "backupd.toml", shards=shards, targets=targets, stores=stores,
                        settings={"compression_threads": 0, **(settings or {})})
    text = path.read_text()
    body = {"tick": "1s", "jitter": "0s", **(schedule or {})}
    text += "[schedule]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in body.items())
    audit = {"after_backup": False, "deep_every": 0, **(audit or {})}
    text += "[audit]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in audit.items()) + extra
    if retention:
        text += "[retention]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in retention.items())
    path.write_text(text)
    return path


class FlakyStore(Store):
    """A real store behind a flaky network: every other call fails with a transient error, half
    of those after the real store did the work (the answer was lost: a put that landed, a delete
    that happened, a listing cut short), so a retry repeats work that was already done.
    ``put_if_absent`` fails only before the work: a lost answer there is documented to read as
    "exists" (``backupd.stores.base``). ``injected`` counts the faults."""

    def __init__(self, inner: Store):
        self.inner = inner
        self.name = inner.name
        self.properties = inner.properties
        self.injected = 0
        self._calls = 0
        self._lock = threading.Lock()

    def _fault(self) -> str | None:
        """None, "before" or "after": calls 0, 4, 8... fail before, calls 2, 6, 10... after."""
        with self._lock:
            n, self._calls = self._calls, self._calls + 1
            fault = {0: "before", 2: "after"}.get(n % 4)
            self.injected += fault is not None
            return fault

    def _lost(self, what: str, key: str) -> TransientStoreError:
        return TransientStoreError(f"store {self.name}: {what} {key}: connection reset (injected)",
                                   store=self.name, key=key)

    def _call(self, what: str, key: str, operation: Callable[[], T], *, after_ok: bool = True) -> T:
        fault = self._fault()
        if fault == "before" or (fault == "after" and not after_ok):
            raise self._lost(what, key)
        result = operation()
        if fault == "after":
            raise self._lost(what, key)
        return result

    def put(self, key: str, payload: Payload) -> None:
        self._call("put", key, lambda: self.inner.put(key, payload))

    def put_if_absent(self, key: str, payload: Payload) -> bool:
        return self._call("create", key, lambda: self.inner.put_if_absent(key, payload), after_ok=False)

    def open(self, key: str) -> ObjectStream:
        fault = self._fault()
        if fault == "before":
            raise self._lost("open", key)
        stream = self.inner.open(key)
        if fault == "after":
            stream.close()
            raise self._lost("open", key)
        return stream

    def get(self, key: str) -> bytes:
        return self._call("get", key, lambda: self.inner.get(key))

    def stat(self, key: str) -> ObjectInfo:
        return self._call("stat", key, lambda: self.inner.stat(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        fault = self._fault()
        if fault == "before":
            raise self._lost("list", prefix)
        for n, info in enumerate(self.inner.list(prefix)):
            if fault == "after" and n == 1:
                raise self._lost("list", prefix)  # cut short after one object
            yield info

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.inner.delete(key))


class Archiver:
    """``backupd binlogs --shard ID`` in the background (stderr to a file): the archiver under test."""

    def __init__(self, config: Path, shard: str, log: Path):
        self.log = log
        self.handle = open(log, "ab")
        self.process = subprocess.Popen([str(BIN / "backupd"), "--config", str(config), "binlogs", "--shard", shard,
                                         "--json"], stdout=subprocess.PIPE, stderr=self.handle)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> dict[str, Any]:
        """SIGTERM, and the summary it printed (it must exit 0 within ``timeout``)."""
        self.process.send_signal(15)
        out, _ = self.process.communicate(timeout=timeout)
        self.handle.close()
        assert self.process.returncode == 0, f"archiver exited {self.process.returncode}:\n{self.text()}"
        return dict(json.loads(out))

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.handle.close()


def binlog_position(config: Path, shard: str) -> dict[str, Any] | None:
    """The shard's ``binlogs`` block of ``backupd status --json``."""
    result = run("backupd", "--config", str(config), "status", "--shard", shard, "--json")
    assert result.code == 0, result.stderr
    return dict(json.loads(result.stdout)[0]["binlogs"] or {}) or None


def wait_archived(config: Path, shard: str, server: Any, timeout: float = 30) -> None:
    """Wait until the shard's archive ends where the server's binlog does (every write archived)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        file, pos = server.query("SHOW MASTER STATUS")[0][:2]
        status = binlog_position(config, shard)
        if status and status["position"] == f"{file}:{pos}":
            return
        time.sleep(0.3)
    raise AssertionError(f"shard {shard}: the archive did not reach {file}:{pos}: {binlog_position(config, shard)}")


def whole_second_after_now() -> str:
    """A UTC time (whole second) after every commit so far and before any commit made >1.2 s later:
    waits until the next second has begun, returns it, and waits past it."""
    time.sleep(1.2)
    moment = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
    time.sleep(1.2)
    return stamp


def rewrite_parts(store_dir: Path, shard: str, backup_id: str, change: Callable[[bytes], bytes]) -> int:
    """Rewrite the SQL of every part of a backup in a local store through ``change`` (which must
    keep the length: sections record offsets), recompress it and record its new size and sha256
    in the manifest: a backup that lies consistently, which only verifying the data can catch.
    Returns how many parts changed."""
    manifest_path = store_dir / shard / backup_id / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    changed = 0
    for part in manifest["parts"]:
        path = store_dir / part["key"]
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
        new = change(raw)
        assert len(new) == len(raw), "the change must keep the length"
        if new == raw:
            continue
        data = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(new)
        path.write_bytes(data)
        part["size"], part["sha256"] = len(data), hashlib.sha256(data).hexdigest()
        changed += 1
    manifest_path.write_bytes(seal(manifest))
    return changed
