"""Helpers for integration tests: config files for test-bed servers, CLI runs, store peeking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.testbed.config import write_config as testbed_write_config

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
    """Run the ``backupd`` or ``restore`` console script."""
    proc = subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    return Run(proc.returncode, proc.stdout, proc.stderr)


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
