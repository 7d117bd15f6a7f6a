"""One backup job, as ``backupd backup`` and the daemon run it.

1. Take the shard's lock (``backupd.lease``); if another run holds it, raise ``LockHeld`` (or,
   with ``if_due``, skip: the other run is doing the work).
2. With the lock held, delete the shard's orphaned parts (``backupd.orphans``): no backup of
   the shard can be running, so any uncommitted backup is dead.
3. With ``if_due``, ask the planner again with a fresh catalog: another host may have taken the
   backup while this one waited (double-checked, so two daemons never both back up one slot).
4. Back up; the lock is checked once more just before the manifest is committed (a fence).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from backupd.catalog import Catalog
from backupd.config import Config
from backupd.errors import LockHeld
from backupd.lease import Owner, ShardLease, ShardLock
from backupd.model import utc_now
from backupd.orphans import clean_orphans, committed_ids
from backupd.pipeline import BackupReport, run_backup
from backupd.scheduler import Cadence, History, next_job
from backupd.stores import open_store, open_stores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    """``committed`` (with its report) or ``skipped`` (with the reason)."""

    shard: str
    kind: str
    status: str
    reason: str = ""
    report: BackupReport | None = None


def cadence_of(config: Config, shard_id: str) -> Cadence:
    schedule = config.schedule.for_shard(shard_id)
    return Cadence.of(shard_id, schedule.full_every, schedule.incremental_every, config.schedule.jitter)


def shard_lock(config: Config, shard_id: str, purpose: str,
               clock: Callable[[], datetime] = utc_now) -> ShardLock:
    owner = Owner.this_process(purpose)
    return ShardLock([ShardLease(open_store(name, config.stores[name]), shard_id, ttl=config.schedule.lock_ttl,
                                 owner=owner, clock=clock) for name in config.lock_stores(shard_id)])


def run_backup_job(config: Config, shard_id: str, kind: str = "full", *, if_due: bool = False,
                   clock: Callable[[], datetime] = utc_now) -> JobResult:
    """Run one backup of ``shard_id`` under its lock (see the module docstring).

    With ``if_due``, ``kind`` is ignored: the job takes whichever backup the schedule says is due
    now, or is skipped when none is.
    """
    config.shard(shard_id)
    lock = shard_lock(config, shard_id, f"backup {'due' if if_due else kind}", clock)
    try:
        lock.acquire()
    except LockHeld as exc:
        if if_due:
            return JobResult(shard_id, kind, "skipped", str(exc))
        raise
    try:
        with lock.renewing():
            return _locked_job(config, shard_id, kind, lock, if_due=if_due, clock=clock)
    finally:
        lock.release()


def _locked_job(config: Config, shard_id: str, kind: str, lock: ShardLock, *, if_due: bool,
                clock: Callable[[], datetime]) -> JobResult:
    catalog = Catalog(open_stores(config, list(config.stores)))
    entries = catalog.entries(shard_id)  # read once: orphans, the double check and the base full
    backups = [e.manifest for e in entries]
    removed = clean_orphans(open_stores(config, config.shard_stores(shard_id)), shard_id,
                            committed_ids(catalog, entries, shard_id))
    if removed:
        log.warning("shard %s: deleted %d orphaned objects left by interrupted backups", shard_id, removed)
    if if_due:
        job = next_job(shard_id, cadence_of(config, shard_id), History.of(backups), clock())
        if not job.is_due(clock()):
            return JobResult(shard_id, job.kind, "skipped",
                             f"nothing due: next is {job.kind} at {job.due_at.isoformat()}")
        log.info("shard %s: %s due: %s", shard_id, job.kind, job.reason)
        kind = job.kind
    report = run_backup(config, shard_id, kind, clock=clock, before_commit=lock.check, backups=backups)
    return JobResult(shard_id, kind, "committed", report=report)
