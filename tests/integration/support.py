"""Helpers for integration tests: config files for test-bed servers, CLI runs, store peeking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
