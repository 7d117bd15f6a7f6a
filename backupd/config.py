"""Loading and validating the TOML configuration, once, into frozen typed objects.

Contract: ``load_config(path)`` either returns a fully validated ``Config`` (every password
resolved, every cross reference checked, relative paths made absolute against the config file's
folder) or raises ``ConfigError`` whose one-line message names the file, the key and the problem,
e.g. ``config/backupd.toml: shards.7.port: expected an integer, got 'abc'``.
"""

from __future__ import annotations

import configparser
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError

from backupd.errors import ConfigError, UsageError
from backupd.secrets import Secret
from backupd.units import parse_duration, parse_size

DEFAULT_CONFIG = Path("config/backupd.toml")
CONFIG_ENV = "BACKUPD_CONFIG"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _size(value: Any) -> Any:
    return parse_size(value) if isinstance(value, (str, int)) else value


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, (str, int, float)) else value


Size = Annotated[int, BeforeValidator(_size)]
Duration = Annotated[float, BeforeValidator(_duration)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


SectionT = TypeVar("SectionT", bound=_Section)


class EndpointConfig(_Section):
    """How to reach one MySQL/MariaDB server: TCP (host, port) or a unix socket."""

    host: str = "127.0.0.1"
    port: Port = 3306
    socket: str | None = None
    user: str
    password_env: str | None = None
    password_file: str | None = None
    connect_timeout: Duration = 10.0
    _password: Secret | None = PrivateAttr(default=None)

    @property
    def password(self) -> Secret | None:
        """The resolved password (None when the account has none)."""
        return self._password

    def describe(self) -> str:
        """Where this endpoint is, for messages: ``socket /x.sock`` or ``127.0.0.1:3306``."""
        return f"socket {self.socket}" if self.socket else f"{self.host}:{self.port}"


class ShardConfig(EndpointConfig):
    """One shard's primary (the server backups are taken from)."""

    databases: list[str] | None = None
    # "physical" picks mariabackup or xtrabackup from the server's vendor at backup time.
    method: Literal["mysqldump", "physical", "mariabackup", "xtrabackup"] = "mysqldump"
    datadir: str | None = None  # physical backups read it: they run on the shard's host
    reference: Literal["digest", "counts"] = "digest"
    stores: list[str] | None = None
    lock_wait_timeout: Duration = 30.0
    incremental_columns: dict[str, str] | None = None  # replaces [backupd] incremental_columns
    # The account replicas of this shard's primary connect with (restore --replica-of); the
    # password is read from the environment only then, so backup hosts need not have it.
    replication_user: str | None = None
    replication_password_env: str | None = None

    @property
    def is_physical(self) -> bool:
        return self.method != "mysqldump"


class TargetConfig(EndpointConfig):
    """A server restores may write into, and the stores it reads from, in preference order."""

    read_from: list[str] = Field(min_length=1)
    write_binlog: bool = False
    # Physical restores replace the server's datadir: where it is, where to extract and
    # prepare (a scratch folder under restore_dir), and how to stop and start the server
    # (commands, each an argv list that returns once the server is down / launched, or a
    # systemd unit).
    datadir: str | None = None
    restore_dir: str | None = None
    stop_command: list[str] | None = None
    start_command: list[str] | None = None
    systemd_unit: str | None = None
    start_timeout: Duration = Field(default=600.0, gt=0)


class _StoreSection(_Section):
    """Keys every store type accepts."""

    prefix: str = ""
    retry_budget: Duration = 120.0  # total time one operation may spend retrying transient errors
    connections: int = Field(default=4, ge=1, le=64)


class LocalStoreConfig(_StoreSection):
    """A store on a local (or mounted) filesystem."""

    type: Literal["local"]
    path: str


class S3StoreConfig(_StoreSection):
    """Amazon S3 or any S3-compatible server (boto3)."""

    type: Literal["s3"]
    bucket: str
    region: str = "us-east-1"
    endpoint_url: str | None = None
    access_key_env: str | None = None
    secret_key_env: str | None = None
    server_side_encryption: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    checksum_mode: Literal["when_supported", "when_required"] = "when_supported"
    # AWS S3 (and moto) create conditionally (If-None-Match) atomically; set false for
    # S3-compatible servers that do not (Swift's s3api), so backupd knows its locks are best-effort.
    atomic_create: bool = True
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    connect_timeout: Duration = 10.0
    read_timeout: Duration = 60.0
    _access_key: Secret | None = PrivateAttr(default=None)
    _secret_key: Secret | None = PrivateAttr(default=None)

    @property
    def credentials(self) -> tuple[Secret, Secret] | None:
        """Explicit keys, or None to use boto3's standard credential chain."""
        if self._access_key is None or self._secret_key is None:
            return None
        return self._access_key, self._secret_key


class CloudFilesStoreConfig(_StoreSection):
    """Rackspace Cloud Files (libcloud CLOUDFILES driver, Rackspace identity v2.0)."""

    type: Literal["cloudfiles"]
    username: str | None = None
    api_key_env: str | None = None
    credentials_file: str | None = None
    region: Literal["DFW", "ORD", "IAD", "LON", "SYD", "HKG"]
    container: str
    auth_url: str | None = None
    timeout: Duration = 60.0
    _username: str | None = PrivateAttr(default=None)
    _api_key: Secret | None = PrivateAttr(default=None)

    @property
    def credentials(self) -> tuple[str, Secret]:
        assert self._username is not None and self._api_key is not None
        return self._username, self._api_key


class SwiftStoreConfig(_StoreSection):
    """Generic OpenStack Swift (libcloud OPENSTACK_SWIFT driver), tempauth or Keystone."""

    type: Literal["swift"]
    auth_url: str
    auth_version: Literal["1.0", "2.0", "2.0_password", "3.x_password"] = "1.0"
    user: str
    key_env: str
    container: str
    storage_url: str | None = None
    region: str | None = None
    tenant_name: str | None = None
    domain_name: str = "Default"
    timeout: Duration = 60.0
    _key: Secret | None = PrivateAttr(default=None)

    @property
    def key(self) -> Secret:
        assert self._key is not None
        return self._key


StoreConfig = LocalStoreConfig | S3StoreConfig | CloudFilesStoreConfig | SwiftStoreConfig
STORE_TYPES: dict[str, type[LocalStoreConfig] | type[S3StoreConfig] | type[CloudFilesStoreConfig]
                  | type[SwiftStoreConfig]] = {
    "local": LocalStoreConfig, "s3": S3StoreConfig, "cloudfiles": CloudFilesStoreConfig,
    "swift": SwiftStoreConfig,
}


class Settings(_Section):
    """The ``[backupd]`` section: pipeline tuning shared by every shard."""

    part_size: Size = Field(default=64 * 1024**2, ge=64 * 1024, le=4 * 1024**3)
    compression_level: int = Field(default=3, ge=1, le=22)
    compression_threads: int = Field(default=2, ge=0, le=64)
    parts_in_flight: int = Field(default=1, ge=1, le=16)
    mysqldump: str = "mysqldump"
    mysql: str = "mysql"
    mariabackup: str = "mariabackup"
    mbstream: str = "mbstream"
    zstd: str = "zstd"  # physical restores decompress in this process in parallel (python-zstandard if absent)
    xtrabackup: str = "xtrabackup"
    xbstream: str = "xbstream"
    prepare_memory: Size = Field(default=256 * 1024**2, ge=16 * 1024**2)  # --use-memory of --prepare
    work_dir: str | None = None
    # Which column marks a row as changed, by "database.table" pattern (shell-style, first match
    # wins); "" copies matching tables whole in every incremental.
    incremental_columns: dict[str, str] = Field(default_factory=lambda: {"*": "updated_at"})


class ShardSchedule(_Section):
    """Per-shard overrides of the schedule (``[schedule.shards.ID]``)."""

    enabled: bool = True
    full_every: Duration | None = None
    incremental_every: Duration | None = None
    incremental_window: Duration | None = None


class ScheduleConfig(_Section):
    """The ``[schedule]`` section: when the daemon backs up, and how it shares the fleet."""

    full_every: Duration = Field(default=8 * 3600.0, gt=0)
    incremental_every: Duration = Field(default=3600.0, ge=0)  # 0: no incrementals
    incremental_window: Duration = Field(default=24 * 3600.0, gt=0)
    concurrency: int = Field(default=2, ge=1, le=64)
    jitter: Duration = Field(default=300.0, ge=0)
    shutdown_grace: Duration = Field(default=300.0, ge=0)
    lock_ttl: Duration = Field(default=600.0, ge=10)
    lock_store: str | None = None
    tick: Duration = Field(default=30.0, gt=0)
    catalog_refresh: Duration = Field(default=300.0, gt=0)
    retry_after: Duration = Field(default=300.0, gt=0)  # longest wait before retrying a failed backup
    shards: dict[str, ShardSchedule] = Field(default_factory=dict)

    def for_shard(self, shard_id: str) -> EffectiveSchedule:
        """This shard's schedule, its overrides applied."""
        override = self.shards.get(shard_id, ShardSchedule())
        return EffectiveSchedule(
            enabled=override.enabled,
            full_every=override.full_every or self.full_every,
            incremental_every=self.incremental_every if override.incremental_every is None
            else override.incremental_every,
            incremental_window=override.incremental_window or self.incremental_window)


@dataclass(frozen=True)
class EffectiveSchedule:
    enabled: bool
    full_every: float
    incremental_every: float
    incremental_window: float


class RetentionConfig(_Section):
    """The ``[retention]`` section (see ``backupd.policy.retention``)."""

    full_days: float = Field(default=7, ge=0)
    keep_daily: int = Field(default=0, ge=0)
    keep_weekly: int = Field(default=0, ge=0)


class AuditConfig(_Section):
    """The ``[audit]`` section (see ``backupd.ops.audit``)."""

    grace: Duration = Field(default=3600.0, ge=0)  # RPO slack on top of full_every / incremental_every
    orphan_age: Duration = Field(default=86400.0, ge=0)  # uncommitted parts older than this are reported
    # What the daemon runs: a quick audit of the shard after each backup, a deep audit of a
    # sample every deep_every (0: never).
    after_backup: bool = True
    deep_every: Duration = Field(default=86400.0, ge=0)
    deep_sample: float = Field(default=10.0, gt=0, le=100)


class DrillConfig(_Section):
    """The ``[drill]`` section (see ``restore.drill``)."""

    target: str | None = None  # a scratch [targets.NAME]: replaced at every drill
    every: Duration = Field(default=7 * 86400.0, ge=0)  # how often the daemon drills each shard (0: never)


class MetricsConfig(_Section):
    """The ``[metrics]`` section (see ``backupd.metrics``; metric names in the README)."""

    graphite: Annotated[str, Field(pattern=r"^(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9_.-]+):\d{1,5}$")] | None = None
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")] = "backupd"
    interval: Duration = Field(default=60.0, ge=1)  # how often the daemon sends the ages of the newest backups
    timeout: Duration = Field(default=5.0, gt=0)
    prometheus_textfile: str | None = None
    prometheus_port: Port | None = None
    prometheus_address: str = "127.0.0.1"


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    path: Path
    settings: Settings
    stores: Mapping[str, StoreConfig]
    shards: Mapping[str, ShardConfig]
    targets: Mapping[str, TargetConfig]
    schedule: ScheduleConfig = ScheduleConfig()
    retention: RetentionConfig = RetentionConfig()
    audit: AuditConfig = AuditConfig()
    metrics: MetricsConfig = MetricsConfig()
    drill: DrillConfig = DrillConfig()

    def shard(self, shard_id: str) -> ShardConfig:
        """Return shard ``shard_id`` or raise UsageError listing the known ones."""
        try:
            return self.shards[shard_id]
        except KeyError:
            known = ", ".join(sorted(self.shards)) or "none"
            raise UsageError(f"unknown shard '{shard_id}' (configured shards: {known})") from None

    def target(self, name: str) -> TargetConfig:
        """Return target ``name`` or raise UsageError listing the known ones."""
        try:
            return self.targets[name]
        except KeyError:
            known = ", ".join(sorted(self.targets)) or "none"
            raise UsageError(f"unknown target '{name}' (configured targets: {known})") from None

    def shard_stores(self, shard_id: str) -> list[str]:
        """The names of the stores shard ``shard_id`` is backed up to (default: all)."""
        return list(self.shard(shard_id).stores or self.stores)

    def lock_stores(self, shard_id: str) -> list[str]:
        """Where the shard's backup lock may live, in order (``backupd.backup.lease.ShardLock``):
        ``[schedule] lock_store`` if set, then the shard's stores."""
        preferred = [self.schedule.lock_store] if self.schedule.lock_store else []
        return list(dict.fromkeys(preferred + self.shard_stores(shard_id)))

    def incremental_columns(self, shard_id: str) -> Mapping[str, str]:
        return self.shard(shard_id).incremental_columns or self.settings.incremental_columns


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


class _Loader:
    """Validates one parsed TOML document section by section, with exact key paths."""

    _SECTIONS = ("backupd", "stores", "shards", "targets", "schedule", "retention", "audit", "metrics", "drill")

    def __init__(self, path: Path):
        self.path = path
        self.base = path.resolve().parent

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def load(self, raw: dict[str, Any]) -> Config:
        for key in raw:
            if key not in self._SECTIONS:
                raise self.fail(key, f"unknown section (expected one of {', '.join(self._SECTIONS)})")
        settings = self.model(Settings, raw.get("backupd", {}), "backupd")
        stores = {name: self.store(name, body) for name, body in self.table(raw, "stores").items()}
        if not stores:
            raise self.fail("stores", "at least one store must be configured")
        shards = {sid: self.endpoint(ShardConfig, f"shards.{sid}", body)
                  for sid, body in self.table(raw, "shards").items()}
        targets = {name: self.endpoint(TargetConfig, f"targets.{name}", body)
                   for name, body in self.table(raw, "targets").items()}
        for sid, shard in shards.items():
            self.check_store_refs(f"shards.{sid}.stores", shard.stores or [], stores)
            shards[sid] = self.shard_extras(f"shards.{sid}", shard)
        for name, target in targets.items():
            self.check_store_refs(f"targets.{name}.read_from", target.read_from, stores)
            targets[name] = self.target_extras(f"targets.{name}", target)
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
        return Config(self.path, settings, stores, shards, targets, schedule, retention, audit, metrics, drill)

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

    def model(self, cls: type[SectionT], body: Any, key: str) -> SectionT:
        if not isinstance(body, dict):
            raise self.fail(key, "expected a table")
        try:
            return cls.model_validate(body)
        except ValidationError as exc:
            raise self.translate(exc, key) from None

    def translate(self, exc: ValidationError, prefix: str) -> ConfigError:
        error = exc.errors()[0]
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

    def env_secret(self, key: str, variable: str) -> Secret:
        value = os.environ.get(variable)
        if value is None:
            raise self.fail(key, f"environment variable {variable} is not set")
        return Secret(value)

    def cloudfiles_credentials(self, key: str, store: CloudFilesStoreConfig) -> CloudFilesStoreConfig:
        """Username and API key from the keys, or a pyrax-style ``[rackspace_cloud]`` file."""
        if store.credentials_file:
            if store.api_key_env:
                raise self.fail(f"{key}.api_key_env", "give api_key_env or credentials_file, not both")
            path = self.absolute(store.credentials_file)
            store = store.model_copy(update={"credentials_file": path})
            parser = configparser.ConfigParser()
            try:
                with open(path, encoding="utf-8") as handle:
                    parser.read_file(handle)
            except (OSError, configparser.Error) as exc:
                why = getattr(exc, "strerror", None) or exc
                raise self.fail(f"{key}.credentials_file", f"cannot read {path}: {why}") from None
            section = parser["rackspace_cloud"] if parser.has_section("rackspace_cloud") else None
            if section is None or not section.get("api_key") or not (section.get("username") or store.username):
                raise self.fail(f"{key}.credentials_file",
                                f"{store.credentials_file} needs a [rackspace_cloud] section with username and api_key")
            store._username = store.username or section.get("username")
            store._api_key = Secret(section["api_key"])
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
        if shard.is_physical and not shard.datadir:
            raise self.fail(f"{key}.datadir", f"missing required key (method = {shard.method!r} "
                            "copies the server's datadir, so backups run on its host)")
        if shard.datadir:
            shard = shard.model_copy(update={"datadir": self.absolute(shard.datadir)})
        if bool(shard.replication_user) != bool(shard.replication_password_env):
            missing = "replication_password_env" if shard.replication_user else "replication_user"
            raise self.fail(f"{key}.{missing}", "give replication_user and replication_password_env together")
        return shard  # the replication password is read when a replica is attached (restore only)

    def target_extras(self, key: str, target: TargetConfig) -> TargetConfig:
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
        update: dict[str, Any] = {name: self.absolute(getattr(target, name))
                                  for name in ("datadir", "restore_dir") if getattr(target, name)}
        for name in ("start_command", "stop_command"):
            command = getattr(target, name)
            if command and command[0].startswith(("./", "../")):  # a program next to the config
                update[name] = [self.absolute(command[0]), *command[1:]]
        return target.model_copy(update=update) if update else target

    def endpoint(self, cls: type[EndpointConfig], key: str, body: dict[str, Any]) -> Any:
        endpoint = self.model(cls, body, key)
        if endpoint.password_env and endpoint.password_file:
            raise self.fail(f"{key}.password_file", "give password_env or password_file, not both")
        if endpoint.socket:
            endpoint = endpoint.model_copy(update={"socket": self.absolute(endpoint.socket)})
        endpoint._password = self.password(key, endpoint)
        return endpoint

    def password(self, key: str, endpoint: EndpointConfig) -> Secret | None:
        if endpoint.password_env:
            return self.env_secret(f"{key}.password_env", endpoint.password_env)
        if endpoint.password_file:
            file = Path(self.absolute(endpoint.password_file))
            try:
                text = file.read_text(encoding="utf-8")
            except OSError as exc:
                raise self.fail(f"{key}.password_file",
                                f"cannot read {file}: {exc.strerror or exc}") from None
            return Secret(text[:-1] if text.endswith("\n") else text)
        return None

    def check_store_refs(self, key: str, names: list[str], stores: Mapping[str, Any]) -> None:
        for name in names:
            if name not in stores:
                known = ", ".join(sorted(stores))
                raise self.fail(key, f"no store named '{name}' (configured stores: {known})")

    def absolute(self, value: str) -> str:
        path = Path(value).expanduser()
        return os.path.normpath(path if path.is_absolute() else self.base / path)
