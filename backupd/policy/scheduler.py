"""What is due, given the catalog and the clock (pure: no I/O; tested with a fake clock).

Decisions come from the catalog, never from memory, so a restart, a crash or a missed window
never loses or doubles a backup:

* a shard's **full** is due when its newest committed full is older than ``full_every``;
* its **incremental** is due when its newest committed backup of any kind is older than
  ``incremental_every`` (and a full is not due: after downtime the shard catches up with one
  full, not with a burst of incrementals);
* ages are measured from snapshots, and each shard's due times are brought forward by a fixed
  offset in ``[0, jitter)`` derived from its id, so shards spread out without ever being late.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from backupd.config import Config
from backupd.repo.model import BackupKind, Manifest
from backupd.units import format_duration

NEVER = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Cadence:
    """How often one shard is backed up (``incremental_every`` None: fulls only)."""

    full_every: timedelta
    incremental_every: timedelta | None
    offset: timedelta = timedelta(0)

    @classmethod
    def of(cls, shard_id: str, full_every: float, incremental_every: float, jitter: float) -> Cadence:
        return cls(timedelta(seconds=full_every),
                   timedelta(seconds=incremental_every) if incremental_every > 0 else None,
                   jitter_offset(shard_id, jitter))


def cadence_of(config: Config, shard_id: str) -> Cadence:
    """Shard ``shard_id``'s cadence, its ``[schedule.shards.ID]`` overrides applied."""
    schedule = config.schedule.for_shard(shard_id)
    return Cadence.of(shard_id, schedule.full_every, schedule.incremental_every, config.schedule.jitter)


def jitter_offset(shard_id: str, jitter: float) -> timedelta:
    """A fixed fraction of ``jitter`` for this shard (the same on every host and every run)."""
    fraction = int.from_bytes(hashlib.sha256(shard_id.encode()).digest()[:8], "big") / 2**64
    return timedelta(seconds=jitter * fraction)


@dataclass(frozen=True)
class History:
    """What the catalog says about a shard: snapshots of its newest full and newest backup."""

    newest_full: datetime | None = None
    newest_any: datetime | None = None

    @classmethod
    def of(cls, manifests: Iterable[Manifest]) -> History:
        manifests = list(manifests)
        fulls = [m.snapshot_at for m in manifests if m.kind == "full"]
        every = [m.snapshot_at for m in manifests]
        return cls(max(fulls, default=None), max(every, default=None))


@dataclass(frozen=True)
class Job:
    """A backup a shard needs, and from when (``due_at`` may be in the future)."""

    shard: str
    kind: BackupKind
    due_at: datetime
    reason: str

    def is_due(self, now: datetime) -> bool:
        return self.due_at <= now


def next_job(shard: str, cadence: Cadence, history: History, now: datetime) -> Job:
    """The shard's next backup: the one due now, else the one that falls due first."""
    if history.newest_full is None:
        return Job(shard, "full", NEVER, "no full backup yet")
    full_due = history.newest_full + cadence.full_every - cadence.offset
    full = Job(shard, "full", full_due, f"newest full is {_age(now, history.newest_full)} old "
                                        f"(full_every {format_duration(cadence.full_every.total_seconds())})")
    if full.is_due(now) or cadence.incremental_every is None:
        return full
    newest = history.newest_any or history.newest_full
    incremental = Job(shard, "incremental", newest + cadence.incremental_every - cadence.offset,
                      f"newest backup is {_age(now, newest)} old (incremental_every "
                      f"{format_duration(cadence.incremental_every.total_seconds())})")
    return incremental if incremental.due_at < full.due_at else full


def due_jobs(now: datetime, cadences: Mapping[str, Cadence], histories: Mapping[str, History], *,
             running: Iterable[str] = (), not_before: Mapping[str, datetime] | None = None) -> list[Job]:
    """Jobs due now, most overdue first (a full before an incremental due at the same time).

    Shards in ``running`` are skipped (one backup per shard at a time), and so are shards whose
    ``not_before`` (a retry backoff after a failure) is still in the future.
    """
    busy = set(running)
    waits = not_before or {}
    jobs = []
    for shard, cadence in cadences.items():
        if shard in busy or waits.get(shard, NEVER) > now:
            continue
        job = next_job(shard, cadence, histories.get(shard, History()), now)
        if job.is_due(now):
            jobs.append(job)
    return sorted(jobs, key=lambda j: (j.due_at, j.kind != "full", j.shard))


def _age(now: datetime, then: datetime) -> str:
    return format_duration(max(0.0, (now - then).total_seconds()))
