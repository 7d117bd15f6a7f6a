"""Reading the TOML configuration and validating it, section by section, with exact key paths."""

from __future__ import annotations

import configparser
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from backupd.config.sections import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    NAME_PATTERN,
    SHARD_PLACEHOLDER,
    STORE_TYPES,
    TARGET_SERVER_KEYS,
    AuditConfig,
    BinlogsConfig,
    CloudFilesStoreConfig,
    Config,
    DrillConfig,
    EncryptionConfig,
    EndpointConfig,
    LocalStoreConfig,
    MetricsConfig,
    RetentionConfig,
    S3StoreConfig,
    ScheduleConfig,
    SectionT,
    Settings,
    ShardConfig,
    StoreConfig,
    SwiftStoreConfig,
    TargetConfig,
    TargetShard,
)
from backupd.errors import ConfigError
from backupd.secrets import Secret, SecretRef


def resolve_config_path(cli_value: str | os.PathLike[str] | None) -> Path:
    """``--config`` if given, else ``$BACKUPD_CONFIG``, else ``config/backupd.toml``."""
    if cli_value:
        return Path(cli_value)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return DEFAULT_CONFIG


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, validate and resolve the configuration at ``path`` (see the module contract)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: configuration file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return _Loader(path).load(raw)


# Keys of which a section gives one: setting one in a shard or target replaces the default's other.
_ONE_OF = (("password_env", "password_file"),)


