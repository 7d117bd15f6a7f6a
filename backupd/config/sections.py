"""The configuration's sections as frozen, typed objects (pydantic models, strict), and
``Config``, the whole validated configuration. ``backupd.config.loader`` builds them from TOML."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr

from backupd.errors import UsageError
from backupd.secrets import Secret, SecretRef, reveal
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
    _password: Secret | SecretRef | None = PrivateAttr(default=None)

    @property
    def password(self) -> Secret | None:
        """The password (None when the account has none), read from its environment variable or
        file the first time it is needed; raises ConfigError naming the key if it cannot be."""
        return reveal(self._password)

    def describe(self) -> str:
        """Where this endpoint is, for messages: ``socket /x.sock`` or ``127.0.0.1:3306``."""
        return f"socket {self.socket}" if self.socket else f"{self.host}:{self.port}"


class ReplicaEndpoint(_Section):
    """A replica of a shard's primary that backups may be taken from (the shard's account).
    ``datadir``: the replica's datadir, for physical backups (backupd runs on its host)."""

    host: str = "127.0.0.1"
    port: Port = 3306
    socket: str | None = None
    datadir: str | None = None

    def describe(self) -> str:
        return f"socket {self.socket}" if self.socket else f"{self.host}:{self.port}"


class ShardConfig(EndpointConfig):
    """One shard: its primary (``host``/``port``/``socket``, or ``primary = {host, port}``) and
    where backups are taken from: the primary, or (``backup_from = "replica"``) the first of
    ``replicas`` whose replication runs and lags at most ``max_lag`` (else the primary with
    ``fallback_to_primary``, else the backup is refused; ``lag_policy = "warn"`` takes it anyway,
    saying so). ``heartbeat_table`` ("db.table", a ``ts`` column the primary updates every
    second, as pt-heartbeat does): where a replica's data time is read; without it, from the
    replication lag the replica reports."""

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
    binlogs: bool | None = None  # archive this shard's binlogs (None: [binlogs] enabled decides)
    backup_from: Literal["primary", "replica"] = "primary"
    replicas: list[ReplicaEndpoint] = []
    fallback_to_primary: bool = False
    max_lag: Duration = Field(default=300.0, gt=0)
    lag_policy: Literal["refuse", "warn"] = "refuse"
    heartbeat_table: Annotated[str, Field(pattern=r"^[A-Za-z0-9_$]+\.[A-Za-z0-9_$]+$")] | None = None
    # physical backups on a replica: mariabackup/xtrabackup --safe-slave-backup (stops the SQL
    # thread until no replicated temporary table is open; for statement-based replication).
    # Without it, a replica with open replicated temporary tables at the snapshot is refused.
    safe_slave_backup: bool = False
    # the binlog archiver reads the primary, or the first of ``replicas`` that writes what it
    # applies to its own binlog (log_slave_updates); the archive follows that one server
    binlogs_from: Literal["primary", "replica"] = "primary"

    def on(self, replica: ReplicaEndpoint) -> ShardConfig:
        """This shard's account on ``replica`` (the same user and password; its datadir)."""
        copy = self.model_copy(update={"host": replica.host, "port": replica.port, "socket": replica.socket,
                                       "datadir": replica.datadir})
        copy._password = self._password
        return copy

    @property
    def is_physical(self) -> bool:
        return self.method != "mysqldump"


SHARD_PLACEHOLDER = "{shard}"
# The keys of a target that may name a shard's own server: overridden per shard, or templated.
TARGET_SERVER_KEYS = ("host", "port", "socket", "datadir", "restore_dir", "stop_command", "start_command",
                      "systemd_unit")


class TargetShard(_Section):
    """One shard's server in a target that holds several (``[targets.NAME.shards.ID]``): these keys
    replace the target's for that shard; credentials and ``read_from`` stay the target's."""

    host: str | None = None
    port: Port | None = None
    socket: str | None = None
    datadir: str | None = None
    restore_dir: str | None = None
    stop_command: list[str] | None = None
    start_command: list[str] | None = None
    systemd_unit: str | None = None


