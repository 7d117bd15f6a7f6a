"""Verification of a restored target against the backup's per-table reference.

The target's tables are measured with the same SQL the source was (``backupd.reference``), in
a few parallel connections. Every table in the reference must exist with the same row count
and, in digest mode, the same digest; every view, trigger, routine and event must exist.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from backupd.config import TargetConfig
from backupd.model import Reference, TableReference
from backupd.mysql import connect
from backupd.reference import list_objects, list_tables, table_reference


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
        return f"{name}: " + ", ".join(parts)


@dataclass
class VerificationReport:
    mode: str
    tables: list[TableCheck] = field(default_factory=list)
    missing_objects: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables) and not self.missing_objects

    @property
    def failures(self) -> list[str]:
        return [t.describe() for t in self.tables if not t.ok] + \
            [f"{o}: missing on target" for o in self.missing_objects]

    @property
    def rows(self) -> int:
        return sum(t.expected.rows for t in self.tables)


def verify_target(target: TargetConfig, reference: Reference, databases: list[str], *,
                  label: str, connections: int = 2) -> VerificationReport:
    """Measure the target and compare it with ``reference`` (never raises on a mismatch)."""
    conn = connect(target, label=label)
    try:
        present = {(t.database, t.table): t for t in list_tables(conn, databases, label=label)}
        objects = {(o.database, o.kind, o.name) for o in list_objects(conn, databases, label=label)}
    finally:
        conn.close()
    report = VerificationReport(mode=reference.mode)
    report.missing_objects = [f"{o.kind} {o.database}.{o.name}" for o in reference.objects
                              if (o.database, o.kind, o.name) not in objects]
    todo = [(ref, present.get((ref.database, ref.table))) for ref in reference.tables]

    def measure(batch: list[tuple[TableReference, object]]) -> list[TableCheck]:
        c = connect(target, label=label, read_timeout=None)
        try:
            return [TableCheck(ref, table_reference(c, info, reference.mode, label=label)  # type: ignore[arg-type]
                               if info is not None else None) for ref, info in batch]
        finally:
            c.close()

    batches = [todo[i::connections] for i in range(connections) if todo[i::connections]]
    with ThreadPoolExecutor(max_workers=max(1, len(batches))) as pool:
        for checks in pool.map(measure, batches):
            report.tables.extend(checks)
    report.tables.sort(key=lambda check: check.expected.name)
    return report
