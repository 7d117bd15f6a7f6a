"""One restore, end to end: plan -> preflight -> fetch+verify parts -> apply -> verify data.

A plan is a full, or a full and an incremental applied on top of it; the target is verified
against the reference of the last one (its snapshot's row counts and digests).

Contract of ``run_restore``: it returns a RestoreReport whose ``verification.ok`` is True, or
raises: NoBackupFound, TargetNotEmpty, CorruptPart (a part has no good copy: nothing from it or
after it is applied), RestoreFailed, or DataMismatch (applied, but the tables differ from the
backup's reference; the report is attached to the error).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime

from backupd.config import Settings
from backupd.errors import CorruptPart, DataMismatch, NoBackupFound, RestoreFailed
from backupd.policy.planner import RestorePlan, plan_restore
from backupd.progress import Progress
from backupd.repo.catalog import Catalog
from backupd.repo.codec import PartDecodeError, decode_part
from backupd.repo.fetch import PartFetcher
from backupd.repo.model import Coordinates, Manifest
from backupd.repo.repository import Target
from restore.apply import MysqlClientApplier
from restore.markers import LoadMarkers, parse_marker
from restore.parallel import LoadProgress, SectionLoader, default_jobs
from restore.physical import restore_physical
from restore.replay import ReplayPlan, ReplayReport, check_replay_target, holds_gtid, replay
from restore.target import prepare_target, reconcile_for_incremental
from restore.verify import TableVerifier, VerificationReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreReport:
    manifest: Manifest
    target: str
    apply_seconds: float
    verify_seconds: float
    verification: VerificationReport
    chain: list[str]  # the ids applied, a full first
    applied_bytes: int  # raw (uncompressed) bytes of every backup applied
    phases: dict[str, float] = field(default_factory=dict)  # physical: seconds per phase
    replay: ReplayReport | None = None  # a point-in-time restore: the binlogs replayed after the backup

    @property
    def coordinates(self) -> Coordinates:
        """Where the restored target is in the source's binlog (a replica starts there)."""
        base = self.manifest.coordinates
        return self.replay.coordinates(base) if self.replay is not None else base

    @property
    def seconds(self) -> float:
        return self.apply_seconds + self.verify_seconds

    @property
    def throughput(self) -> float:
        """Raw (uncompressed) bytes applied per second."""
        return self.applied_bytes / self.apply_seconds if self.apply_seconds > 0 else 0.0


def plan_for(target: Target, shard_id: str, *, backup_id: str | None = None,
             at: datetime | None = None, before_gtid: str | None = None) -> RestorePlan:
    """Which backups restore ``shard_id`` from ``target``'s stores (``backupd.policy.planner``);
    with ``before_gtid``, only backups taken before that transaction (a replay goes on to it).
    Stores that cannot be listed are named (one warning each) and skipped; if no chain is left,
    the error says the stores that answered hold none and names the others."""
    catalog = Catalog(target.stores)
    backups = catalog.backups(shard_id)
    if before_gtid is not None:
        backups = [m for m in backups if not holds_gtid(m.coordinates.gtid, before_gtid)]
    for bad in catalog.unreadable:
        log.warning("%s: %s; restoring from the other stores", target.label, bad.describe())
    try:
        return plan_restore(backups, shard_id, at=at, backup_id=backup_id)
    except NoBackupFound as exc:
        if not catalog.unlisted:
            raise
        unreachable = "; ".join(bad.error for bad in catalog.unlisted)
        raise NoBackupFound(f"{exc.message} (the stores that answered hold none; could not list: {unreachable})",
                            hint="restore from another target's stores, or wait for these to answer") from None


def run_restore(settings: Settings, shard_id: str, target: Target, *, backup_id: str | None = None,
                at: datetime | None = None, force: bool = False, plan: RestorePlan | None = None,
                replay_plan: ReplayPlan | None = None, jobs: int | None = None) -> RestoreReport:
    """Restore ``shard_id`` into ``target`` from its stores and verify it (see the module contract);
    ``plan`` (from ``plan_for``) if it was made already. With ``replay_plan`` (``restore.replay``,
    made for this plan's last backup), the verified backup is then taken to the point in time by
    replaying the archived binlogs, and the replay proven."""
    report = _restore_backup(settings, shard_id, target, backup_id=backup_id, at=at, force=force, plan=plan,
                             replay_plan=replay_plan, jobs=jobs or default_jobs(settings))
    if replay_plan is None:
        return report
    if report.manifest.is_physical:
        check_replay_target(target)
    return replace(report, replay=replay(settings, target, replay_plan))