class TargetConfig(EndpointConfig):
    """Where restores may write, and the stores they read from, in preference order.

    A target is one server, or one per shard: per-shard sections (``shards``), or ``{shard}`` in
    ``host``, ``socket``, ``datadir``, ``restore_dir``, ``systemd_unit`` or a command
    (``host = "db-{shard}.us-west.internal"``); ``for_shard`` gives a shard's own endpoint.
    """

    shards: dict[str, TargetShard] = Field(default_factory=dict)
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

    def for_shard(self, shard_id: str, *, host: str | None = None, port: int | None = None) -> TargetConfig:
        """The target as it serves ``shard_id``: its ``[targets.NAME.shards.ID]`` keys, ``{shard}``
        replaced by the id, and ``host``/``port`` (``restore --target-host``) over everything."""
        override = self.shards.get(shard_id)
        update: dict[str, Any] = override.model_dump(exclude_none=True) if override else {}
        for key in TARGET_SERVER_KEYS:
            value = update.get(key, getattr(self, key))
            if isinstance(value, str) and SHARD_PLACEHOLDER in value:
                update[key] = value.replace(SHARD_PLACEHOLDER, shard_id)
            elif isinstance(value, list) and any(SHARD_PLACEHOLDER in arg for arg in value):
                update[key] = [arg.replace(SHARD_PLACEHOLDER, shard_id) for arg in value]
        if host is not None:
            update.update(host=host, socket=None, **({"port": port} if port is not None else {}))
        return self.model_copy(update=update) if update else self

    @property
    def per_shard(self) -> bool:
        """Whether the target maps shards to servers of their own."""
        return bool(self.shards) or any(SHARD_PLACEHOLDER in str(getattr(self, key)) for key in TARGET_SERVER_KEYS)


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
    connect_timeout: Duration = Field(default=3.0, gt=0)    # a dead endpoint is known in seconds
    answer_timeout: Duration = Field(default=5.0, gt=0)     # small requests: no answer by then = unreachable
    read_timeout: Duration = Field(default=15.0, gt=0)      # transfers: the longest a part may go without a byte
    _access_key: Secret | SecretRef | None = PrivateAttr(default=None)
    _secret_key: Secret | SecretRef | None = PrivateAttr(default=None)

    @property
    def credentials(self) -> tuple[Secret, Secret] | None:
        """Explicit keys (read when first needed), or None to use boto3's standard chain."""
        access, secret = reveal(self._access_key), reveal(self._secret_key)
        if access is None or secret is None:
            return None
        return access, secret


class CloudFilesStoreConfig(_StoreSection):
    """Rackspace Cloud Files (libcloud CLOUDFILES driver, Rackspace identity v2.0)."""

    type: Literal["cloudfiles"]
    username: str | None = None
    api_key_env: str | None = None
    credentials_file: str | None = None
    region: Literal["DFW", "ORD", "IAD", "LON", "SYD", "HKG"]
    container: str
    auth_url: str | None = None
    connect_timeout: Duration = Field(default=3.0, gt=0)
    answer_timeout: Duration = Field(default=5.0, gt=0)
    timeout: Duration = Field(default=15.0, gt=0)  # transfers: the longest a part may go without a byte
    _username: str | None = PrivateAttr(default=None)
    _api_key: Secret | SecretRef | None = PrivateAttr(default=None)
    _from_file: Callable[[], tuple[str, Secret]] | None = PrivateAttr(default=None)

    @property
    def credentials(self) -> tuple[str, Secret]:
        """Username and API key, read (from the environment or the credentials file) when first needed."""
        if self._username is None and self._from_file is not None:
            self._username, self._api_key = self._from_file()
        api_key = reveal(self._api_key)
        assert self._username is not None and api_key is not None
        return self._username, api_key


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
    connect_timeout: Duration = Field(default=3.0, gt=0)
    answer_timeout: Duration = Field(default=5.0, gt=0)
    timeout: Duration = Field(default=15.0, gt=0)  # transfers: the longest a part may go without a byte
    _key: Secret | SecretRef | None = PrivateAttr(default=None)

    @property
    def key(self) -> Secret:
        """The key, read from its environment variable when first needed."""
        key = reveal(self._key)
        assert key is not None
        return key


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
    # A logical full dumps its tables in this many mysqldump streams, all in one snapshot.
    dump_streams: int = Field(default=2, ge=1, le=32)
    # A logical restore loads tables over this many connections (0: one per core).
    restore_jobs: int = Field(default=0, ge=0, le=64)
    mysqldump: str = "mysqldump"
    mysql: str = "mysql"
    mysqlbinlog: str = "mysqlbinlog"  # point-in-time restores replay binlogs through it
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


