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
    """Build the store named ``name`` from its validated config section, wrapped so that
    transient errors are retried within the store's ``retry_budget``."""
    store: Store
    if config.type == "local":
        from backupd.stores.local import LocalStore
        store = LocalStore(name, config.path, config.prefix)
    elif config.type == "s3":
        from backupd.stores.s3 import S3Store
        store = S3Store(name, config)
    elif config.type in ("swift", "cloudfiles"):
        from backupd.stores.swift import SwiftStore
        store = SwiftStore(name, config)
    else:
        raise ValueError(f"store {name}: unsupported type {config.type!r}")
    if retry:
        from backupd.stores.retry import RetryingStore
        store = RetryingStore(store, budget=config.retry_budget)
    return store

