"""Test bed: throwaway MariaDB servers, the application's schema, seed data and oracles.

See :mod:`tests.testbed.mariadb` (server lifecycle) and :mod:`tests.testbed.data` (schema,
data generators, fingerprints). ``python -m tests.testbed --help`` runs a fleet by hand.
"""

from tests.testbed.data import (
    DEFAULT_BUCKETS,
    ROW_ID_STRIDE,
    SeedStats,
    bucket_table,
    buckets_for_shard,
    create_bucket_tables,
    make_document,
    seed_bulk,
    seed_edge_cases,
    seed_shard,
    table_fingerprint,
)
from tests.testbed.mariadb import MariaDBServer, find_free_port, mariadb_version, template_datadir

__all__ = [
    "DEFAULT_BUCKETS",
    "ROW_ID_STRIDE",
    "MariaDBServer",
    "SeedStats",
    "bucket_table",
    "buckets_for_shard",
    "create_bucket_tables",
    "find_free_port",
    "make_document",
    "mariadb_version",
    "seed_bulk",
    "seed_edge_cases",
    "seed_shard",
    "table_fingerprint",
    "template_datadir",
]