class BinlogsConfig(_Section):
    """The ``[binlogs]`` section: the binlog archivers (``backupd.backup.binlog_job``)."""

    enabled: bool = False                   # every shard (a shard's ``binlogs`` overrides it)
    flush_every: Duration = Field(default=5.0, gt=0, le=3600)  # the RPO: how long new events wait
    segment_size: Size = Field(default=64 * 1024**2, ge=64 * 1024, le=1024**3)  # in memory, at most
    max_lag: Duration = Field(default=60.0, gt=0)  # audit: binlog-lag when the archive is older
    compression_level: int = Field(default=3, ge=1, le=22)
    heartbeat: Duration = Field(default=1.0, gt=0, le=60)  # the server says "nothing new" this often
    reconnect_max: Duration = Field(default=30.0, gt=0)  # the longest wait between reconnects (and catch-ups)


PUBLIC_KEY_PATTERN = r"^backupd-pub-[0-9a-f]{64}$"  # backupd.repo.keys: the text of a public key


class EncryptionConfig(_Section):
    """The ``[encryption]`` section (``backupd.repo.encryption``, ``backupd.repo.keys``).

    ``recipients``: public keys; when any is given, every new backup and binlog segment is
    encrypted for all of them (two, one kept offline, is the recommended minimum). A backup host
    needs nothing else. ``private_key_file`` (mode 0600) or ``private_key_env``: private keys,
    one per line, for what reads data (restore, drill, the deep audit's content check, rewrap).
    """

    recipients: list[Annotated[str, Field(pattern=PUBLIC_KEY_PATTERN)]] = []
    private_key_file: str | None = None
    private_key_env: str | None = None
    _private_keys: SecretRef | None = PrivateAttr(default=None)

    @property
    def enabled(self) -> bool:
        return bool(self.recipients)

    @property
    def private_keys(self) -> Secret | None:
        """The private keys' text (None when none is configured), read when first needed."""
        return reveal(self._private_keys)


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
    binlogs: BinlogsConfig = BinlogsConfig()
    encryption: EncryptionConfig = EncryptionConfig()

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

    def archives_binlogs(self, shard_id: str) -> bool:
        """Whether ``backupd run`` runs a binlog archiver for the shard."""
        own = self.shard(shard_id).binlogs
        return self.binlogs.enabled if own is None else own

    def incremental_columns(self, shard_id: str) -> Mapping[str, str]:
        return self.shard(shard_id).incremental_columns or self.settings.incremental_columns

    def check_secrets(self) -> None:
        """Read every password and store credential now; raises ConfigError naming the file and
        key of the first that cannot be read. The daemon does this at start and on reload, so a
        missing secret is known at once; one-shot commands read only what they touch."""
        for endpoint in [*self.shards.values(), *self.targets.values()]:
            endpoint.password  # noqa: B018 - reading is the check
        for store in self.stores.values():
            if isinstance(store, SwiftStoreConfig):
                store.key  # noqa: B018
            elif isinstance(store, S3StoreConfig | CloudFilesStoreConfig):
                store.credentials  # noqa: B018
        self.encryption.private_keys  # noqa: B018
