"""What the daemon and its child jobs say to each other: one typed result per job kind, with one
JSON encoding that both sides use, and the one place results become metrics.

The daemon runs every job as a child process (``backupd <command> --json``); the child prints
its result as one JSON document on stdout, the same document a user gets with ``--json``, and
the daemon decodes it with the same class that encoded it:

=================  ===========================================  ==========================
job kind           child command                                result
=================  ===========================================  ==========================
full, incremental  ``backup --shard ID --if-due --json``        ``BackupOutcome``
prune              ``prune --shard ID``                         (its exit status)
audit-quick/-deep  ``audit --shard ID --json [--level deep]``   ``AuditReport``
drill              ``audit --shard ID --json --level drill``    ``DrillOutcome``
binlogs            ``binlogs --shard ID --json``                (runs until stopped; its
                                                                exit status)
=================  ===========================================  ==========================

The binlog archiver is the one long-running kind: the daemon keeps one per shard that archives
its binlogs, restarts it with a backoff, and stops it with SIGTERM. A child that prints no
valid result is a ``ChildOutputError`` naming the job, never a ``KeyError``. ``samples`` turns
a result into metrics; the one-shot CLI and the daemon both emit through it (the daemon's
children leave metrics to it: ``backupd.metrics.UNDER_DAEMON_ENV``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from backupd.backup.job import JobResult
from backupd.config import Config
from backupd.errors import BackupdError
from backupd.metrics import Sample, audit_samples, backup_samples, drill_samples, failure_samples, store_samples
from backupd.ops.audit import AuditReport
from backupd.repo.annotations import DEEP_AUDIT_ANNOTATION, DRILL_ANNOTATION, DrillRecord
from backupd.repo.model import BackupKind


class JobKind(Enum):
    """Every kind of job the daemon runs as a child process."""

    FULL = "full"
    INCREMENTAL = "incremental"
    PRUNE = "prune"
    AUDIT_QUICK = "audit-quick"
    AUDIT_DEEP = "audit-deep"
    DRILL = "drill"
    BINLOGS = "binlogs"
    REPAIR = "repair"  # sync --verify of a shard, after a deep audit found something

    @classmethod
    def backup(cls, kind: BackupKind) -> JobKind:
        return cls.FULL if kind == "full" else cls.INCREMENTAL

    @property
    def is_backup(self) -> bool:
        return self in (JobKind.FULL, JobKind.INCREMENTAL)

    @property
    def is_maintenance(self) -> bool:
        """A deep audit or a drill: long, one at a time, on the daemon's own schedule."""
        return self in (JobKind.AUDIT_DEEP, JobKind.DRILL)

    @property
    def level(self) -> str:
        """The ``audit --level`` of an audit job (a drill is the ``drill`` level)."""
        return {JobKind.AUDIT_QUICK: "quick", JobKind.AUDIT_DEEP: "deep", JobKind.DRILL: "drill"}[self]

    @property
    def description(self) -> str:
        return {JobKind.FULL: "full backup", JobKind.INCREMENTAL: "incremental backup", JobKind.PRUNE: "prune",
                JobKind.AUDIT_QUICK: "quick audit", JobKind.AUDIT_DEEP: "deep audit",
                JobKind.DRILL: "drill", JobKind.BINLOGS: "binlog archiver",
                JobKind.REPAIR: "repair (sync --verify)"}[self]

    def command(self, shard: str, config: Config) -> list[str]:
        """The ``backupd`` arguments of this job's child process for ``shard``."""
        if self.is_backup:
            return ["backup", "--shard", shard, "--kind", self.value, "--if-due", "--json"]
        if self is JobKind.PRUNE:
            return ["prune", "--shard", shard]
        if self is JobKind.BINLOGS:
            return ["binlogs", "--shard", shard, "--json"]
        if self is JobKind.REPAIR:
            return ["sync", "--shard", shard, "--verify"]
        audit = ["audit", "--shard", shard, "--json"]
        if self is JobKind.AUDIT_DEEP:  # every copy HEADed too: daily, what the provider no longer serves
            return audit + ["--level", self.level, "--sample", f"{config.audit.deep_sample:g}", "--heads"]
        if self is JobKind.DRILL:
            return audit + ["--level", self.level]
        return audit

    def every(self, config: Config) -> float:
        """How often the daemon runs a maintenance job on each shard (0: never)."""
        if self is JobKind.DRILL:
            return config.drill.every if config.drill.target else 0.0
        if self is JobKind.AUDIT_DEEP:
            return config.audit.deep_every
        raise ValueError(f"{self.description} is not a maintenance job")

    @property
    def annotation(self) -> str:
        """The annotation prefix a maintenance job leaves (when it last ran, across restarts)."""
        if self is JobKind.DRILL:
            return DRILL_ANNOTATION
        if self is JobKind.AUDIT_DEEP:
            return DEEP_AUDIT_ANNOTATION
        raise ValueError(f"{self.description} is not a maintenance job")


MAINTENANCE = (JobKind.DRILL, JobKind.AUDIT_DEEP)  # in the order the daemon considers them


