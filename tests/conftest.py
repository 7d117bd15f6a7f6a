"""Shared pytest fixtures: throwaway MariaDB servers from the test bed (tests/testbed)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.testbed import MariaDBServer, seed_edge_cases, seed_shard, template_datadir

pytest_plugins = ["tests.servers.fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SEEDED_SHARD_BYTES = 2 * 1024 * 1024

MariaDBFactory = Callable[..., MariaDBServer]


# Fixtures that start a real server (directly or through another fixture).
SERVER_FIXTURES = frozenset({"mariadb_factory", "seeded_shard", "swift_server", "rackspace_identity",
                             "moto_server", "swift_container", "s3_bucket_moto", "s3_bucket_swift",
                             "carbon_server"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that starts a server, and every test under tests/integration, carries the
    ``integration`` marker (``-m "not integration"`` runs pure logic only): a test that forgot
    it fails the collection, naming itself."""
    unmarked = [item.nodeid for item in items if item.get_closest_marker("integration") is None and (
        SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or "tests/integration/" in item.nodeid)]
    if unmarked:
        raise pytest.UsageError("tests that start servers must carry the integration marker "
                                f"(pytestmark = pytest.mark.integration): {', '.join(unmarked)}")


@pytest.fixture(scope="session")
def mariadb_cache() -> Path:
    """Directory holding the shared template datadir (``<repo>/.testbed/cache``), built on
    first use; shared by all sessions and xdist workers through a file lock."""
    cache = REPO_ROOT / ".testbed" / "cache"
    template_datadir(cache)
    return cache


@pytest.fixture
def mariadb_factory(tmp_path: Path, mariadb_cache: Path) -> Iterator[MariaDBFactory]:
    """Return ``make(name, *, extra_args=(), start=True) -> MariaDBServer``.

    Each call creates a fresh server under ``tmp_path/<name>`` (server ids 1, 2, ... in call
    order) and starts it unless ``start=False``. Safe to call from several threads. At
    teardown, every server made is stopped and its directory deleted, also when the test
    failed; teardown errors are reported after all servers were handled.
    """
    made: list[MariaDBServer] = []
    lock = threading.Lock()

    def make(name: str, *, extra_args: Sequence[str] = (), start: bool = True) -> MariaDBServer:
        with lock:
            server_id = len(made) + 1
            root = tmp_path / name
            if any(s.root == root for s in made):
                raise ValueError(f"server name {name!r} already used in this test")
            # Reserve the slot before the (slow) copy so parallel calls get distinct ids.
            placeholder = MariaDBServer(name, root, port=0, server_id=server_id)
            made.append(placeholder)
        server = MariaDBServer.create(root, name, server_id, mariadb_cache, extra_args)
        with lock:
            made[made.index(placeholder)] = server
        if start:
            server.start()
        return server

    yield make

    def destroy(server: MariaDBServer) -> BaseException | None:
        try:
            server.destroy()
        except BaseException as exc:
            return exc
        return None

    if made:
        with ThreadPoolExecutor(max_workers=len(made)) as pool:
            errors = [e for e in pool.map(destroy, made) if e is not None]
        if errors:
            raise errors[0]


@pytest.fixture
def seeded_shard(mariadb_factory: MariaDBFactory) -> MariaDBServer:
    """A running server holding shard 0 of 64 (16 bucket tables, ~2 MiB of JSON in ``app``)
    plus the ``edge`` database from seed_edge_cases. Fresh for every test."""
    server = mariadb_factory("shard1")
    seed_shard(server, 0, 64, target_bytes=SEEDED_SHARD_BYTES)
    seed_edge_cases(server)
    return server
