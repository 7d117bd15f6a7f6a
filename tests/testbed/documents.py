"""A realistic, deterministic generator of the JSON documents stored in bucket rows."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

__all__ = ["DOC_MAX_BYTES", "DOC_MIN_BYTES", "SEED_SPAN", "make_document"]

T = TypeVar("T")
DOC_MIN_BYTES = 512
DOC_MAX_BYTES = 4096
SEED_SPAN = timedelta(days=3)


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