def _restore_backup(settings: Settings, shard_id: str, target: Target, *, backup_id: str | None,
                    at: datetime | None, force: bool, plan: RestorePlan | None,
                    replay_plan: ReplayPlan | None, jobs: int) -> RestoreReport:
    stores = target.stores
    if plan is None:
        plan = plan_for(target, shard_id, backup_id=backup_id, at=at)
    for note in plan.notes:
        log.warning("shard %s: %s", shard_id, note)
    manifest = plan.final
    log.info("shard %s: restoring %s (snapshot %s) into target %s", shard_id,
             " + ".join(f"{m.kind} {m.id}" for m in plan.steps), manifest.snapshot_at.isoformat(),
             target.name)
    target.keys.require(plan.steps, replay_plan.records if replay_plan is not None else ())  # exit 2 here, not later
    fetchers = [PartFetcher.of(stores, step, target.keys.opener(step)) for step in plan.steps]
    for fetcher in fetchers:
        fetcher.preflight()
    if replay_plan is not None:
        PartFetcher(stores, "binlog archive", [r.as_part(i + 1) for i, r in enumerate(replay_plan.records)],
                    owner=f"the binlog archive of shard {shard_id}").preflight()
        if not plan.full.is_physical:
            check_replay_target(target)
    if plan.full.is_physical:
        return _restore_physical(settings, target, plan.steps, fetchers, force=force)
    databases = sorted({d for step in plan.steps for d in step.databases})
    prepare_target(target, databases, force=force)

    verifier = TableVerifier(target.config, manifest.reference, label=target.label, databases=manifest.databases)
    started = time.monotonic()
    try:
        for step, fetcher in zip(plan.steps, fetchers, strict=True):
            if step.kind == "incremental":
                reconcile_for_incremental(target, plan.full, step)
            final = step is manifest
            if step.is_table_addressed:
                _apply_sections(settings, target, step, fetcher, verifier if final else None, jobs)
            else:
                _apply(settings, target, step, fetcher, verifier if final else None)
        apply_seconds = time.monotonic() - started
        started = time.monotonic()
        verification = verifier.finish()
    finally:
        verifier.close()
    report = RestoreReport(manifest, target.name, apply_seconds, time.monotonic() - started,
                           verification, [step.id for step in plan.steps],
                           sum(step.raw_bytes for step in plan.steps))
    _raise_on_mismatch(report)
    return report


def _restore_physical(settings: Settings, target: Target, steps: list[Manifest],
                      fetchers: list[PartFetcher], *, force: bool) -> RestoreReport:
    """Restore a physical chain, then verify the started server against the reference."""
    manifest = steps[-1]
    times = restore_physical(settings, target, steps, fetchers, force=force)
    started = time.monotonic()
    verifier = TableVerifier(target.config, manifest.reference, label=target.label,
                             databases=manifest.databases)
    verification = verifier.finish()
    report = RestoreReport(manifest, target.name, sum(times.phases.values()), time.monotonic() - started,
                           verification, [step.id for step in steps],
                           sum(step.raw_bytes for step in steps), dict(times.phases))
    _raise_on_mismatch(report)
    return report


def _raise_on_mismatch(report: RestoreReport) -> None:
    verification = report.verification
    if not verification.ok:
        error = DataMismatch(f"target {report.target}: restored data differs from backup {report.manifest.id} "
                             f"in {len(verification.failures)} place(s): {verification.failures[0]}",
                             detail="\n".join(verification.failures))
        error.report = report
        raise error


def _apply_sections(settings: Settings, target: Target, manifest: Manifest, fetcher: PartFetcher,
                    verifier: TableVerifier | None, jobs: int) -> None:
    """Load a table-addressed backup with ``jobs`` clients (``restore.parallel``)."""
    sections = manifest.sections or []
    tables = [s for s in sections if s.kind == "table"]
    load = LoadProgress(total=len(tables))
    with Progress(f"{target.label}: loading {manifest.kind} {manifest.id} ({jobs} clients)",
                  manifest.raw_bytes) as progress:
        loader = SectionLoader(settings, target, manifest, fetcher, verifier=verifier, jobs=jobs, progress=progress)
        try:
            loader.load_in_order([s for s in sections if s.kind == "database"], use=False)
            loader.load_tables(tables, load)
            loader.load_in_order([s for s in sections if s.kind == "objects"], client=True)
        except (CorruptPart, RestoreFailed) as exc:
            exc.hint = (f"{target.label} is partially restored from {manifest.kind} {manifest.id}: "
                        f"{load.describe()}; fix the cause and rerun with --force")
            raise


def _apply(settings: Settings, target: Target, manifest: Manifest, fetcher: PartFetcher,
           verifier: TableVerifier | None) -> None:
    """Stream one backup's verified parts into the target. With a ``verifier``, each table is
    handed to it as soon as the mysql client has loaded it (see ``restore.markers``)."""
    markers = LoadMarkers()

    def on_output(line: bytes) -> None:
        number = parse_marker(line)
        if verifier is not None and number is not None and number in markers.tables:
            verifier.table_loaded(*markers.tables[number])

    applied = 0
    with Progress(f"{target.label}: applying {manifest.kind} {manifest.id}", manifest.raw_bytes) as progress, \
            MysqlClientApplier(target, mysql=settings.mysql, work_dir=settings.work_dir,
                               on_output=on_output) as applier:
        try:
            for part, data in fetcher.verified_parts():
                try:
                    for chunk in decode_part(data):
                        for piece in markers.feed(chunk):
                            applier.write(piece)
                except PartDecodeError as exc:
                    raise CorruptPart(f"part {part.key} of backup {manifest.id}: {exc}") from None
                applied += 1
                progress.advance(part.raw_size)
            for piece in markers.flush():
                applier.write(piece)
            applier.finish()
            progress.finish()
        except BaseException as exc:
            progress.finish()
            applier.abort()
            if isinstance(exc, (CorruptPart, RestoreFailed)) and not applied:
                exc.hint = (f"nothing of {manifest.kind} {manifest.id} was applied to {target.label}; fix the cause "
                            "and rerun")
            elif isinstance(exc, (CorruptPart, RestoreFailed)):
                exc.hint = (f"{target.label} is partially restored ({applied} of "
                            f"{len(manifest.parts)} parts of {manifest.kind} {manifest.id} applied); "
                            "fix the cause and rerun with --force")
            raise
