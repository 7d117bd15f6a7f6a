"""Loading and validating the TOML configuration, once, into frozen typed objects.

Contract: ``load_config(path)`` either returns a fully validated ``Config`` (every key, type
and cross reference checked, relative paths made absolute against the config file's folder) or
raises ``ConfigError`` whose one-line message names the file, the key and the problem, e.g.
``config/backupd.toml: shards.7.port: expected an integer, got 'abc'``. Passwords and store
credentials are read where and when they are first needed (restoring shard 7 does not need shard
1's password), with the same kind of error then; ``Config.check_secrets()`` reads them all now.
"""

from backupd.config.loader import load_config, resolve_config_path
from backupd.config.sections import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    STORE_TYPES,
    AuditConfig,
    BinlogsConfig,
    CloudFilesStoreConfig,
    Config,
    DrillConfig,
    EffectiveSchedule,
    EncryptionConfig,
    EndpointConfig,
    LocalStoreConfig,
    MetricsConfig,
    RetentionConfig,
    S3StoreConfig,
    ScheduleConfig,
    Settings,
    ShardConfig,
    ShardSchedule,
    StoreConfig,
    SwiftStoreConfig,
    TargetConfig,
    TargetShard,
)

__all__ = [
    "CONFIG_ENV", "DEFAULT_CONFIG", "STORE_TYPES", "AuditConfig", "BinlogsConfig", "CloudFilesStoreConfig", "Config",
    "DrillConfig", "EncryptionConfig",
    "EffectiveSchedule", "EndpointConfig", "LocalStoreConfig", "MetricsConfig", "RetentionConfig", "S3StoreConfig",
    "ScheduleConfig", "Settings", "ShardConfig", "ShardSchedule", "StoreConfig", "SwiftStoreConfig", "TargetConfig",
    "TargetShard",
    "load_config", "resolve_config_path",
]
