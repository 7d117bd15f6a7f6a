"""Filling a shard's bucket tables: :func:`seed_shard` (multi-row INSERTs, a few MiB for
tests) and :func:`seed_bulk` (parallel TSV generation and ``LOAD DATA``, for benchmarks).

All loads run with ``SET SESSION sql_log_bin=0``, so they leave no GTIDs/binlog events behind.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import tempfile
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pymysql

from tests.testbed.documents import _rng_for, _row_times, make_document
from tests.testbed.mariadb import MariaDBServer
from tests.testbed.schema import (
    _MIB,
    DEFAULT_BUCKETS,
    ROW_ID_STRIDE,
    SeedStats,
    _fixture_connection,
    bucket_table,
    buckets_for_shard,
    create_bucket_tables,
)

__all__ = ["seed_bulk", "seed_shard", "tsv_escape"]


def seed_shard(
    server: MariaDBServer,
    shard_index: int,
    n_shards: int,
    *,
    database: str = "app",
    n_buckets: int = DEFAULT_BUCKETS,
    target_bytes: int = 4 * _MIB,
    seed: int = 0,
    now: datetime | None = None,
) -> SeedStats:
    """Create ``database`` and all bucket tables of the shard and fill them with about
    ``target_bytes`` of JSON (round-robin over the tables, so they get equal shares).

    Rows are inserted with multi-row INSERTs (``executemany``), one transaction per table,
    with ``sql_log_bin=0``. Ids are ``bucket * 10_000_000 + n``; timestamps lie within three
    days before ``now`` (default: current local time). Documents are deterministic for
    ``(seed, shard_index, n_shards)``; timestamps also when ``now`` is given.
    """
    started = time.monotonic()
    buckets = buckets_for_shard(shard_index, n_shards, n_buckets)
    rng = _rng_for(seed, shard_index, n_shards, "shard")
    now = now or datetime.now().replace(microsecond=0)
    per_bucket: dict[int, list[tuple[int, str, datetime, datetime]]] = {b: [] for b in buckets}
    payload = 0
    n = 0
    while payload < target_bytes:
        bucket = buckets[n % len(buckets)]
        rows = per_bucket[bucket]
        row_id = bucket * ROW_ID_STRIDE + len(rows) + 1
        doc = make_document(rng, row_id)
        rows.append((row_id, doc, *_row_times(rng, now)))
        payload += len(doc.encode())
        n += 1
    with closing(_fixture_connection(server)) as conn, conn.cursor() as cur:
        tables = create_bucket_tables(cur, database, buckets)
        for bucket, rows in per_bucket.items():
            if not rows:
                continue
            conn.begin()
            cur.executemany(
                f"INSERT INTO `{database}`.`{bucket_table(bucket)}` "
                "(id, data, created_at, updated_at) VALUES (%s, %s, %s, %s)", rows)
            conn.commit()
    return SeedStats(tables, n, payload, time.monotonic() - started)


_TSV_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"), ("\0", "\\0"))


def tsv_escape(value: str) -> str:
    """Escape a string for LOAD DATA's default ``FIELDS ESCAPED BY '\\\\'`` format."""
    for raw, escaped in _TSV_ESCAPES:
        if raw in value:
            value = value.replace(raw, escaped)
    return value


_LOAD_SQL = (
    "LOAD DATA LOCAL INFILE %s INTO TABLE `{db}`.`{table}` CHARACTER SET utf8mb4 "
    "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
    "(id, data, created_at, updated_at)"
)


def _write_bulk_file(path: Path, rng_key: str, bucket: int, target_bytes: int,
                     now: datetime) -> tuple[int, int]:
    """Write rows for one bucket table as TSV until ``target_bytes`` of JSON.

    Runs in a worker process; the table's content depends only on its arguments.
    Returns (rows, payload_bytes). Deletes the file again if writing fails.
    """
    rng = random.Random(rng_key)
    rows = payload = 0
    try:
        with open(path, "w", encoding="utf-8", newline="\n", buffering=4 * _MIB) as fh:
            while payload < target_bytes:
                rows += 1
                row_id = bucket * ROW_ID_STRIDE + rows
                doc = make_document(rng, row_id)
                payload += len(doc.encode())
                created, updated = _row_times(rng, now)
                fh.write(f"{row_id}\t{tsv_escape(doc)}\t{created.isoformat(' ', 'microseconds')}"
                         f"\t{updated.isoformat(' ', 'microseconds')}\n")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return rows, payload