@dataclass(frozen=True)
class BackupOutcome:
    """A backup job's result: ``committed``, ``skipped`` (with the reason) or ``failed`` (never
    printed: a failed job reports its error on stderr; used for the failure metric)."""

    result: str  # "committed" | "skipped" | "failed"
    shard: str
    kind: BackupKind
    id: str | None = None
    parent_id: str | None = None
    seconds: float = 0.0
    raw_bytes: int = 0
    stored_bytes: int = 0
    degraded: dict[str, str] = field(default_factory=dict)
    store_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    reason: str = ""

    @classmethod
    def of(cls, job: JobResult) -> BackupOutcome:
        if job.report is None:
            return cls("skipped", job.shard, job.kind, reason=job.reason)
        m = job.report.manifest
        return cls("committed", job.shard, job.kind, id=m.id, parent_id=m.parent_id, seconds=job.report.seconds,
                   raw_bytes=m.raw_bytes, stored_bytes=m.stored_bytes, degraded=job.report.degraded,
                   store_stats=job.store_stats)

    @classmethod
    def failed(cls, shard: str, kind: BackupKind) -> BackupOutcome:
        return cls("failed", shard, kind)

    def to_json(self) -> dict[str, Any]:
        """What ``backupd backup --json`` prints."""
        document: dict[str, Any] = {"result": self.result, "shard": self.shard, "kind": self.kind}
        if self.result == "committed":
            document.update(id=self.id, parent_id=self.parent_id, seconds=round(self.seconds, 3),
                            raw_bytes=self.raw_bytes, stored_bytes=self.stored_bytes, degraded=self.degraded,
                            store_stats=self.store_stats)
        else:
            document["reason"] = self.reason
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> BackupOutcome:
        result, kind = document["result"], document["kind"]
        if result not in ("committed", "skipped") or kind not in ("full", "incremental"):
            raise ValueError(f"result {result!r} of kind {kind!r}")
        return cls(result, str(document["shard"]), kind, id=document.get("id"),
                   parent_id=document.get("parent_id"), seconds=float(document.get("seconds") or 0),
                   raw_bytes=int(document.get("raw_bytes") or 0), stored_bytes=int(document.get("stored_bytes") or 0),
                   degraded=dict(document.get("degraded") or {}), store_stats=dict(document.get("store_stats") or {}),
                   reason=str(document.get("reason") or ""))


@dataclass(frozen=True)
class DrillOutcome:
    """A drill job's result: one record per shard drilled."""

    drills: list[DrillRecord]

    @property
    def ok(self) -> bool:
        return all(d.verified for d in self.drills)

    def to_json(self) -> dict[str, Any]:
        """What ``backupd audit --level drill --json`` prints."""
        return {"level": "drill", "ok": self.ok, "drills": [d.to_json() for d in self.drills]}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> DrillOutcome:
        if document.get("level") != "drill":
            raise ValueError(f"level {document.get('level')!r}, expected 'drill'")
        return cls([DrillRecord.from_json(d) for d in document["drills"]])


Outcome = BackupOutcome | AuditReport | DrillOutcome
_RESULT_TYPES: dict[JobKind, Any] = {
    JobKind.FULL: BackupOutcome, JobKind.INCREMENTAL: BackupOutcome,
    JobKind.AUDIT_QUICK: AuditReport, JobKind.AUDIT_DEEP: AuditReport, JobKind.DRILL: DrillOutcome,
}


class ChildOutputError(BackupdError):
    """A child job printed no valid result."""


def encode(outcome: Outcome) -> str:
    """The one JSON document a child prints for its result."""
    return json.dumps(outcome.to_json(), indent=None if isinstance(outcome, BackupOutcome) else 2)


def decode(kind: JobKind, shard: str, output: str) -> Outcome:
    """The result a child job of ``kind`` printed; raises ``ChildOutputError`` naming the job."""
    result_type = _RESULT_TYPES.get(kind)
    if result_type is None:
        raise ChildOutputError(f"shard {shard}: a {kind.description} job prints no result")
    try:
        document = json.loads(output)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        outcome: Outcome = result_type.from_json(document)
    except (ValueError, KeyError, TypeError) as exc:
        shown = output.strip().splitlines()[0][:120] if output.strip() else "nothing"
        raise ChildOutputError(f"shard {shard}: the {kind.description} job printed no valid result "
                               f"({type(exc).__name__}: {exc}); it printed: {shown}") from None
    return outcome


def samples(outcome: Outcome) -> list[Sample]:
    """The metrics of one job's result (the one place results become metrics)."""
    if isinstance(outcome, BackupOutcome):
        if outcome.result == "committed":
            return backup_samples(outcome.shard, outcome.kind, seconds=outcome.seconds,
                                  raw_bytes=outcome.raw_bytes, stored_bytes=outcome.stored_bytes) \
                + store_samples(outcome.store_stats)
        if outcome.result == "failed":
            return failure_samples(outcome.shard, outcome.kind)
        return []
    if isinstance(outcome, AuditReport):
        return audit_samples(outcome.level, outcome.findings_by_shard(), outcome.seconds, outcome.bytes_read)
    return [sample for drill in outcome.drills
            for sample in drill_samples(drill.shard, seconds=drill.seconds, verified=drill.verified)]
