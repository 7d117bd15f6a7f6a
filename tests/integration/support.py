"""Helpers for integration tests: config files for test-bed servers, CLI runs, store peeking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.testbed.mariadb import MariaDBServer

BIN = Path(sys.executable).parent


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def _section(name: str, body: dict[str, Any]) -> str:
    lines = [f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in body.items() if v is not None]
    return "\n".join(lines) + "\n"


def endpoint(server: MariaDBServer, **extra: Any) -> dict[str, Any]:
    return {"socket": str(server.socket), "user": "root", **extra}


def write_config(path: Path, *, shards: dict[str, MariaDBServer | dict[str, Any]],
                 targets: dict[str, MariaDBServer | dict[str, Any]] | None = None,
                 store_dir: Path | None = None, stores: dict[str, dict[str, Any]] | None = None,
                 settings: dict[str, Any] | None = None) -> Path:
    """Write a backupd config for test-bed servers; returns ``path``."""
    stores = stores or {"local": {"type": "local", "path": str(store_dir or path.parent / "store")}}
    text = _section("backupd", {"part_size": "64KiB", **(settings or {})})
    for name, body in stores.items():
        text += _section(f"stores.{name}", body)
    for sid, shard in shards.items():
        text += _section(f"shards.{sid}", endpoint(shard) if isinstance(shard, MariaDBServer) else shard)
    for name, target in (targets or {}).items():
        body = endpoint(target, read_from=list(stores)) if isinstance(target, MariaDBServer) else target
        text += _section(f"targets.{name}", body)
    path.write_text(text)
    return path


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
