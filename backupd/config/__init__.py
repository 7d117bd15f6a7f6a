"""Loading and validating the TOML configuration, once, into frozen typed objects.

Contract: ``load_config(path)`` either returns a fully validated ``Config`` (every password
resolved, every cross reference checked, relative paths made absolute against the config file's
folder) or raises ``ConfigError`` whose one-line message names the file, the key and the problem,
e.g. ``config/backupd.toml: shards.7.port: expected an integer, got 'abc'``.
"""

from backupd.config.loader import load_config, resolve_config_path
from backupd.config.sections import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    STORE_TYPES,
    AuditConfig,
    CloudFilesStoreConfig,
    Config,
    DrillConfig,
    EffectiveSchedule,
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
)

__all__ = [
    "CONFIG_ENV", "DEFAULT_CONFIG", "STORE_TYPES", "AuditConfig", "CloudFilesStoreConfig", "Config", "DrillConfig",
    "EffectiveSchedule", "EndpointConfig", "LocalStoreConfig", "MetricsConfig", "RetentionConfig", "S3StoreConfig",
    "ScheduleConfig", "Settings", "ShardConfig", "ShardSchedule", "StoreConfig", "SwiftStoreConfig", "TargetConfig",
    "load_config", "resolve_config_path",
]
