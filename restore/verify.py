"""Verification of a restored target against the backup's per-table reference.

Tables are measured with the same SQL the source was (``backupd.mysql.reference``). A table can be
verified as soon as it is loaded (``TableVerifier.table_loaded``, driven by the load markers),
so most verification overlaps the rest of the load; ``finish()`` measures whatever was not
verified yet. Every table in the reference must exist with the same row count and, in digest
mode, the same digest; every view, trigger, routine and event must exist; and the backup's
databases on the target must hold no other table.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pymysql

from backupd.config import TargetConfig
from backupd.errors import UnsupportedFormat
from backupd.mysql.connection import connect
from backupd.mysql.reference import DIGEST_ALGORITHMS, MD5_SUM64, list_objects, list_tables, table_reference
from backupd.repo.model import Reference, TableReference


@dataclass(frozen=True)
class TableCheck:
    expected: TableReference
    actual: TableReference | None

    @property
    def ok(self) -> bool:
        return self.actual is not None and self.actual.rows == self.expected.rows and \
            self.actual.digest == self.expected.digest

    def describe(self) -> str:
        name = self.expected.name
        if self.actual is None:
            return f"{name}: missing on target"
        if self.ok:
            return f"{name}: ok ({self.expected.rows} rows)"
        parts = []
        if self.actual.rows != self.expected.rows:
            parts.append(f"rows {self.actual.rows}, expected {self.expected.rows}")
        if self.actual.digest != self.expected.digest:
            parts.append(f"digest {self.actual.digest}, expected {self.expected.digest}")
            changed = self.changed_columns
            if changed:
                parts.append(f"column{'s' if len(changed) > 1 else ''} {', '.join(changed)} differ"
                             f"{'' if len(changed) > 1 else 's'}")
        return f"{name}: " + ", ".join(parts)

    @property
    def changed_columns(self) -> list[str]:
        """The FLOAT/DOUBLE columns whose own digests differ (exact references only)."""
        expected = self.expected.column_digests or {}
        actual = (self.actual.column_digests if self.actual else None) or {}
        return [name for name, digest in expected.items() if actual.get(name) != digest]


@dataclass
class VerificationReport:
    mode: str
    tables: list[TableCheck] = field(default_factory=list)
    missing_objects: list[str] = field(default_factory=list)
    extra_tables: list[str] = field(default_factory=list)
    verified_during_load: int = 0

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables) and not self.missing_objects and not self.extra_tables

    @property
    def failures(self) -> list[str]:
        return [t.describe() for t in self.tables if not t.ok] + \
            [f"{o}: missing on target" for o in self.missing_objects] + \
            [f"{t}: on target but not in the backup" for t in self.extra_tables]

    @property
    def rows(self) -> int:
        return sum(t.expected.rows for t in self.tables)


class TableVerifier:
    """Measures target tables in a small pool of connections (one per worker thread)."""

    def __init__(self, target: TargetConfig, reference: Reference, *, label: str,
                 databases: list[str] | None = None, workers: int = 2):
        self.target = target
        self.reference = reference
        self.databases = sorted(set(databases or []) | {t.database for t in reference.tables}
                                | {o.database for o in reference.objects})
        self.label = label
        if reference.mode == "digest" and (reference.digest_algorithm or MD5_SUM64) not in DIGEST_ALGORITHMS:
            raise UnsupportedFormat(f"the backup's digest algorithm {reference.digest_algorithm!r} is "
                                    "unknown to this backupd", hint="upgrade backupd to verify it")
        self._expected = {(t.database, t.table): t for t in reference.tables}
        self._futures: dict[tuple[str, str], Future[TableCheck]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[pymysql.connections.Connection] = []
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify")
        self._early = 0

    def table_loaded(self, database: str, table: str) -> None:
        """Schedule the check of a table the loader has finished (ignores unknown tables)."""
        key = (database, table)
        with self._lock:
            if key in self._expected and key not in self._futures:
                self._futures[key] = self._pool.submit(self._check, key)
                self._early += 1

    def finish(self) -> VerificationReport:
        """Check every table not checked yet and every schema object; never raises on a mismatch."""
        try:
            with self._lock:
                for key in self._expected:
                    if key not in self._futures:
                        self._futures[key] = self._pool.submit(self._check, key)
            report = VerificationReport(mode=self.reference.mode, verified_during_load=self._early)
            report.tables = sorted((f.result() for f in self._futures.values()),
                                   key=lambda check: check.expected.name)
            conn = self._connection()
            present = {(o.database, o.kind, o.name)
                       for o in list_objects(conn, self.databases, label=self.label)}
            report.missing_objects = [f"{o.kind} {o.database}.{o.name}" for o in self.reference.objects
                                      if (o.database, o.kind, o.name) not in present]
            report.extra_tables = [t.name for t in list_tables(conn, self.databases, label=self.label)
                                   if (t.database, t.table) not in self._expected]
            return report
        finally:
            self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for conn in self._connections:
            conn.close()
        self._connections.clear()

    def _connection(self) -> pymysql.connections.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.target, label=self.label, read_timeout=None)
            with self._lock:
                self._connections.append(conn)
        return conn

    def _check(self, key: tuple[str, str]) -> TableCheck:
        expected = self._expected[key]
        conn = self._connection()
        found = list_tables(conn, [key[0]], label=self.label, table=key[1])
        actual = table_reference(conn, found[0], self.reference.mode, label=self.label,
                                 algorithm=self.reference.digest_algorithm or MD5_SUM64) if found else None
        return TableCheck(expected, actual)

