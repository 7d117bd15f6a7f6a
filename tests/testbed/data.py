"""The application's schema, a realistic data generator, and a table fingerprint oracle.

Schema: each shard holds the bucket tables ``bucket_NNNN`` (``NNNN`` = 0000..1023) of the
buckets it owns (bucket ``b`` belongs to shard ``b % n_shards``) in database ``app``. A bucket
row is a JSON document with created/updated timestamps. Row ids are globally unique across the
fleet: ``bucket * ROW_ID_STRIDE + n`` (n = 1, 2, ...).

All fixture loads run with ``SET SESSION sql_log_bin=0`` so seeding leaves no GTIDs/binlog
events behind (a server's binlog then only holds what a test does itself).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pymysql
import pymysql.cursors

from tests.testbed.mariadb import MariaDBServer

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

T = TypeVar("T")
DEFAULT_BUCKETS = 1024
ROW_ID_STRIDE = 10_000_000
DOC_MIN_BYTES = 512
DOC_MAX_BYTES = 4096
SEED_SPAN = timedelta(days=3)
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


# ------------------------------------------------------------------------- documents

_FIRST = ["Anna", "José", "Zoë", "Łukasz", "Søren", "Björn", "Amélie", "Nguyễn", "Ólafur",
          "Chloé", "Mateo", "Priya", "Kenji", "Fatima", "Oluwaseun", "Émile", "Dmitrij",
          "美咲", "太郎", "李娜", "王伟", "민준", "서연"]
_LAST = ["García", "Müller", "Kowalski", "Andersen", "Dubois", "O'Brien", "Nakamura",
         "Smith", "Rossi", "Håkansson", "Çelik", "Đorđević", "山田", "佐藤", "陈", "김"]
_CITIES = ["Zürich", "São Paulo", "Kraków", "Reykjavík", "Malmö", "Montréal", "Besançon",
           "東京", "大阪", "上海", "서울", "Berlin", "Lisboa", "Αθήνα", "Москва"]
_COUNTRIES = ["CH", "BR", "PL", "IS", "SE", "CA", "FR", "JP", "CN", "KR", "DE", "PT", "GR"]
_WORDS = ["alpha", "backup", "shard", "stream", "bucket", "ledger", "invoice", "latency",
          "café", "naïve", "façade", "jalapeño", "crème brûlée", "Ångström", "smørrebrød",
          "über", "niño", "déjà vu", "piñata", "coöperate", "résumé", "e\u0301te\u0301",
          "データ", "バックアップ", "数据库", "备份", "测试", "안녕하세요", "データベース",
          "🎉", "🚀", "📦", "✅", "🔥", "👍🏽", "👨‍👩‍👧", "🇫🇷", "☕", "ß", "Ωμέγα", "שלום",
          "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]
_STATUSES = ["pending", "paid", "shipped", "delivered", "cancelled", "refunded"]
_EVENTS = ["page_view", "click", "login", "logout", "purchase", "search", "error"]
_CURRENCIES = ["EUR", "USD", "JPY", "CHF", "GBP", "SEK"]
_UA = ["Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4)",
       "curl/8.5.0", "okhttp/4.12.0", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)"]
_DOC_EPOCH = datetime(2024, 1, 1)
_DOC_SPAN_S = 365 * 86400


def _pick(rng: random.Random, seq: Sequence[T]) -> T:
    """Fast ``rng.choice`` (one ``random()`` call; deterministic for the rng state)."""
    return seq[int(rng.random() * len(seq))]


def _int(rng: random.Random, low: int, high: int) -> int:
    """Fast integer in [low, high)."""
    return low + int(rng.random() * (high - low))


def _words(rng: random.Random, n: int) -> str:
    r, words, nw = rng.random, _WORDS, len(_WORDS)
    return " ".join([words[int(r() * nw)] for _ in range(n)])


_DAYS = [(_DOC_EPOCH + timedelta(days=d)).strftime("%Y-%m-%d") for d in range(366)]
_MINUTES = [f"{m // 60:02d}:{m % 60:02d}" for m in range(1440)]


def _iso(rng: random.Random) -> str:
    """A deterministic ISO-8601 UTC timestamp (millisecond precision) in 2024."""
    r = rng.random
    return f"{_DAYS[int(r() * 366)]}T{_MINUTES[int(r() * 1440)]}:{r() * 59.999:06.3f}Z"


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"


def _money(rng: random.Random, high: float) -> float:
    return round(0.5 + rng.random() * high, 2)


def _bool(flag: bool) -> str:
    return "true" if flag else "false"


# Bases are built as dicts and serialised by json (once per document). Items, the bulk of
# each document, are formatted directly: every interpolated string comes from the pools
# above, which contain no character JSON would escape.

def _user_base(rng: random.Random, row_id: int) -> dict[str, Any]:
    first, last = _pick(rng, _FIRST), _pick(rng, _LAST)
    return {
        "kind": "user", "id": row_id, "uuid": _uuid(rng),
        "name": {"first": first, "last": last, "display": f"{first} {last}"},
        "email": f"user{row_id}@example.{_pick(rng, ('com', 'org', 'jp', 'de'))}",
        "created": _iso(rng), "active": rng.random() < 0.9,
        "address": {"city": _pick(rng, _CITIES), "country": _pick(rng, _COUNTRIES),
                    "zip": f"{_int(rng, 0, 100000):05d}", "line1": _words(rng, 3)},
        "prefs": {"lang": _pick(rng, ("en", "fr", "ja", "de", "pt")),
                  "newsletter": rng.random() < 0.3, "theme": _pick(rng, ("dark", "light"))},
        "score": round(rng.gauss(50, 15), 4), "tags": [_pick(rng, _WORDS) for _ in range(3)],
    }


def _user_item(rng: random.Random) -> str:
    r = rng.random
    return (f'{{"at":"{_iso(rng)}","ip":"10.{int(r() * 256)}.{int(r() * 256)}.'
            f'{int(r() * 256)}","ua":"{_pick(rng, _UA)}","ok":{_bool(r() < 0.95)},'
            f'"note":"{_words(rng, _int(rng, 1, 10))}"}}')


def _order_base(rng: random.Random, row_id: int) -> dict[str, Any]:
    return {
        "kind": "order", "order_id": row_id, "customer_id": _int(rng, 1, 10**9),
        "status": _pick(rng, _STATUSES), "currency": _pick(rng, _CURRENCIES),
        "placed_at": _iso(rng), "total": _money(rng, 2000),
        "shipping": {"method": _pick(rng, ("post", "express", "pickup")),
                     "city": _pick(rng, _CITIES), "country": _pick(rng, _COUNTRIES),
                     "instructions": f"Ring twice, say \"{_pick(rng, _WORDS)}\"\\n"},
        "coupon": None if rng.random() < 0.7 else f"SAVE{_int(rng, 5, 50)}",
    }


def _order_item(rng: random.Random) -> str:
    r = rng.random
    return (f'{{"sku":"SKU-{int(r() * 10**6):06d}","name":"{_words(rng, _int(rng, 1, 6))}",'
            f'"qty":{_int(rng, 1, 10)},"unit_price":{_money(rng, 300)},"attrs":{{"size":'
            f'"{_pick(rng, ("S", "M", "L", "XL"))}","gift":{_bool(r() < 0.1)}}}}}')


def _event_base(rng: random.Random, row_id: int) -> dict[str, Any]:
    return {
        "kind": "event", "event_id": _uuid(rng), "seq": row_id,
        "type": _pick(rng, _EVENTS), "ts": _iso(rng),
        "actor": {"user_id": _int(rng, 1, 10**7), "session": _uuid(rng)[:18]},
        "context": {"path": f"/{_pick(rng, _WORDS)}/{_int(rng, 0, 1000)}",
                    "referrer": None, "duration_ms": _int(rng, 1, 30000),
                    "client": {"ua": _pick(rng, _UA), "locale": _pick(rng, ("en-US", "ja-JP"))}},
        "labels": [_pick(rng, _WORDS) for _ in range(_int(rng, 1, 5))],
    }


def _event_item(rng: random.Random) -> str:
    r = rng.random
    return (f'{{"t":"{_iso(rng)}","level":"{_pick(rng, ("debug", "info", "warn"))}",'
            f'"msg":"{_words(rng, _int(rng, 2, 12))}","value":{round(r() * 1e6, 3)}}}')


_KINDS: list[tuple[Callable[[random.Random, int], dict[str, Any]],
                   Callable[[random.Random], str], str]] = [
    (_user_base, _user_item, "sessions"),
    (_order_base, _order_item, "items"),
    (_event_base, _event_item, "breadcrumbs"),
]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _filler(rng: random.Random, n_bytes: int) -> str:
    """Text of exactly ``n_bytes`` UTF-8 bytes (no characters JSON would escape)."""
    if n_bytes <= 0:
        return ""
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        word = _pick(rng, _WORDS)
        parts.append(word)
        size += len(word.encode()) + 1
    raw = " ".join(parts).encode()[:n_bytes].decode(errors="ignore")
    return raw + "." * (n_bytes - len(raw.encode()))


def make_document(rng: random.Random, row_id: int) -> str:
    """Return one compact JSON document (user, order or event record) for ``row_id``.

    Contract: deterministic for a given ``rng`` state; the UTF-8 size is drawn uniformly
    from [512, 4096] bytes and hit exactly; content mixes nested objects, arrays, numbers,
    booleans, nulls, ISO timestamps, escaped quotes/backslashes and utf8mb4 text (accented
    Latin, CJK, Hangul, emoji incl. ZWJ sequences and combining marks).
    """
    target = rng.randint(DOC_MIN_BYTES, DOC_MAX_BYTES)
    base_fn, item_fn, list_key = _pick(rng, _KINDS)
    head = _dumps(base_fn(rng, row_id))[:-1]  # without the closing brace
    items: list[str] = []
    # head + ,"<list_key>":[ items ] + ,"note":"<filler>" + }
    size = len(head.encode()) + len(list_key) + 6 + len(',"note":""}')
    while True:
        item = item_fn(rng)
        item_size = len(item.encode()) + (1 if items else 0)
        if size + item_size > target:
            break
        items.append(item)
        size += item_size
    note = _filler(rng, target - size)
    return f'{head},"{list_key}":[{",".join(items)}],"note":"{note}"}}'


def _row_times(rng: random.Random, now: datetime) -> tuple[datetime, datetime]:
    """created_at uniformly in the last SEED_SPAN; updated_at between it and ``now``."""
    span_us = int(SEED_SPAN.total_seconds() * 1_000_000)
    created_age = rng.randrange(span_us)
    updated_age = rng.randrange(created_age + 1)
    return now - timedelta(microseconds=created_age), now - timedelta(microseconds=updated_age)


def _rng_for(seed: int, shard_index: int, n_shards: int, purpose: str) -> random.Random:
    return random.Random(f"backupd-testbed:{purpose}:{seed}:{shard_index}:{n_shards}")


def _fixture_connection(server: MariaDBServer, **kw: Any) -> pymysql.connections.Connection:
    """Connection whose writes stay out of the binlog."""
    conn = server.connect(**kw)
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_log_bin=0")
    return conn


# ------------------------------------------------------------------------- seeding

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


# ------------------------------------------------------------------------- edge cases

_EDGE_DDL = [
    "CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
    # ENUM/SET labels stay within the BMP: MariaDB keeps column metadata in utf8mb3, so an
    # emoji label reads back as '?' from SHOW CREATE TABLE and no logical dump can keep it.
    """CREATE TABLE `{db}`.`oddities` (
  `id` INT NOT NULL,
  `txt` VARCHAR(255) NULL,
  `long_txt` MEDIUMTEXT NULL,
  `vbin` VARBINARY(300) NULL,
  `blb` BLOB NULL,
  `dec_val` DECIMAL(20,6) NULL,
  `dbl` DOUBLE NULL,
  `d` DATE NULL,
  `dt` DATETIME(6) NULL,
  `t` TIME NULL,
  `e` ENUM('small','medium','large','ünïcødé ✓') NULL,
  `s` SET('red','green','blue','日本') NULL,
  `b` BIT(8) NULL,
  `j` JSON NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci""",
    """CREATE TABLE `{db}`.`no_pk` (
  `a` INT NULL,
  `b` VARCHAR(50) NULL,
  `c` DATETIME(6) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci""",
    """CREATE TABLE `{db}`.`audit_log` (
  `id` INT NOT NULL AUTO_INCREMENT,
  `oddity_id` INT NOT NULL,
  `action` VARCHAR(16) NOT NULL,
  `at` DATETIME(6) NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci""",
    """CREATE TRIGGER `{db}`.`trg_oddities_ai` AFTER INSERT ON `{db}`.`oddities`
FOR EACH ROW INSERT INTO `{db}`.`audit_log` (oddity_id, action, at)
VALUES (NEW.id, 'insert', NOW(6))""",
    """CREATE VIEW `{db}`.`v_oddities` AS
SELECT id, txt, dec_val, e, j FROM `{db}`.`oddities` WHERE id % 2 = 0""",
    """CREATE PROCEDURE `{db}`.`p_count_oddities`(OUT n INT)
READS SQL DATA
SELECT COUNT(*) INTO n FROM `{db}`.`oddities`""",
    """CREATE FUNCTION `{db}`.`f_label`(x INT) RETURNS VARCHAR(64) CHARSET utf8mb4
DETERMINISTIC NO SQL
RETURN CONCAT('odd-', x, '-✓')""",
]

_ODDITY_COLUMNS = ("id", "txt", "long_txt", "vbin", "blb", "dec_val", "dbl", "d", "dt", "t",
                   "e", "s", "b", "j")
_ALL_BYTES = bytes(range(256))
_TRICKY_TEXT = [
    "", " ", "NULL", "\\N", "null", "O'Reilly \"quoted\" `back`", "back\\slash \\\\ \\n",
    "tab\there\nnewline\r\ncrlf", "nul\x00byte", "😀🎉🚀 emoji", "👨‍👩‍👧‍👦 ZWJ family",
    "🇯🇵🇫🇷 flags", "東京都 中文 한국어 日本語", "e\u0301 combining a\u0308 o\u0323\u0302",
    "שלום RTL عربى", "Ωμέγα Ελληνικά", "\u200b zero width \ufeff bom", "trailing spaces   ",
    "x" * 255, "🎉" * 255,
]


def _time_literal(seconds: int) -> str:
    """TIME literal for a signed number of seconds (PyMySQL mangles negative timedeltas)."""
    sign = "-" if seconds < 0 else ""
    hours, rest = divmod(abs(seconds), 3600)
    return f"{sign}{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _oddity_rows() -> list[tuple[Any, ...]]:
    """~50 deterministic rows covering NULLs, extremes and tricky text/binary values."""
    rows: list[tuple[Any, ...]] = [
        (1, *([None] * (len(_ODDITY_COLUMNS) - 1))),  # NULL in every nullable column
        (2, "all bytes", None, _ALL_BYTES, _ALL_BYTES, Decimal("99999999999999.999999"),
         1.7976931348623157e308, date(9999, 12, 31), datetime(9999, 12, 31, 23, 59, 59, 999999),
         "838:59:59", "large", "red,green,blue,日本",
         b"\xff", '{"max": 18446744073709551615, "neg": -9223372036854775808}'),
        (3, "", "", b"", b"", Decimal("-99999999999999.999999"), -2.2250738585072014e-308,
         date(1000, 1, 1), datetime(1000, 1, 1, 0, 0, 0, 0), "-838:59:59", "small", "",
         b"\x00", "{}"),
        (4, "zero date", None, b"\x00", b"\x00\x00", Decimal("0.000001"), 0.1,
         "0000-00-00", "0000-00-00 00:00:00", "00:00:00", "ünïcødé ✓", "日本", b"\xaa",
         "[]"),
        (5, "json scalars", "🎉" * 5000, b"\\N", b"\r\n\t", Decimal("0"), 3.141592653589793,
         date(1970, 1, 1), datetime(1970, 1, 1, 0, 0, 1, 500000), "00:00:01",
         "medium", "green", b"\x01", 'null'),
    ]
    rng = random.Random("backupd-testbed:edge")
    for i, text in enumerate(_TRICKY_TEXT):
        rows.append((10 + i, text, text * 3, text.encode()[:300], text.encode() * 2,
                     Decimal(f"{rng.randrange(-10**12, 10**12)}.{rng.randrange(10**6):06d}"),
                     rng.uniform(-1e9, 1e9), date(2000 + i, 1 + i % 12, 1 + i),
                     datetime(2024, 2, 29, 12, i, i, i * 1000), _time_literal(-3600 * i + 60 * i),
                     ["small", "medium", "large"][i % 3], ["", "red", "blue,green"][i % 3],
                     bytes([i]), json.dumps({"text": text, "i": i, "nested": {"a": [1, None,
                                            True, 1.5e-7]}}, ensure_ascii=i % 2 == 0)))
    for i in range(50 - len(rows)):
        row_id = 100 + i
        nulls = {c for c in _ODDITY_COLUMNS[1:] if rng.random() < 0.2}
        values: dict[str, Any] = {
            "txt": make_document(rng, row_id)[:255], "long_txt": _filler(rng, 700),
            "vbin": rng.randbytes(rng.randrange(0, 300)), "blb": rng.randbytes(5000),
            "dec_val": Decimal(rng.randrange(-10**19, 10**19)) / Decimal(10**6),
            "dbl": rng.uniform(-1, 1) * 10 ** rng.randrange(-300, 300),
            "d": date(1990, 1, 1) + timedelta(days=rng.randrange(20000)),
            "dt": datetime(1990, 1, 1) + timedelta(microseconds=rng.randrange(10**15)),
            "t": _time_literal(rng.randrange(-3_000_000, 3_000_000)),
            "e": rng.choice(["small", "medium", "large", "ünïcødé ✓"]),
            "s": ",".join(sorted(rng.sample(["red", "green", "blue"], rng.randrange(4)))),
            "b": bytes([rng.randrange(256)]), "j": make_document(rng, row_id),
        }
        rows.append((row_id, *(None if c in nulls else values[c] for c in _ODDITY_COLUMNS[1:])))
    return rows


_NO_PK_ROWS: list[tuple[Any, ...]] = [
    (1, "dup", datetime(2024, 5, 1, 10, 0, 0, 123456)),
    (1, "dup", datetime(2024, 5, 1, 10, 0, 0, 123456)),
    (1, "dup", datetime(2024, 5, 1, 10, 0, 0, 123456)),
    (2, "Dup", None), (2, "Dup", None), (None, None, None), (None, None, None),
    (3, "🎉", datetime(2024, 5, 2)), (3, "🎉", datetime(2024, 5, 2)), (4, "", None),
]


def seed_edge_cases(server: MariaDBServer, database: str = "edge") -> SeedStats:
    """Create ``database`` with awkward objects for fidelity tests (drops it first).

    Contents: ``oddities`` (50 rows; NULLs in every nullable column, utf8mb4 text with emoji,
    CJK, combining marks, RTL, NUL/tab/newline/backslash, all 256 byte values and empty
    values in VARBINARY/BLOB, DECIMAL(20,6), DOUBLE extremes, DATE/DATETIME(6)/TIME extremes
    incl. a zero date, ENUM, SET, BIT(8), JSON), ``no_pk`` (no key, duplicate rows),
    ``audit_log`` (filled by trigger ``trg_oddities_ai`` on insert into oddities, so it has
    50 rows), view ``v_oddities``, procedure ``p_count_oddities(OUT n)`` and function
    ``f_label(x)``. Written with ``sql_log_bin=0``.
    """
    started = time.monotonic()
    rows = _oddity_rows()
    with closing(_fixture_connection(server)) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
        for ddl in _EDGE_DDL:
            cur.execute(ddl.format(db=database))
        placeholders = ", ".join(["%s"] * len(_ODDITY_COLUMNS))
        cur.executemany(f"INSERT INTO `{database}`.`oddities` "
                        f"({', '.join(_ODDITY_COLUMNS)}) VALUES ({placeholders})", rows)
        cur.executemany(f"INSERT INTO `{database}`.`no_pk` (a, b, c) VALUES (%s, %s, %s)",
                        _NO_PK_ROWS)
    payload = sum(len(repr(r)) for r in rows)
    return SeedStats(3, len(rows) * 2 + len(_NO_PK_ROWS), payload, time.monotonic() - started)


# ------------------------------------------------------------------------- fingerprints

def _normalise(value: Any) -> Any:
    """Make a fetched value's repr() order-independent (SET columns may come back as sets)."""
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(value))
    return value


def _iter_rows(cur: pymysql.cursors.Cursor, batch: int = 1000) -> Iterator[tuple[Any, ...]]:
    while True:
        rows = cur.fetchmany(batch)
        if not rows:
            return
        yield from rows


def table_fingerprint(server: MariaDBServer, database: str) -> dict[str, tuple[int, str]]:
    """Return ``{table: (row_count, sha256_hex)}`` for every base table of ``database``.

    Independent of backupd: rows are read with ``SELECT *`` ordered by the primary key (or
    by all columns when there is none; ``max_sort_length`` is raised so long values sort
    by their full content) and hashed as ``repr(row)`` lines. Views are skipped. Two servers
    holding identical data give identical fingerprints.
    """
    with closing(server.connect(cursorclass=pymysql.cursors.SSCursor)) as conn:
        with conn.cursor() as cur:
            cur.execute("SET SESSION max_sort_length = 8388608")
            cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA=%s"
                        " AND TABLE_TYPE='BASE TABLE' ORDER BY TABLE_NAME", (database,))
            tables = [row[0] for row in cur.fetchall()]
        return {table: _fingerprint_one(conn, database, table) for table in tables}


def _order_columns(conn: pymysql.connections.Connection, database: str, table: str) -> list[str]:
    """Primary key columns in key order, else all columns in ordinal order."""
    with conn.cursor() as cur:
        cur.execute("SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE "
                    "TABLE_SCHEMA=%s AND TABLE_NAME=%s AND INDEX_NAME='PRIMARY' "
                    "ORDER BY SEQ_IN_INDEX", (database, table))
        pk = [row[0] for row in cur.fetchall()]
        if pk:
            return pk
        cur.execute("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE "
                    "TABLE_SCHEMA=%s AND TABLE_NAME=%s ORDER BY ORDINAL_POSITION",
                    (database, table))
        return [row[0] for row in cur.fetchall()]


def _fingerprint_one(conn: pymysql.connections.Connection, database: str,
                     table: str) -> tuple[int, str]:
    order = ", ".join(f"`{c}`" for c in _order_columns(conn, database, table))
    digest = hashlib.sha256()
    count = 0
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM `{database}`.`{table}` ORDER BY {order}")
        for row in _iter_rows(cur):
            digest.update(repr(tuple(_normalise(v) for v in row)).encode("utf-8",
                                                                         "surrogatepass"))
            digest.update(b"\n")
            count += 1
    return count, digest.hexdigest()
