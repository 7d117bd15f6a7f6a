"""``backupd grants``: the statements that create one of backupd's accounts with exactly the
privileges its jobs need (``backupd.mysql.grants`` decides them; this module finds the account,
its password and the server's vendor and version from the configuration)."""

from __future__ import annotations

import os

from backupd.config import Config, EndpointConfig
from backupd.errors import ConfigError, ServerError, UsageError
from backupd.mysql import grants as g
from backupd.mysql.connection import connect, server_info

PLACES = {"backup": "on the shard's primary (its replicas receive it through replication)",
          "replication": "on the shard's primary"}


def account_grants(config: Config, shard_id: str, role: g.Role, *, target_name: str | None = None,
                   host: str = "%", server_version: str | None = None) -> list[str]:
    """The script for ``role``'s account of shard ``shard_id``: a header naming the account and
    the server, ``CREATE USER``, the ``GRANT``s each with why, and what was left out. The
    server's vendor and version come from ``server_version`` (``mariadb-10.11.6``) or from the
    server, asked through the configured account. Raises ``UsageError``/``ConfigError`` naming
    the option or key, ``ServerError`` when the server cannot be asked."""
    shard = config.shard(shard_id)
    if target_name is not None and role != "restore":
        raise UsageError(f"--target {target_name}: only --role restore grants a target's account")
    needs: g.Needs
    endpoint: EndpointConfig = shard
    label, where = f"shard {shard_id}", PLACES.get(role, "")
    if role == "restore":
        needs = g.restore_needs(config, shard_id, target_name)
        assert target_name is not None
        target = config.target(target_name)
        endpoint, label = target.for_shard(shard_id), f"target {target_name}"
        user, key = target.user, f"targets.{target_name}.user"
        password = target.password.reveal() if target.password is not None else None
        where = f"on target {target_name}'s server for shard {shard_id}"
    elif role == "replication":
        needs, user, key = g.ReplicationNeeds(), g.replication_user(config, shard_id), \
            f"shards.{shard_id}.replication_user"
        password = _replication_password(config, shard_id)
    else:
        needs, user, key = g.backup_needs(config, shard_id), shard.user, f"shards.{shard_id}.user"
        password = shard.password.reveal() if shard.password is not None else None
    server = g.parse_server_version(server_version) if server_version is not None else _ask(endpoint, label)
    version = ".".join(map(str, server.version))
    lines = [f"-- backupd grants --role {role} for shard {shard_id}: {key} {g.account_name(user, host)} on "
             f"{server.label}", f"-- run as an administrator {where}"]
    lines += g.grant_statements(server.vendor, version, role, user=user, host=host, needs=needs,
                                password_hash=g.native_password_hash(password) if password else None)
    lines += [f"-- {note}" for note in g.left_out(server.vendor, version, role, needs)]
    return lines


def _replication_password(config: Config, shard_id: str) -> str | None:
    variable = config.shard(shard_id).replication_password_env
    if variable is None:
        return None
    if variable not in os.environ:
        raise ConfigError(f"{config.path}: shards.{shard_id}.replication_password_env: environment variable "
                          f"{variable} is not set")
    return os.environ[variable]


def _ask(endpoint: EndpointConfig, label: str) -> g.Server:
    """The server's vendor and version, through the configured account."""
    try:
        conn = connect(endpoint, label=label)
    except ServerError as exc:
        exc.hint = ("the account may not exist yet: pass --server-version VENDOR-VERSION (e.g. mariadb-10.11.6), "
                    "or use a config whose account can log in")
        raise
    try:
        info = server_info(conn, label=label)
    finally:
        conn.close()
    return g.server(info.vendor, info.version)
