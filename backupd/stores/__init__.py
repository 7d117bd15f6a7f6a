"""Stores: where parts and manifests live. ``open_store`` builds one from its config
(``backupd.repo.repository.Repository`` opens each configured store once per process).

SDKs are imported lazily (barman's habit), so boto3 or libcloud load only when a store of that
type is configured.
"""

from __future__ import annotations

from backupd.config import StoreConfig
from backupd.stores.base import ObjectInfo, Payload, Store, StoreProperties

__all__ = ["ObjectInfo", "Payload", "Store", "StoreProperties", "open_store"]


def open_store(name: str, config: StoreConfig, *, retry: bool = True) -> Store:
    """Build the store named ``name`` from its validated config section. Wrapped (``retry``) as
    backupd uses every store: transient errors retried within the store's ``retry_budget``
    (``backupd.stores.retry``), and a store that does not answer failed fast and probed in the
    background (``backupd.stores.health``)."""
    backend: Store
    if config.type == "local":
        from backupd.stores.local import LocalStore
        backend = LocalStore(name, config.path, config.prefix)
    elif config.type == "s3":
        from backupd.stores.s3 import S3Store
        backend = S3Store(name, config)
    elif config.type in ("swift", "cloudfiles"):
        from backupd.stores.swift import SwiftStore
        backend = SwiftStore(name, config)
    else:
        raise ValueError(f"store {name}: unsupported type {config.type!r}")
    if not retry:
        return backend
    from backupd.stores.health import PROBE_KEY, HealthGuardedStore, StoreHealth
    from backupd.stores.retry import RetryingStore
    from backupd.stores.stats import RetryStats

    def probe() -> None:  # any answer, "not found" included, means the store is reachable
        backend.stat(PROBE_KEY)

    stats = RetryStats()
    return HealthGuardedStore(RetryingStore(backend, budget=config.retry_budget, stats=stats),
                              StoreHealth(name, probe), stats)

