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


def open_store(name: str, config: "StoreConfig") -> Store:
    """Build the store named ``name`` from its validated config section."""
    if config.type == "local":
        from backupd.stores.local import LocalStore
        return LocalStore(name, config.path, config.prefix)
    raise ValueError(f"store {name}: unsupported type {config.type!r}")


def open_stores(config: "Config", names: list[str]) -> list[Store]:
    """Build the named stores, in the order given."""
    return [open_store(name, config.stores[name]) for name in names]
