"""backupd configuration files for test-bed servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.testbed.mariadb import MariaDBServer


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


def _section(name: str, body: dict[str, Any]) -> str:
    """A TOML table; a value that is a table of tables (``shards = {"1": {...}}``) becomes sub-tables."""
    tables = {k: v for k, v in body.items() if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values())}
    lines = [f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in body.items() if v is not None and k not in tables]
    text = "\n".join(lines) + "\n"
    for key, entries in tables.items():
        text += "".join(_section(f"{name}.{key}.{entry}", sub) for entry, sub in entries.items())
    return text


def endpoint(server: MariaDBServer, **extra: Any) -> dict[str, Any]:
    """A ``[shards.*]``/``[targets.*]`` body reaching ``server`` over its socket as root."""
    return {"socket": str(server.socket), "user": "root", **extra}


def physical_target(server: MariaDBServer, *, read_from: list[str], restore_dir: Path,
                    **extra: Any) -> dict[str, Any]:
    """A ``[targets.*]`` body that physical restores can use: datadir, scratch folder, and the
    test bed's start/stop commands for ``server``."""
    start, stop = server.control_commands()
    return endpoint(server, read_from=read_from, datadir=str(server.datadir),
                    restore_dir=str(restore_dir), start_command=start, stop_command=stop, **extra)


def write_config(path: Path, *, shards: dict[str, MariaDBServer | dict[str, Any]],
                 targets: dict[str, MariaDBServer | dict[str, Any]] | None = None,
                 store_dir: Path | None = None, stores: dict[str, dict[str, Any]] | None = None,
                 settings: dict[str, Any] | None = None) -> Path:
    """Write a backupd config for test-bed servers (a server or a ready body per entry).

    Default store: one local store at ``store_dir`` (default ``<path's folder>/store``); targets
    given as servers read from every store. Returns ``path``.
    """
    stores = stores or {"local": {"type": "local", "path": str(store_dir or path.parent / "store")}}
    text = _section("backupd", settings or {})
    for name, body in stores.items():
        text += _section(f"stores.{name}", body)
    for sid, shard in shards.items():
        text += _section(f"shards.{sid}", endpoint(shard) if isinstance(shard, MariaDBServer) else shard)
    for name, target in (targets or {}).items():
        body = endpoint(target, read_from=list(stores)) if isinstance(target, MariaDBServer) else target
        text += _section(f"targets.{name}", body)
    path.write_text(text)
    return path
