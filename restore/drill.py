"""Restore drills: rehearse disaster recovery on a scratch target, and keep the result.

``run_drill`` restores a shard's newest chain into the ``[drill] target`` (a scratch server:
its copy of the shard's databases, or its datadir for physical chains, is replaced every time)
and verifies it exactly like ``restore`` does. The outcome (verified or not, why not, how long
the restore took, which chain) is written as an annotation next to the restored backup
(``<shard>/<backup_id>/annotations/drill-<time>.json``) in every store that holds the backup;
the manifest is never changed. A drill never raises for a failed restore: a failure is its
result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from backupd.errors import BackupdError, UsageError, exit_code_for
from backupd.policy.planner import plan_restore
from backupd.repo.annotations import DRILL_ANNOTATION, DrillRecord, annotate
from backupd.repo.layout import format_id_time
from backupd.repo.model import utc_now
from backupd.repo.repository import Repository
from restore.runner import run_restore

log = logging.getLogger(__name__)


def drill_target(repo: Repository) -> str:
    """The configured ``[drill] target`` (checked to exist), or a UsageError saying to set one."""
    config = repo.config
    if not config.drill.target:
        raise UsageError("drills need a scratch target: set [drill] target = \"NAME\" (a [targets.NAME] "
                         "whose databases or datadir may be replaced at every drill)")
    config.target(config.drill.target)
    return config.drill.target


def run_drill(repo: Repository, shard_id: str, *, clock: Callable[[], datetime] = utc_now) -> DrillRecord:
    """Restore ``shard_id``'s newest chain into the drill target, verify it, annotate the backup."""
    target = drill_target(repo)
    at = clock()
    stamp = format_id_time(at)
    shard = repo.shard(shard_id)
    catalog = repo.catalog(s.name for s in shard.stores)
    started = time.monotonic()
    backup_id, chain, found_in = None, [], []
    try:
        entries = catalog.entries(shard.id)
        plan = plan_restore([e.manifest for e in entries], shard.id)
        backup_id, chain = plan.final.id, [m.id for m in plan.steps]
        found_in = next(e.found_in for e in entries if e.manifest.id == backup_id)
        log.info("%s: drill: restoring %s into target %s", shard.label, " + ".join(chain), target)
        run_restore(repo.config.settings, shard.id, repo.target(target, shard.id), backup_id=backup_id, force=True)
        result = DrillRecord(shard.id, target, stamp, backup_id, chain, True, time.monotonic() - started)
    except BackupdError as exc:
        result = DrillRecord(shard.id, target, stamp, backup_id, chain, False, time.monotonic() - started,
                             failure=exc.message, exit_code=exit_code_for(exc))
        log.error("%s: drill failed: %s", shard.label, exc.message)
    if backup_id is not None:
        annotate([s for s in shard.stores if s.name in found_in], shard.id, backup_id,
                 f"{DRILL_ANNOTATION}{stamp}", {"kind": "drill", **result.to_json()})
    return result
