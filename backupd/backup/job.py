"""One backup job, as ``backupd backup`` and the daemon run it.

1. Take the shard's lock (``backupd.backup.lease``); if another run holds it, raise ``LockHeld`` (or,
   with ``if_due``, skip: the other run is doing the work).
2. With the lock held, delete the shard's orphaned parts (``backupd.backup.orphans``): no backup of
   the shard can be running, so any uncommitted backup is dead.
3. With ``if_due``, ask the planner again with a fresh catalog: another host may have taken the
   backup while this one waited (double-checked, so two daemons never both back up one slot).
4. Back up; the lock is checked once more just before the manifest is committed (a fence).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from backupd.backup.lease import Owner, ShardLease, ShardLock
from backupd.backup.orphans import clean_orphans, committed_ids
from backupd.backup.pipeline import BackupReport, run_backup
from backupd.config import Config
from backupd.errors import LockHeld
from backupd.policy.scheduler import History, cadence_of, next_job
from backupd.repo.model import BackupKind, utc_now
from backupd.repo.repository import Repository, Shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    """``committed`` (with its report) or ``skipped`` (with the reason). ``store_stats`` holds
    each store's retries and failed operations over the whole job (lock, catalog, orphans,
    upload, commit)."""

    shard: str
    kind: BackupKind
    status: str  # "committed" | "skipped"
    reason: str = ""
    report: BackupReport | None = None
    store_stats: dict[str, dict[str, int]] = field(default_factory=dict)


def shard_lock(config: Config, shard: Shard, purpose: str,
               clock: Callable[[], datetime] = utc_now) -> ShardLock:
    owner = Owner.this_process(purpose)
    return ShardLock([ShardLease(store, shard.id, ttl=config.schedule.lock_ttl, owner=owner, clock=clock)
                      for store in shard.lock_stores])


def run_backup_job(repo: Repository, shard: Shard, kind: BackupKind = "full", *, if_due: bool = False,
                   clock: Callable[[], datetime] = utc_now) -> JobResult:
    """Run one backup of ``shard`` under its lock (see the module docstring).

    With ``if_due``, ``kind`` is ignored: the job takes whichever backup the schedule says is due
    now, or is skipped when none is. Every store is opened once, from ``repo``.
    """
    shard.config.password  # noqa: B018 - read now: a missing one is a config error before anything starts
    lock = shard_lock(repo.config, shard, f"backup {'due' if if_due else kind}", clock)
    try:
        lock.acquire()
    except LockHeld as exc:
        if if_due:
            return JobResult(shard.id, kind, "skipped", str(exc), store_stats=repo.store_stats())
        raise
    try:
        with lock.renewing():
            result = _locked_job(repo, shard, kind, lock, if_due=if_due, clock=clock)
    finally:
        lock.release()
    return JobResult(result.shard, result.kind, result.status, result.reason, result.report, repo.store_stats())


def _locked_job(repo: Repository, shard: Shard, kind: BackupKind, lock: ShardLock, *, if_due: bool,
                clock: Callable[[], datetime]) -> JobResult:
    catalog = repo.catalog()
    entries = catalog.entries(shard.id)  # read once: orphans, the double check and the base full
    backups = [e.manifest for e in entries]
    removed = clean_orphans(shard.stores, shard.id, committed_ids(catalog, entries, shard.id))
    if removed:
        log.warning("%s: deleted %d orphaned objects left by interrupted backups", shard.label, removed)
    if if_due:
        job = next_job(shard.id, cadence_of(repo.config, shard.id), History.of(backups), clock())
        if not job.is_due(clock()):
            return JobResult(shard.id, job.kind, "skipped",
                             f"nothing due: next is {job.kind} at {job.due_at.isoformat()}")
        log.info("%s: %s due: %s", shard.label, job.kind, job.reason)
        kind = job.kind
    report = run_backup(repo.config, shard, kind, clock=clock, before_commit=lock.check, backups=backups)
    # the kind taken (an incremental may have become a full: encryption changed, another server)
    return JobResult(shard.id, report.manifest.kind, "committed", report=report)
