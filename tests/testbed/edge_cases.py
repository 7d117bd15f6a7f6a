"""A database of awkward objects and values for fidelity tests (:func:`seed_edge_cases`)."""

from __future__ import annotations

import json
import random
import time
from contextlib import closing
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tests.testbed.documents import _filler, make_document
from tests.testbed.mariadb import MariaDBServer
from tests.testbed.schema import SeedStats, _fixture_connection

__all__ = ["seed_edge_cases"]

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
    # FLOAT is what the server renders lossily (6 digits); the others read back exactly.
    """CREATE TABLE `{db}`.`floats` (
  `id` INT NOT NULL,
  `f` FLOAT NULL,
  `fu` FLOAT UNSIGNED NULL,
  `f4` FLOAT(10,4) NULL,
  `d` DOUBLE NULL,
  `twice` DOUBLE AS (`f` * 2) VIRTUAL,
  `dec_wide` DECIMAL(65,30) NULL,
  `tm` TIME(6) NULL,
  `ts` TIMESTAMP(6) NULL,
  `bits` BIT(10) NULL,
  `g` POINT NULL,
  `note` VARCHAR(64) CHARACTER SET latin1 NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci""",
    """CREATE TRIGGER `{db}`.`trg_floats_ai` AFTER INSERT ON `{db}`.`floats`
FOR EACH ROW INSERT INTO `{db}`.`audit_log` (oddity_id, action, at) VALUES (NEW.id, 'float', NOW(6))""",
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


# (f, d): FLOAT and DOUBLE edge values written as double literals (the server rounds them to
# the column's type); -0.0 is stored as 0 by MariaDB.
FLOAT_VALUES: list[tuple[str, str]] = [
    ("1e0/3e0", "1e0/3e0"), ("1e-38", "1e-308"), ("3.4e38", "1.7976931348623157e308"),
    ("-0e0", "-0e0"), ("1.401298464324817e-45", "4.9406564584124654e-324"),
    ("3.4028234663852886e38", "-1.7976931348623157e308"), ("1.1754943508222875e-38", "2.2250738585072014e-308"),
    ("-2e0/3e0", "0.1e0"), ("16777217e0", "9007199254740993e0"), ("123456.789e0", "-123456.789e0"),
]


def _float_rows(database: str) -> list[str]:
    rows = []
    for i, (f, d) in enumerate(FLOAT_VALUES, 1):
        rows.append(f"INSERT INTO `{database}`.`floats` (id, f, fu, f4, d, dec_wide, tm, ts, bits, g, note) VALUES "
                    f"({i}, {f}, ABS({f}), IF(ABS({f}) < 999999e0, {f}, 999999.9999e0), {d}, '{i}.{'9' * 30}', '-838:59:58.{i:06d}', "
                    f"'2024-02-29 12:00:00.{i:06d}', b'{i:010b}', POINT({d}, {f}), 'caf\xe9 {i}\nline')")
    rows.append(f"INSERT INTO `{database}`.`floats` (id) VALUES (100)")  # NULL everywhere
    return rows


def seed_edge_cases(server: MariaDBServer, database: str = "edge") -> SeedStats:
    """Create ``database`` with awkward objects for fidelity tests (drops it first).

    Contents: ``oddities`` (50 rows; NULLs in every nullable column, utf8mb4 text with emoji,
    CJK, combining marks, RTL, NUL/tab/newline/backslash, all 256 byte values and empty
    values in VARBINARY/BLOB, DECIMAL(20,6), DOUBLE extremes, DATE/DATETIME(6)/TIME extremes
    incl. a zero date, ENUM, SET, BIT(8), JSON), ``no_pk`` (no key, duplicate rows),
    ``floats`` (FLOAT, FLOAT UNSIGNED, FLOAT(10,4), DOUBLE and a generated column holding
    ``FLOAT_VALUES``: 1/3, 1e-38, 3.4e38, -0.0, subnormals, the largest values...; DECIMAL(65,30),
    TIME(6), TIMESTAMP(6), BIT(10), POINT and latin1 text with a newline beside them; 11 rows),
    ``audit_log`` (filled by triggers ``trg_oddities_ai`` and ``trg_floats_ai`` on insert, so it
    has 61 rows), view ``v_oddities``, procedure ``p_count_oddities(OUT n)`` and function
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
        for statement in _float_rows(database):
            cur.execute(statement)
    payload = sum(len(repr(r)) for r in rows)
    floats = len(FLOAT_VALUES) + 1
    return SeedStats(4, len(rows) * 2 + len(_NO_PK_ROWS) + 2 * floats, payload, time.monotonic() - started)
