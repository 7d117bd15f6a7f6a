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
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Callable

from backupd.annotations import annotate
from backupd.catalog import Catalog
from backupd.config import Config
from backupd.errors import BackupdError, UsageError, exit_code_for
from backupd.model import utc_now
from backupd.stores import open_stores

log = logging.getLogger(__name__)

ANNOTATION_PREFIX = "drill-"


@dataclass(frozen=True)
class DrillResult:
    shard: str
    target: str
    at: str
    backup: str | None
    chain: list[str]
    verified: bool
    seconds: float
    failure: str | None = None
    exit_code: int = 0


def drill_target(config: Config) -> str:
    if not config.drill.target:
        raise UsageError("drills need a scratch target: set [drill] target = \"NAME\" (a [targets.NAME] "
                         "whose databases or datadir may be replaced at every drill)")
    config.target(config.drill.target)
    return config.drill.target


def run_drill(config: Config, shard: str, *, clock: Callable[[], datetime] = utc_now) -> DrillResult:
    """Restore ``shard``'s newest chain into the drill target, verify it, annotate the backup."""
    from restore.planner import plan_restore
    from restore.runner import run_restore

    target = drill_target(config)
    at = clock()
    stamp = at.strftime("%Y%m%dT%H%M%SZ")
    stores = open_stores(config, config.shard_stores(shard))
    catalog = Catalog(stores)
    started = time.monotonic()
    backup_id, chain, found_in = None, [], []
    try:
        entries = catalog.entries(shard)
        plan = plan_restore([e.manifest for e in entries], shard)
        backup_id, chain = plan.final.id, [m.id for m in plan.steps]
        found_in = next(e.found_in for e in entries if e.manifest.id == backup_id)
        log.info("shard %s: drill: restoring %s into target %s", shard, " + ".join(chain), target)
        run_restore(config, shard, target, backup_id=backup_id, force=True)
        result = DrillResult(shard, target, stamp, backup_id, chain, True, time.monotonic() - started)
    except BackupdError as exc:
        result = DrillResult(shard, target, stamp, backup_id, chain, False, time.monotonic() - started,
                             failure=exc.message, exit_code=exit_code_for(exc))
        log.error("shard %s: drill failed: %s", shard, exc.message)
    if backup_id is not None:
        annotate([s for s in stores if s.name in found_in], shard, backup_id, f"{ANNOTATION_PREFIX}{stamp}",
                 {"kind": "drill", **asdict(result)})
    return result

