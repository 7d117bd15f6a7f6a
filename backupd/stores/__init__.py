"""Stores: where parts and manifests live. ``open_store`` builds one from its config.

SDKs are imported lazily (barman's habit), so boto3 or libcloud load only when a store of that
type is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backupd.stores.base import ObjectInfo, Payload, Store, StoreProperties

if TYPE_CHECKING:
    from backupd.config import Config, StoreConfig

__all__ = ["ObjectInfo", "Payload", "Store", "StoreProperties", "open_store", "open_stores"]


def open_store(name: str, config: "StoreConfig", *, retry: bool = True) -> Store:
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


def open_stores(config: "Config", names: list[str]) -> list[Store]:
    """Build the named stores, in the order given."""
    return [open_store(name, config.stores[name]) for name in names]
