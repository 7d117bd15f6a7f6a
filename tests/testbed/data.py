"""The application's schema, a realistic data generator, and a table fingerprint oracle.

Schema: each shard holds the bucket tables ``bucket_NNNN`` (``NNNN`` = 0000..1023) of the
buckets it owns (bucket ``b`` belongs to shard ``b % n_shards``) in database ``app``. A bucket
row is a JSON document with created/updated timestamps. Row ids are globally unique across the
fleet: ``bucket * ROW_ID_STRIDE + n`` (n = 1, 2, ...).

All fixture loads run with ``SET SESSION sql_log_bin=0`` so seeding leaves no GTIDs/binlog
events behind (a server's binlog then only holds what a test does itself).

This module gathers the pieces, each in its own module:

- :mod:`tests.testbed.schema`: bucket tables, :class:`SeedStats`;
- :mod:`tests.testbed.documents`: the JSON document generator (:func:`make_document`);
- :mod:`tests.testbed.seeding`: :func:`seed_shard` and :func:`seed_bulk`;
- :mod:`tests.testbed.edge_cases`: :func:`seed_edge_cases`;
- :mod:`tests.testbed.fingerprint`: :func:`table_fingerprint`.
"""

from __future__ import annotations

from tests.testbed.documents import DOC_MAX_BYTES as DOC_MAX_BYTES
from tests.testbed.documents import DOC_MIN_BYTES as DOC_MIN_BYTES
from tests.testbed.documents import SEED_SPAN as SEED_SPAN
from tests.testbed.documents import make_document
from tests.testbed.edge_cases import seed_edge_cases
from tests.testbed.fingerprint import table_fingerprint
from tests.testbed.schema import BUCKET_DDL as BUCKET_DDL
from tests.testbed.schema import (
    DEFAULT_BUCKETS,
    ROW_ID_STRIDE,
    SeedStats,
    bucket_table,
    buckets_for_shard,
    create_bucket_tables,
)
from tests.testbed.seeding import seed_bulk, seed_shard
from tests.testbed.seeding import tsv_escape as tsv_escape

__all__ = [
    "DEFAULT_BUCKETS",
    "ROW_ID_STRIDE",
    "SeedStats",
    "bucket_table",
    "buckets_for_shard",
    "create_bucket_tables",
    "make_document",
    "seed_bulk",
    "seed_edge_cases",
    "seed_shard",
    "table_fingerprint",
]