def seed_bulk(
    server: MariaDBServer,
    shard_index: int,
    n_shards: int,
    *,
    target_bytes: int,
    database: str = "app",
    n_buckets: int = DEFAULT_BUCKETS,
    seed: int = 0,
    tables_limit: int = 64,
    now: datetime | None = None,
    tmp_dir: Path | None = None,
    workers: int | None = None,
) -> SeedStats:
    """Load about ``target_bytes`` of JSON into the first ``tables_limit`` bucket tables of
    the shard (same schema/ids/document style as :func:`seed_shard`), for benchmarks.

    Each table's rows are generated into a TSV temp file (in ``tmp_dir``, default: system
    temp) by ``workers`` spawned processes (default: CPUs - 1, at least 1) and loaded with
    ``LOAD DATA LOCAL INFILE`` over one PyMySQL connection (``sql_log_bin=0``), a table at a
    time; each file is deleted as soon as it is loaded, so at most ``workers + 1`` files
    exist. Documents are deterministic for ``(seed, shard_index, n_shards, bucket)``.
    """
    started = time.monotonic()
    buckets = buckets_for_shard(shard_index, n_shards, n_buckets)[:tables_limit]
    now = now or datetime.now().replace(microsecond=0)
    per_table = -(-target_bytes // len(buckets))
    workers = workers or max(1, (os.cpu_count() or 2) - 1)
    scratch = Path(tempfile.mkdtemp(prefix="seed-bulk-", dir=tmp_dir))
    rows_total = payload_total = 0
    try:
        with closing(_fixture_connection(server, local_infile=True)) as conn, \
                ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) \
                as pool:
            with conn.cursor() as cur:
                cur.execute("SET SESSION unique_checks=0, foreign_key_checks=0, "
                            "check_constraint_checks=0")
                create_bucket_tables(cur, database, buckets)
            jobs: deque[tuple[int, Path, Future[tuple[int, int]]]] = deque()
            queue = iter(buckets)
            for bucket in queue:
                path = scratch / f"{bucket_table(bucket)}.tsv"
                key = f"backupd-testbed:bulk:{seed}:{shard_index}:{n_shards}:{bucket}"
                jobs.append((bucket, path, pool.submit(_write_bulk_file, path, key, bucket,
                                                       per_table, now)))
                if len(jobs) <= workers:
                    continue
                rows, payload = _load_next(conn, database, jobs)
                rows_total += rows
                payload_total += payload
            while jobs:
                rows, payload = _load_next(conn, database, jobs)
                rows_total += rows
                payload_total += payload
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return SeedStats(len(buckets), rows_total, payload_total, time.monotonic() - started)


def _load_next(conn: pymysql.connections.Connection, database: str,
               jobs: deque[tuple[int, Path, Future[tuple[int, int]]]]) -> tuple[int, int]:
    """Wait for the oldest generated file, load it, delete it; return (rows, payload)."""
    bucket, path, future = jobs.popleft()
    rows, payload = future.result()
    _load_file(conn, database, bucket, path)
    return rows, payload


def _load_file(conn: pymysql.connections.Connection, database: str, bucket: int,
               path: Path) -> None:
    """LOAD DATA one TSV file into its bucket table, then delete the file."""
    try:
        with conn.cursor() as cur:
            cur.execute(_LOAD_SQL.format(db=database, table=bucket_table(bucket)), (str(path),))
            if cur.warning_count:
                cur.execute("SHOW WARNINGS LIMIT 5")
                raise RuntimeError(f"LOAD DATA into {bucket_table(bucket)} warned: "
                                   f"{cur.fetchall()}")
    finally:
        path.unlink(missing_ok=True)