class _Loader:
    """Validates one parsed TOML document section by section, with exact key paths."""

    _SECTIONS = ("backupd", "stores", "shards", "targets", "schedule", "retention", "audit", "metrics", "drill",
                 "binlogs", "encryption", "shard_defaults", "target_defaults")

    def __init__(self, path: Path):
        self.path = path
        self.base = path.resolve().parent

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def private_file(self, key: str, path: Path, fd: int) -> None:
        """Refuse a secret file that its group or others may read or write (as ssh refuses a
        private key): the secret is already exposed, and using it would hide that."""
        mode = os.fstat(fd).st_mode
        if mode & 0o077:
            raise self.fail(key, f"{path} is readable or writable by group or others (mode {mode & 0o777:04o}): "
                                 f"chmod 600 {path}")

    def load(self, raw: dict[str, Any]) -> Config:
        for key in raw:
            if key not in self._SECTIONS:
                raise self.fail(key, f"unknown section (expected one of {', '.join(self._SECTIONS)})")
        settings = self.model(Settings, raw.get("backupd", {}), "backupd")
        stores = {name: self.store(name, body) for name, body in self.table(raw, "stores").items()}
        if not stores:
            raise self.fail("stores", "at least one store must be configured")
        shard_defaults = self.defaults(raw, "shard_defaults", ShardConfig)
        target_defaults = self.defaults(raw, "target_defaults", TargetConfig)
        shards = {sid: self.endpoint(ShardConfig, f"shards.{sid}", self.primary(f"shards.{sid}", body),
                                     inherited=self.inherit(shard_defaults, body, sid))
                  for sid, body in self.table(raw, "shards").items()}
        targets = {name: self.endpoint(TargetConfig, f"targets.{name}", body,
                                       inherited=self.inherit(target_defaults, body, None))
                   for name, body in self.table(raw, "targets").items()}
        for sid, shard in shards.items():
            self.check_store_refs(f"shards.{sid}.stores", shard.stores or [], stores)
            shards[sid] = self.shard_extras(f"shards.{sid}", shard)
        for name, target in targets.items():
            self.check_store_refs(f"targets.{name}.read_from", target.read_from, stores)
            targets[name] = self.target_extras(f"targets.{name}", target, set(shards))
        if settings.work_dir:
            settings = settings.model_copy(update={"work_dir": self.absolute(settings.work_dir)})
        schedule = self.model(ScheduleConfig, raw.get("schedule", {}), "schedule")
        for sid in schedule.shards:
            if sid not in shards:
                raise self.fail(f"schedule.shards.{sid}",
                                f"no shard named '{sid}' (configured shards: {', '.join(sorted(shards)) or 'none'})")
        if schedule.lock_store is not None:
            self.check_store_refs("schedule.lock_store", [schedule.lock_store], stores)
        retention = self.model(RetentionConfig, raw.get("retention", {}), "retention")
        audit = self.model(AuditConfig, raw.get("audit", {}), "audit")
        metrics = self.model(MetricsConfig, raw.get("metrics", {}), "metrics")
        if metrics.prometheus_textfile:
            metrics = metrics.model_copy(update={"prometheus_textfile": self.absolute(metrics.prometheus_textfile)})
        drill = self.model(DrillConfig, raw.get("drill", {}), "drill")
        if drill.target is not None and drill.target not in targets:
            raise self.fail("drill.target", f"no target named '{drill.target}' (configured targets: "
                                            f"{', '.join(sorted(targets)) or 'none'})")
        binlogs = self.model(BinlogsConfig, raw.get("binlogs", {}), "binlogs")
        encryption = self.encryption(self.model(EncryptionConfig, raw.get("encryption", {}), "encryption"))
        return Config(self.path, settings, stores, shards, targets, schedule, retention, audit, metrics, drill,
                      binlogs, encryption)

    def table(self, raw: dict[str, Any], section: str) -> dict[str, Any]:
        body = raw.get(section, {})
        if not isinstance(body, dict):
            raise self.fail(section, "expected a table of named entries")
        for name in body:
            if not NAME_PATTERN.match(name):
                raise self.fail(f"{section}.{name}", "names may use letters, digits, '_', '-', '.'")
            if not isinstance(body[name], dict):
                raise self.fail(f"{section}.{name}", "expected a table")
        return body

    def model(self, cls: type[SectionT], body: Any, key: str, *, inherited: dict[str, str] | None = None) -> SectionT:
        """``body`` validated as ``cls``; ``inherited`` maps the keys it took from a defaults
        section to that section's name, so an error in one names where it was written."""
        if not isinstance(body, dict):
            raise self.fail(key, "expected a table")
        try:
            return cls.model_validate(body)
        except ValidationError as exc:
            raise self.translate(exc, key, inherited or {}) from None

    def primary(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        """``primary = {host, port}`` (or ``{socket}``) is the shard's own host/port/socket."""
        primary = body.pop("primary", None)
        if primary is None:
            return body
        if not isinstance(primary, dict) or set(primary) - {"host", "port", "socket"}:
            raise self.fail(f"{key}.primary", "expected {host, port} or {socket}")
        both = {"host", "port", "socket"} & set(body)
        if both:
            raise self.fail(f"{key}.{sorted(both)[0]}", "give the primary's endpoint once: in primary = {...} or here")
        body.update(primary)
        return body

    def defaults(self, raw: dict[str, Any], section: str, cls: type[EndpointConfig]) -> dict[str, Any]:
        """``[shard_defaults]`` or ``[target_defaults]``: keys every shard (target) takes unless it
        sets them itself; each must be a key of a shard (target)."""
        body = raw.get(section, {})
        if not isinstance(body, dict):
            raise self.fail(section, "expected a table")
        for name in body:
            if name not in cls.model_fields:
                raise self.fail(f"{section}.{name}", "unknown key")
        return {"section": section, "body": body} if body else {}

    def inherit(self, defaults: dict[str, Any], body: Any, shard_id: str | None) -> dict[str, str]:
        """Fill ``body`` (in place) with the defaults it does not set, ``{shard}`` in a shard
        default's strings replaced by the shard's id; returns the inherited keys' origin."""
        if not defaults or not isinstance(body, dict):
            return {}
        origin = {}
        for name, value in defaults["body"].items():
            if name in body or any(name in pair and set(pair) & set(body) for pair in _ONE_OF):
                continue  # set here, or the section chose the other of a pair (its own password source)
            if shard_id is not None:
                value = _with_shard(value, shard_id)
            body[name] = value
            origin[name] = defaults["section"]
        return origin

    def translate(self, exc: ValidationError, prefix: str, inherited: dict[str, str] | None = None) -> ConfigError:
        error = exc.errors()[0]
        first = str(error["loc"][0]) if error["loc"] else ""
        if inherited and first in inherited:  # the bad value came from the defaults section
            key = ".".join([inherited[first], *(str(p) for p in error["loc"])]) + f" (inherited by {prefix})"
        else:
            key = ".".join([prefix, *(str(p) for p in error["loc"])])
        kind = error["type"]
        if kind == "extra_forbidden":
            problem = "unknown key"
        elif kind == "missing":
            problem = "missing required key"
        else:
            message = error["msg"].removeprefix("Value error, ")
            problem = f"{message[0].lower()}{message[1:]} (got {error.get('input')!r})"
        more = len(exc.errors()) - 1
        return self.fail(key, problem + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""))

    def store(self, name: str, body: dict[str, Any]) -> StoreConfig:
        kind = body.get("type")
        if kind is None:
            raise self.fail(f"stores.{name}.type", "missing required key")
        if kind not in STORE_TYPES:
            raise self.fail(f"stores.{name}.type",
                            f"unknown store type {kind!r} (expected one of {', '.join(STORE_TYPES)})")
        key = f"stores.{name}"
        store = self.model(STORE_TYPES[kind], body, key)
        if isinstance(store, LocalStoreConfig):
            store = store.model_copy(update={"path": self.absolute(store.path)})
        elif isinstance(store, S3StoreConfig):
            if bool(store.access_key_env) != bool(store.secret_key_env):
                raise self.fail(f"{key}.secret_key_env" if store.access_key_env else f"{key}.access_key_env",
                                "give both access_key_env and secret_key_env, or neither (boto3's chain)")
            if store.access_key_env and store.secret_key_env:
                store._access_key = self.env_secret(f"{key}.access_key_env", store.access_key_env)
                store._secret_key = self.env_secret(f"{key}.secret_key_env", store.secret_key_env)
        elif isinstance(store, CloudFilesStoreConfig):
            store = self.cloudfiles_credentials(key, store)
        elif isinstance(store, SwiftStoreConfig):
            store._key = self.env_secret(f"{key}.key_env", store.key_env)
        return store

    def env_secret(self, key: str, variable: str) -> SecretRef:
        """The secret in ``variable``, read when first needed (ConfigError naming ``key`` if unset)."""
        def read() -> Secret:
            value = os.environ.get(variable)
            if value is None:
                raise self.fail(key, f"environment variable {variable} is not set")
            return Secret(value)

        return SecretRef(read)

    def cloudfiles_credentials(self, key: str, store: CloudFilesStoreConfig) -> CloudFilesStoreConfig:
        """Username and API key from the keys, or a pyrax-style ``[rackspace_cloud]`` file."""
        if store.credentials_file:
            if store.api_key_env:
                raise self.fail(f"{key}.api_key_env", "give api_key_env or credentials_file, not both")
            path = self.absolute(store.credentials_file)
            store = store.model_copy(update={"credentials_file": path})
            username = store.username

            def read() -> tuple[str, Secret]:
                parser = configparser.ConfigParser()
                try:
                    with open(path, encoding="utf-8") as handle:
                        self.private_file(f"{key}.credentials_file", Path(path), handle.fileno())
                        parser.read_file(handle)
                except (OSError, configparser.Error) as exc:
                    why = getattr(exc, "strerror", None) or exc
                    raise self.fail(f"{key}.credentials_file", f"cannot read {path}: {why}") from None
                section = parser["rackspace_cloud"] if parser.has_section("rackspace_cloud") else None
                user = username or (section.get("username") if section is not None else None)
                if section is None or not section.get("api_key") or not user:
                    raise self.fail(f"{key}.credentials_file",
                                    f"{path} needs a [rackspace_cloud] section with username and api_key")
                return user, Secret(section["api_key"])

            store._from_file = read
            return store
        if not store.username:
            raise self.fail(f"{key}.username", "missing required key (or give credentials_file)")
        if not store.api_key_env:
            raise self.fail(f"{key}.api_key_env", "missing required key (or give credentials_file)")
        store._username = store.username
        store._api_key = self.env_secret(f"{key}.api_key_env", store.api_key_env)
        return store

    def shard_extras(self, key: str, shard: ShardConfig) -> ShardConfig:
        """Physical-backup and replication keys of a shard: checked, paths made absolute."""
        if shard.backup_from == "replica":
            if not shard.replicas:
                raise self.fail(f"{key}.replicas", 'missing required key (backup_from = "replica" backs up from '
                                "the first healthy one of them)")
            if shard.is_physical:
                for n, replica in enumerate(shard.replicas):
                    if not replica.datadir:
                        raise self.fail(f"{key}.replicas[{n}].datadir", f"missing required key (method = "
                                        f"{shard.method!r} copies the replica's datadir, so backups run on its host)")
            if shard.safe_slave_backup and not shard.heartbeat_table:
                raise self.fail(f"{key}.safe_slave_backup", "needs heartbeat_table: the backup tool stops the "
                                "replica's SQL thread, so its lag cannot be read at the snapshot")
        if shard.binlogs_from == "replica" and not shard.replicas:
            raise self.fail(f"{key}.replicas", 'missing required key (binlogs_from = "replica" archives the binlog '
                            "of the first of them that has log_slave_updates)")
        shard = shard.model_copy(update={"replicas": [
            r.model_copy(update={"socket": self.absolute(r.socket) if r.socket else None,
                                 "datadir": self.absolute(r.datadir) if r.datadir else None})
            for r in shard.replicas]})
        primary_backups = shard.backup_from == "primary" or shard.fallback_to_primary
        if shard.is_physical and primary_backups and not shard.datadir:
            raise self.fail(f"{key}.datadir", f"missing required key (method = {shard.method!r} "
                            "copies the server's datadir, so backups run on its host)")
        if shard.datadir:
            shard = shard.model_copy(update={"datadir": self.absolute(shard.datadir)})
        if bool(shard.replication_user) != bool(shard.replication_password_env):
            missing = "replication_password_env" if shard.replication_user else "replication_user"
            raise self.fail(f"{key}.{missing}", "give replication_user and replication_password_env together")
        return shard  # the replication password is read when a replica is attached (restore only)

    def target_extras(self, key: str, target: TargetConfig, shard_ids: set[str]) -> TargetConfig:
        """Physical-restore keys of a target: checked, paths made absolute."""
        if target.systemd_unit and (target.start_command or target.stop_command):
            raise self.fail(f"{key}.systemd_unit", "give systemd_unit or start_command/stop_command, not both")
        if bool(target.start_command) != bool(target.stop_command):
            missing = "stop_command" if target.start_command else "start_command"
            raise self.fail(f"{key}.{missing}", "give start_command and stop_command together")
        for name in ("start_command", "stop_command"):
            if getattr(target, name) == []:
                raise self.fail(f"{key}.{name}",
                                "expected a command line such as [\"systemctl\", \"start\", \"mariadb\"]")
        update = self.server_paths(target)
        for shard_id, server in target.shards.items():
            if shard_id not in shard_ids:
                known = ", ".join(sorted(shard_ids)) or "none"
                raise self.fail(f"{key}.shards.{shard_id}", f"no shard named '{shard_id}' (configured shards: {known})")
            paths = self.server_paths(server)
            if server.socket:
                paths["socket"] = self.absolute(server.socket)
            if paths:
                update.setdefault("shards", dict(target.shards))[shard_id] = server.model_copy(update=paths)
        for section, body in [(key, target), *((f"{key}.shards.{s}", v) for s, v in target.shards.items())]:
            for name in TARGET_SERVER_KEYS:
                value = getattr(body, name)
                for text in value if isinstance(value, list) else [value]:
                    if isinstance(text, str) and text.replace(SHARD_PLACEHOLDER, "").count("{"):
                        raise self.fail(f"{section}.{name}", f"only {SHARD_PLACEHOLDER} may be replaced (got {text!r})")
        return target.model_copy(update=update) if update else target

    def server_paths(self, server: TargetConfig | TargetShard) -> dict[str, Any]:
        """A target's (or one of its shard servers') paths made absolute against the config."""
        update: dict[str, Any] = {name: self.absolute(getattr(server, name))
                                  for name in ("datadir", "restore_dir") if getattr(server, name)}
        for name in ("start_command", "stop_command"):
            command = getattr(server, name)
            if command and command[0].startswith(("./", "../")):  # a program next to the config
                update[name] = [self.absolute(command[0]), *command[1:]]
        return update

    def endpoint(self, cls: type[EndpointConfig], key: str, body: dict[str, Any], *,
                 inherited: dict[str, str] | None = None) -> Any:
        endpoint = self.model(cls, body, key, inherited=inherited)
        if endpoint.password_env and endpoint.password_file:
            raise self.fail(f"{key}.password_file", "give password_env or password_file, not both")
        if endpoint.socket:
            endpoint = endpoint.model_copy(update={"socket": self.absolute(endpoint.socket)})
        endpoint._password = self.password(key, endpoint)
        return endpoint

    def password(self, key: str, endpoint: EndpointConfig) -> SecretRef | None:
        """Where the endpoint's password comes from; it is read when first needed."""
        if endpoint.password_env:
            return self.env_secret(f"{key}.password_env", endpoint.password_env)
        if endpoint.password_file:
            return self.secret_file(f"{key}.password_file", Path(self.absolute(endpoint.password_file)))
        return None

    def secret_file(self, key: str, file: Path) -> SecretRef:
        """The secret in ``file`` (one final newline dropped), read when first needed; refused
        unless only its owner may read it (``private_file``)."""
        def read() -> Secret:
            try:
                with open(file, encoding="utf-8") as handle:
                    self.private_file(key, file, handle.fileno())
                    text = handle.read()
            except OSError as exc:
                raise self.fail(key, f"cannot read {file}: {exc.strerror or exc}") from None
            return Secret(text[:-1] if text.endswith("\n") else text)

        return SecretRef(read)

    def encryption(self, section: EncryptionConfig) -> EncryptionConfig:
        """Where the private keys come from (read when first needed; a key file must be 0600)."""
        if section.private_key_file and section.private_key_env:
            raise self.fail("encryption.private_key_env", "give private_key_file or private_key_env, not both")
        if section.private_key_env:
            section._private_keys = self.env_secret("encryption.private_key_env", section.private_key_env)
        elif section.private_key_file:
            section = section.model_copy(update={"private_key_file": self.absolute(section.private_key_file)})
            section._private_keys = self.secret_file("encryption.private_key_file",
                                                     Path(section.private_key_file or ""))
        return section

    def check_store_refs(self, key: str, names: list[str], stores: Mapping[str, Any]) -> None:
        for name in names:
            if name not in stores:
                known = ", ".join(sorted(stores))
                raise self.fail(key, f"no store named '{name}' (configured stores: {known})")

    def absolute(self, value: str) -> str:
        path = Path(value).expanduser()
        return os.path.normpath(path if path.is_absolute() else self.base / path)


def _with_shard(value: Any, shard_id: str) -> Any:
    """``value`` with ``{shard}`` replaced in every string, also inside lists and tables
    (``replicas = [{host = "db-{shard}b"}]``)."""
    if isinstance(value, str):
        return value.replace(SHARD_PLACEHOLDER, shard_id)
    if isinstance(value, list):
        return [_with_shard(v, shard_id) for v in value]
    if isinstance(value, dict):
        return {k: _with_shard(v, shard_id) for k, v in value.items()}
    return value
