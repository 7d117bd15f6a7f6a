"""The application's schema: bucket tables of a shard, and what a seeding call reports.

Each shard holds the bucket tables ``bucket_NNNN`` (``NNNN`` = 0000..1023) of the buckets it
owns (bucket ``b`` belongs to shard ``b % n_shards``) in database ``app``. A bucket row is a
JSON document with created/updated timestamps. Row ids are globally unique across the fleet:
``bucket * ROW_ID_STRIDE + n`` (n = 1, 2, ...).

All fixture loads run with ``SET SESSION sql_log_bin=0`` (:func:`_fixture_connection`) so
seeding leaves no GTIDs/binlog events behind (a server's binlog then only holds what a test
does itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pymysql
import pymysql.cursors

from tests.testbed.mariadb import MariaDBServer

__all__ = [
    "BUCKET_DDL",
    "DEFAULT_BUCKETS",
    "ROW_ID_STRIDE",
    "SeedStats",
    "bucket_table",
    "buckets_for_shard",
    "create_bucket_tables",
]

DEFAULT_BUCKETS = 1024
ROW_ID_STRIDE = 10_000_000
_MIB = 1024 * 1024

BUCKET_DDL = """CREATE TABLE IF NOT EXISTS `{table}` (
  `id` BIGINT NOT NULL,
  `data` JSON,
  `created_at` DATETIME(6) NOT NULL,
  `updated_at` DATETIME(6) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_updated_at` (`updated_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"""


@dataclass(frozen=True)
class SeedStats:
    """What a seeding call wrote: tables created, rows, JSON payload bytes (UTF-8), wall time."""

    tables: int
    rows: int
    payload_bytes: int
    seconds: float = 0.0

    @property
    def mib_per_s(self) -> float:
        """Payload throughput in MiB/s (0 when no time was measured)."""
        return self.payload_bytes / _MIB / self.seconds if self.seconds > 0 else 0.0


# ------------------------------------------------------------------------- schema

def bucket_table(bucket: int) -> str:
    """Table name of a bucket: ``bucket_0042``."""
    return f"bucket_{bucket:04d}"


def buckets_for_shard(shard_index: int, n_shards: int,
                      n_buckets: int = DEFAULT_BUCKETS) -> list[int]:
    """Buckets owned by shard ``shard_index`` (0-based): every ``b`` with ``b % n_shards ==
    shard_index``, ascending."""
    if n_shards < 1 or not 0 <= shard_index < n_shards:
        raise ValueError(f"shard_index {shard_index} out of range for {n_shards} shards")
    if n_buckets > 10_000:
        raise ValueError("bucket names have 4 digits: n_buckets must be <= 10000")
    return list(range(shard_index, n_buckets, n_shards))


def create_bucket_tables(cur: pymysql.cursors.Cursor, database: str,
                         buckets: Iterable[int]) -> int:
    """Create ``database`` (utf8mb4) and the given bucket tables if missing; return count."""
    cur.execute(f"CREATE DATABASE IF NOT EXISTS `{database}` "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
    count = 0
    for bucket in buckets:
        cur.execute(BUCKET_DDL.format(table=f"{database}`.`{bucket_table(bucket)}"))
        count += 1
    return count


def _fixture_connection(server: MariaDBServer, **kw: Any) -> pymysql.connections.Connection:
    """Connection whose writes stay out of the binlog."""
    conn = server.connect(**kw)
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_log_bin=0")
    return conn
