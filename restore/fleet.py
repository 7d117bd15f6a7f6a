"""Fleet restore: many shards at once, each into its own server, all to the same instant.

``restore_fleet`` first plans every shard (the same ``at`` for all of them: one instant for the
whole application), then restores ``parallel`` shards at a time, the largest first (the longest
restore starts first, so the fleet is done soonest). Each shard is restored exactly as a single
``restore`` would: every part verified before it is applied, every table verified after, and,
with ``replicas``, attached to its own primary and waited for. The stores are shared: a dead
cloud is found out once for the whole fleet, not once per shard.

One shard's failure never stops the others: each shard gets an outcome (its exit code, 3 for
data that does not verify, 1 for anything else that failed), and the fleet's exit code is the
worst of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backupd.errors import BackupdError, exit_code_for
from backupd.policy.planner import RestorePlan
from backupd.repo.repository import Repository, Target
from restore.replay import PointInTime, ReplayPlan, ReplayReport, plan_replay
from restore.replica import CatchUp, attach_replica, resolve_source
from restore.runner import RestoreReport, plan_for, run_restore

log = logging.getLogger(__name__)


@dataclass
class ShardOutcome:
    """How one shard's restore ended (one row of the fleet's summary)."""

    shard: str
    server: str                 # where it was restored (the target's endpoint for the shard)
    backup: str | None = None   # the backup restored (the last of its chain)
    chain: tuple[str, ...] = ()
    raw_bytes: int = 0
    seconds: float = 0.0
    verified: bool = False
    exit_code: int = 0
    failure: str | None = None
    catch_up: CatchUp | None = None
    rebuild_seconds: float | None = None  # restore + replica caught up
    replay: ReplayReport | None = None    # the binlogs replayed to the fleet's instant

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def to_json(self) -> dict[str, Any]:
        return {"shard": self.shard, "target": self.server, "backup": self.backup, "chain": list(self.chain),
                "raw_bytes": self.raw_bytes, "seconds": round(self.seconds, 3), "verified": self.verified,
                "exit_code": self.exit_code, "failure": self.failure,
                "replica_caught_up": None if self.catch_up is None else self.catch_up.reached,
                "rebuild_seconds": None if self.rebuild_seconds is None else round(self.rebuild_seconds, 3),
                "replay": self.replay.to_json() if self.replay else None}


@dataclass
class _Job:
    shard: str
    target: Target
    plan: RestorePlan
    replay: ReplayPlan | None = None

    @property
    def size(self) -> int:
        return sum(step.raw_bytes for step in self.plan.steps)


def restore_fleet(repo: Repository, shard_ids: list[str], target_name: str, *, at: datetime | None,
                  force: bool, parallel: int, replicas: bool, catchup_timeout: float, replay: bool = True,
                  on_done: Callable[[ShardOutcome], None] | None = None) -> list[ShardOutcome]:
    """Restore ``shard_ids`` into target ``target_name`` (see the module docstring); the outcomes
    in ``shard_ids``' order. With ``replay``, each shard's archived binlogs take it from its
    backup to ``at`` (or to its newest archived point). ``on_done`` is called as each shard ends
    (from a worker thread)."""
    outcomes: dict[str, ShardOutcome] = {}
    jobs: list[_Job] = []
    for shard_id in shard_ids:
        target = repo.target(target_name, shard_id)
        try:
            plan = plan_for(target, shard_id, at=at)
            replay_plan = plan_replay(target, shard_id, plan.final, PointInTime(until=at)) if replay else None
            jobs.append(_Job(shard_id, target, plan, replay_plan))
        except BackupdError as exc:
            outcomes[shard_id] = _failed(shard_id, target, exc)
            log.error("shard %s: %s", shard_id, exc.message)
            if on_done is not None:
                on_done(outcomes[shard_id])
    jobs.sort(key=lambda job: job.size, reverse=True)  # the longest restore starts first
    log.info("fleet: restoring %d shard(s) into target %s, %d at a time, largest first: %s", len(jobs),
             target_name, parallel, ", ".join(job.shard for job in jobs))

    def run(job: _Job) -> None:
        outcome = _restore_one(repo, job, force=force, replicas=replicas, catchup_timeout=catchup_timeout)
        outcomes[job.shard] = outcome
        if on_done is not None:
            on_done(outcome)

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="fleet") as pool:
        for done in [pool.submit(run, job) for job in jobs]:
            done.result()
    return [outcomes[shard_id] for shard_id in shard_ids]


def _restore_one(repo: Repository, job: _Job, *, force: bool, replicas: bool,
                 catchup_timeout: float) -> ShardOutcome:
    started = time.monotonic()
    shard, target = job.shard, job.target
    try:
        source = resolve_source(repo.config, shard, shard) if replicas else None  # before restoring
        report = run_restore(repo.config.settings, shard, target, plan=job.plan, force=force, replay_plan=job.replay)
        outcome = _restored(shard, target, report, time.monotonic() - started)
        if source is not None:
            outcome.catch_up = attach_replica(target, source, report.manifest, timeout=catchup_timeout,
                                              coordinates=report.coordinates)
            outcome.rebuild_seconds = time.monotonic() - started
        log.info("shard %s: restored into %s and verified in %.1fs", shard, target.config.describe(),
                 time.monotonic() - started)
        return outcome
    except BackupdError as exc:
        log.error("shard %s: %s", shard, exc.message)
        outcome = _failed(shard, target, exc, job.plan)
    except Exception as exc:  # a bug must not take the other shards down with it
        log.exception("shard %s: restore failed", shard)
        outcome = ShardOutcome(shard, target.config.describe(), job.plan.final.id,
                               tuple(m.id for m in job.plan.steps), exit_code=1, failure=repr(exc))
    outcome.seconds = time.monotonic() - started
    return outcome


def _restored(shard: str, target: Target, report: RestoreReport, seconds: float) -> ShardOutcome:
    return ShardOutcome(shard, target.config.describe(), report.manifest.id, tuple(report.chain),
                        report.applied_bytes, seconds, verified=report.verification.ok, replay=report.replay)


def _failed(shard: str, target: Target, error: BackupdError, plan: RestorePlan | None = None) -> ShardOutcome:
    return ShardOutcome(shard, target.config.describe(), plan.final.id if plan else None,
                        tuple(m.id for m in plan.steps) if plan else (), exit_code=exit_code_for(error),
                        failure=error.message)
