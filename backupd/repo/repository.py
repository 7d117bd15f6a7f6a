"""The repository: every configured store, each opened once per process, and the shards and
restore targets resolved against it.

Opening a store builds its SDK client and its retry wrapper. A job that opened the same store
once for its lock, once for the catalog, once for orphans and once for the upload would report
the retries of only one of them; ``Repository`` opens each store on first use and hands the same
object to every caller, so a job's retry and error counts cover all of its operations.

``shard(id)`` and ``target(name)`` resolve a name once (an unknown one is a ``UsageError``
listing the configured ones) into the object a job passes down: the name, its config section and
its opened stores.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from backupd.config import Config, ShardConfig, TargetConfig
from backupd.repo.catalog import Catalog
from backupd.repo.keyring import KeyRing
from backupd.repo.keys import identities_of
from backupd.stores import Store, open_store
from backupd.stores.health import HealthGuardedStore
from backupd.stores.retry import RetryingStore


@dataclass(frozen=True)
class Shard:
    """A configured shard, resolved: its id, its config, the stores it is backed up to (in
    order) and the stores its backup lock may live in (``Config.lock_stores``)."""

    id: str
    config: ShardConfig
    stores: list[Store]
    lock_stores: list[Store]
    from_replica: str | None = None  # a backup of it reads this replica (``config`` is its endpoint)

    @property
    def label(self) -> str:
        """How messages name it: ``shard 7``."""
        return f"shard {self.id}"


@dataclass(frozen=True)
class Target:
    """A configured restore target, resolved: its name, its config (for ``shard``, the server
    that shard restores into) and the stores it reads from, in preference order."""

    name: str
    config: TargetConfig
    stores: list[Store]
    keys: KeyRing  # opens encrypted backups read from ``stores``
    shard: str | None = None
    per_shard: bool = False  # the target has a server per shard

    @property
    def label(self) -> str:
        """How messages name it: ``target dr``, or ``target us-west shard 7`` when the target has
        a server per shard."""
        return f"target {self.name} shard {self.shard}" if self.per_shard else f"target {self.name}"


class Repository:
    """The configured stores (opened lazily, once) and what resolves against them."""

    def __init__(self, config: Config):
        self.config = config
        self._stores: dict[str, Store] = {}
        self._lock = threading.Lock()

    def store(self, name: str) -> Store:
        """The store named ``name`` (it must be configured), opened on first use."""
        with self._lock:
            store = self._stores.get(name)
            if store is None:
                store = self._stores[name] = open_store(name, self.config.stores[name])
            return store

    def stores(self, names: Iterable[str] | None = None) -> list[Store]:
        """The named stores in the order given (default: every configured store)."""
        return [self.store(name) for name in (self.config.stores if names is None else names)]

    def catalog(self, names: Iterable[str] | None = None) -> Catalog:
        """A catalog of the configured shards' backups over the named stores (default: all)."""
        return Catalog(self.stores(names), shards=sorted(self.config.shards))

    def shard(self, shard_id: str) -> Shard:
        return Shard(shard_id, self.config.shard(shard_id), self.stores(self.config.shard_stores(shard_id)),
                     self.stores(self.config.lock_stores(shard_id)))

    def target(self, name: str, shard: str | None = None, *, host: str | None = None,
               port: int | None = None) -> Target:
        """Target ``name``; with ``shard``, its server for that shard (``TargetConfig.for_shard``;
        ``host``/``port`` override it, as ``restore --target-host`` does)."""
        config = self.config.target(name)
        resolved = config.for_shard(shard, host=host, port=port) if shard is not None else config
        stores = self.stores(config.read_from)
        return Target(name, resolved, stores, KeyRing(stores, lambda: identities_of(self.config.encryption)), shard,
                      per_shard=shard is not None and config.per_shard)

    def store_stats(self) -> dict[str, dict[str, int]]:
        """Retries and failed operations of every store opened so far (each counted once per
        process, whatever used it), for metrics."""
        with self._lock:
            opened = dict(self._stores)
        return {name: {"retries": store.stats.retries, "errors": store.stats.errors}
                for name, store in opened.items() if isinstance(store, HealthGuardedStore | RetryingStore)}

    def unreachable(self) -> dict[str, str]:
        """The stores opened so far that are down now, and why (``backupd.stores.health``)."""
        with self._lock:
            opened = dict(self._stores)
        return {name: store.health.reason for name, store in opened.items()
                if isinstance(store, HealthGuardedStore) and store.health.is_down}
