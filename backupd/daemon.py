"""``backupd run``: the long-running scheduler (foreground, logs to stderr, systemd-friendly).

Every ``tick`` (the ``schedule`` library drives it) the daemon asks the planner
(``backupd.policy.scheduler``) what is due, from the catalog, and starts up to ``concurrency``
backups, each as a child process ``backupd backup --shard ID --if-due --json`` (``backupd.children``)
whose printed result it decodes with ``backupd.protocol``. Running each backup in
its own process keeps them isolated (a crash or a leak ends with its job), lets two backups use
two cores, and reuses exactly the path a one-shot backup takes: the child takes the shard's
lock, cleans orphans, re-checks that the job is still due and commits or cleans up after
itself. Children run in their own session (a Ctrl-C on the daemon's terminal does not reach
them) and get SIGTERM if the daemon dies (``PR_SET_PDEATHSIG``), so no backup outlives it.

* A failed backup is retried after a backoff (30 s, doubling, at most ``retry_after``).
* After each committed full the daemon runs ``backupd prune --shard ID``.
* After a deep audit that found a copy to repair (``REPAIRABLE``: a missing, short, corrupt or
  rewritten part, a mismatched manifest, a store lacking a backup) it runs ``backupd sync
  --shard ID --verify``, which replaces bad copies from good ones.
* SIGTERM/SIGINT: no new job starts; running backups get ``shutdown_grace`` to finish, then
  SIGTERM (they abort cleanly: no manifest, parts deleted); a second signal aborts them at once.
* SIGHUP: the configuration file is read again; a bad one is rejected (logged) and the running
  configuration kept.
* The catalog is re-read after every job of a shard and every ``catalog_refresh`` (to see what
  other hosts did); manifests are read once and cached (they are immutable).
* Binlog archivers: one child ``backupd binlogs --shard ID`` per shard that archives its binlogs
  (``[binlogs] enabled`` or the shard's ``binlogs``), started with the daemon, restarted after
  it exits (5 s, doubling, at most ``ARCHIVER_RETRY_MAX``; an archiver that ran for a while
  starts again at 5 s), started or stopped on SIGHUP as the configuration says, and stopped
  first at shutdown (SIGTERM: they commit what they read and exit). The archiver holds the
  shard's binlog lease, so the daemons of two hosts never archive one shard twice: the second
  keeps retrying and takes over when the first host's lease expires. Every metrics interval
  the daemon sends each archived shard's ``rpo_seconds``.
* ``--once``: one round of all of it, for cron, systemd timers or Kubernetes CronJobs: start
  the backups that are due (``concurrency`` at a time) with their prunes and quick audits, then
  the deep audits and drills that are due, one at a time; exit 1 if a backup or an audit run
  failed (or a drill could not run), 3 if an audit found something or a drill found the backup
  at fault, 0 otherwise. Binlog archivers run until stopped, so ``--once`` starts none.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import schedule

from backupd.children import Child
from backupd.config import Config, load_config
from backupd.errors import ConfigError
from backupd.metrics import Metrics, age_samples, binlog_samples
from backupd.ops.audit import AuditReport
from backupd.policy.scheduler import Cadence, History, Job, cadence_of, due_jobs, next_job
from backupd.protocol import (
    MAINTENANCE,
    BackupOutcome,
    ChildOutputError,
    DrillOutcome,
    JobKind,
    decode,
    samples,
)
from backupd.repo.annotations import last_annotations
from backupd.repo.binlogs import read_position
from backupd.repo.layout import parse_id_time
from backupd.repo.model import Manifest, utc_now
from backupd.repo.repository import Repository
from backupd.units import format_duration

log = logging.getLogger(__name__)
FIRST_RETRY = 30.0
ARCHIVER_FIRST_RETRY = 5.0
ARCHIVER_RETRY_MAX = 60.0
ARCHIVER_STOP_WAIT = 60.0
ABORT_WAIT = 120.0
POLL = 0.2
# what a deep audit finds that sync --verify can put right from a good copy in another store
REPAIRABLE = frozenset({"part-missing", "part-size", "part-corrupt", "part-checksum", "part-etag",
                        "manifest-mismatch", "store-lacks"})


class Daemon:
    def __init__(self, config_path: Path, config: Config, *, once: bool = False,
                 clock: Callable[[], datetime] = utc_now, command: list[str] | None = None, json_lines: bool = False):
        """``json_lines``: print one JSON object per finished job on stdout (``run --json``)."""
        self.config_path = config_path
        self.config = config
        self.once = once
        self.json_lines = json_lines
        self.clock = clock
        self.command = command or [sys.executable, "-m", "backupd.cli"]
        self.backups: dict[str, Child] = {}
        self.archivers: dict[str, Child] = {}  # shard: its binlog archiver
        self.archiver_failures: dict[str, int] = {}
        self.archiver_not_before: dict[str, float] = {}  # monotonic
        self.chores: list[Child] = []  # prunes and audits, started after backups or by maintain()
        self.failures: dict[str, int] = {}
        self.not_before: dict[str, datetime] = {}
        self.histories: dict[str, History] = {}
        self.stale: set[str] = set()
        self.queue: list[Job] | None = None  # --once: the jobs still to start
        self.failed_jobs = 0
        self.failed_checks = 0  # audits with findings, drills that did not verify
        self.audits_started: set[tuple[str, JobKind]] = set()  # --once: each due audit runs once
        self.signals = 0
        self.reload_requested = False
        self.repo = Repository(config)
        self._catalog = self.repo.catalog()
        self._last_refresh = 0.0
        self._reported: set[tuple[str, str]] = set()
        self.ticker = schedule.Scheduler()
        self.metrics = Metrics.from_config(config.metrics, owner=True)

    # ------------------------------------------------------------------ configuration
    def enabled_shards(self) -> list[str]:
        return [s for s in self.config.shards if self.config.schedule.for_shard(s).enabled]

    def reload(self) -> None:
        self.reload_requested = False
        try:
            config = load_config(self.config_path)
            config.check_secrets()
        except ConfigError as exc:
            log.error("reload: %s; keeping the running configuration", exc.message)
            return
        self.config = config
        self.repo = Repository(config)
        self._catalog = self.repo.catalog()
        self.histories.clear()
        self.metrics.close()
        self.metrics = Metrics.from_config(config.metrics, owner=True)
        self._start_ticker()
        log.info("reload: configuration %s loaded: %d shards, %d stores", self.config_path,
                 len(config.shards), len(config.stores))

    # ------------------------------------------------------------------ catalog
    def refresh(self, force: bool = False) -> None:
        """Re-read the catalog if it is older than ``catalog_refresh`` or a shard's job ended."""
        due = time.monotonic() - self._last_refresh >= self.config.schedule.catalog_refresh
        if not (force or due or self.stale or not self.histories):
            return
        entries = self._catalog.entries()
        for bad in self._catalog.unreadable:
            if (bad.store, bad.key) not in self._reported:  # once per daemon, not every refresh
                self._reported.add((bad.store, bad.key))
                log.warning("catalog: %s", bad.describe())
        by_shard: dict[str, list[Manifest]] = {}
        for entry in entries:
            by_shard.setdefault(entry.manifest.shard, []).append(entry.manifest)
        self.histories = {s: History.of(by_shard.get(s, [])) for s in self.config.shards}
        self.stale.clear()
        self._last_refresh = time.monotonic()

    def _start_ticker(self) -> None:
        self.ticker.clear()
        self.ticker.every(max(1, round(self.config.schedule.tick))).seconds.do(self.tick)
        self.ticker.every(max(1, round(self.config.metrics.interval))).seconds.do(self.send_ages)
        self.ticker.every(max(1, round(self.config.schedule.catalog_refresh))).seconds.do(self.maintain)

    def maintain(self, *, closing_round: bool = False) -> bool:
        """Start one audit that is due (the first found, shard by shard): a drill (every ``[drill] every``)
        or a deep audit of a sample (every ``[audit] deep_every``), one shard at a time, never
        next to a backup of the same shard. When each last ran is read from the annotations
        they leave next to the backups, so restarts neither skip nor repeat them. With
        ``--once`` it runs only in the closing round (after the backups), and starts each
        (shard, kind) at most once. Returns whether it started one."""
        if self.signals or (self.once and not closing_round) or any(c.kind.is_maintenance for c in self.chores):
            return False
        kinds = [kind for kind in MAINTENANCE if kind.every(self.config) > 0]
        if not kinds:
            return False
        self.refresh()  # a shard's first backup may have just been committed
        now = self.clock()
        for shard in self.enabled_shards():
            if shard in self.backups or not self.histories.get(shard, History()).newest_any:
                continue
            stores = self.repo.shard(shard).stores
            try:
                last = last_annotations(stores, shard, [kind.annotation for kind in kinds])
            except Exception as exc:  # a store down: try at the next round
                log.warning("shard %s: cannot tell when its last audits ran: %s", shard, exc)
                continue
            for kind in kinds:
                ran = parse_id_time(str((last[kind.annotation] or {}).get("at", "")))
                if (shard, kind) not in self.audits_started and \
                        (ran is None or (now - ran).total_seconds() >= kind.every(self.config)):
                    log.info("shard %s: starting audit %s (last: %s)", shard, kind.level,
                             ran.isoformat() if ran else "never")
                    if self.once:
                        self.audits_started.add((shard, kind))
                    self.chores.append(self._spawn(shard, kind))
                    return True
        return False

    # ------------------------------------------------------------------ binlog archivers
    def archived_shards(self) -> list[str]:
        return [s for s in self.config.shards if self.config.archives_binlogs(s)]

    def supervise_archivers(self) -> None:
        """Keep one archiver per archived shard running (module docstring); stop those whose
        shard no longer archives (after a reload)."""
        if self.once or self.signals:
            return
        wanted = set(self.archived_shards())
        for shard, child in list(self.archivers.items()):
            if child.process.poll() is not None:
                del self.archivers[shard]
                self._archiver_ended(child)
            elif shard not in wanted:
                log.info("shard %s: binlog archiving is off now: stopping its archiver", shard)
                child.signal(signal.SIGTERM)
        now = time.monotonic()
        for shard in sorted(wanted - set(self.archivers)):
            if now >= self.archiver_not_before.get(shard, 0.0):
                log.info("shard %s: starting its binlog archiver", shard)
                self.archivers[shard] = self._spawn(shard, JobKind.BINLOGS)

    def _archiver_ended(self, child: Child) -> None:
        code = child.process.returncode
        child.stdout.close()
        ran = time.monotonic() - child.started
        if ran >= ARCHIVER_RETRY_MAX:
            self.archiver_failures.pop(child.shard, None)
        count = self.archiver_failures[child.shard] = self.archiver_failures.get(child.shard, 0) + 1
        wait = min(ARCHIVER_RETRY_MAX, ARCHIVER_FIRST_RETRY * 2 ** (count - 1))
        self.archiver_not_before[child.shard] = time.monotonic() + wait
        log.error("shard %s: binlog archiver exited with status %s after %s; restarting it in %s", child.shard,
                  code, format_duration(ran), format_duration(wait))

    def stop_archivers(self) -> None:
        """SIGTERM every archiver and wait for them (each commits what it read), then kill the rest."""
        if not self.archivers:
            return
        log.info("stopping %d binlog archiver(s)", len(self.archivers))
        for child in self.archivers.values():
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + ARCHIVER_STOP_WAIT
        while any(c.process.poll() is None for c in self.archivers.values()) and time.monotonic() < deadline:
            time.sleep(POLL)
        for child in self.archivers.values():
            if child.process.poll() is None:
                log.error("shard %s: binlog archiver did not stop; killing it (nothing acknowledged is lost)",
                          child.shard)
                child.signal(signal.SIGKILL)
            child.process.wait()
            child.stdout.close()
        self.archivers.clear()

    def send_rpo(self) -> None:
        """Send each archived shard's ``rpo_seconds`` (from the archive's position object)."""
        now = self.clock()
        samples = []
        for shard in self.archived_shards():
            try:
                position = read_position(self.repo.shard(shard).stores, shard)
            except Exception as exc:  # a store down: the next interval tries again
                log.warning("shard %s: cannot read the binlog archive's position: %s", shard, exc)
                continue
            until = position.archived_until if position is not None else None
            samples += binlog_samples(shard, rpo_seconds=(now - until).total_seconds() if until else None)
        self.metrics.emit(samples)

    def send_ages(self) -> None:
        """Send how old each shard's newest full and newest backup are, so a stalled pipeline
        shows up on a graph even when nothing fails."""
        self.send_rpo()
        try:
            self.refresh()
        except Exception as exc:  # a store down: the ages are sent from what was read last
            log.error("metrics: catalog refresh failed: %s", exc)
        now = self.clock()
        samples = []
        for shard in self.config.shards:
            history = self.histories.get(shard, History())
            samples += age_samples(shard, (now - history.newest_full).total_seconds() if history.newest_full else None,
                                   (now - history.newest_any).total_seconds() if history.newest_any else None)
        self.metrics.emit(samples)

    # ------------------------------------------------------------------ planning
    def cadences(self) -> dict[str, Cadence]:
        return {s: cadence_of(self.config, s) for s in self.enabled_shards()}

    def plan(self) -> list[Job]:
        self.refresh()
        return due_jobs(self.clock(), self.cadences(), self.histories, running=self.backups,
                        not_before=self.not_before)

    def tick(self) -> None:
        """Start what is due (the ``schedule`` job)."""
        if self.signals:
            return
        try:
            jobs = self.plan() if self.queue is None else [j for j in self.queue if j.shard not in self.backups]
        except Exception as exc:  # a store down, say: log it and try again at the next tick
            log.error("planning failed: %s", exc)
            return
        for job in jobs:
            if len(self.backups) >= self.config.schedule.concurrency:
                break
            self.start_backup(job)

    def log_next(self) -> None:
        now = self.clock()
        for shard, cadence in self.cadences().items():
            if shard in self.backups:
                continue
            job = next_job(shard, cadence, self.histories.get(shard, History()), now)
            wait = format_duration((job.due_at - now).total_seconds())
            when = "now" if job.is_due(now) else f"at {job.due_at.strftime('%Y-%m-%d %H:%M:%S')}Z (in {wait})"
            log.info("shard %s: next %s %s", shard, job.kind, when)

    # ------------------------------------------------------------------ children
    def _spawn(self, shard: str, kind: JobKind) -> Child:
        return Child.spawn(shard, kind, [*self.command, "--config", str(self.config_path),
                                         *kind.command(shard, self.config)])

    def start_backup(self, job: Job) -> None:
        log.info("shard %s: starting %s backup (%s)", job.shard, job.kind, job.reason)
        self.backups[job.shard] = self._spawn(job.shard, JobKind.backup(job.kind))
        if self.queue is not None:
            self.queue = [j for j in self.queue if j.shard != job.shard]

    def reap(self) -> None:
        for shard, child in list(self.backups.items()):
            if child.process.poll() is not None:
                del self.backups[shard]
                self._finished_backup(child)
        for child in list(self.chores):
            if child.process.poll() is not None:
                self.chores.remove(child)
                if child.kind in (JobKind.PRUNE, JobKind.REPAIR):
                    if child.process.returncode != 0:
                        log.error("shard %s: %s failed with exit status %d", child.shard, child.kind.description,
                                  child.process.returncode)
                    elif child.kind is JobKind.REPAIR:
                        log.info("shard %s: repair (sync --verify): every store is whole", child.shard)
                else:
                    self._finished_audit(child)
                child.stdout.close()

    def _result(self, child: Child) -> AuditReport | BackupOutcome | DrillOutcome | None:
        """The child's decoded result, or None (logged, naming the job) if it printed none."""
        try:
            return decode(child.kind, child.shard, child.output())
        except ChildOutputError as exc:
            if child.process.returncode == 0:  # a failed child prints its error on stderr instead
                log.error("%s", exc.message)
            return None

    def _finished_audit(self, child: Child) -> None:
        """Log an audit or drill child's outcome and send its metrics."""
        outcome = self._result(child)
        if outcome is None:
            self.failed_jobs += 1
            log.error("shard %s: %s failed with exit status %s", child.shard, child.kind.description,
                      child.process.returncode)
            self._print(child, "failed", {"exit_code": child.process.returncode})
            return
        self._print(child, "drill" if isinstance(outcome, DrillOutcome) else "audit", outcome.to_json())
        self.metrics.emit(samples(outcome))
        if isinstance(outcome, DrillOutcome):
            for drill in outcome.drills:
                if drill.verified:
                    log.info("shard %s: drill verified (%s restored in %s)", child.shard,
                             " + ".join(drill.chain), format_duration(drill.seconds))
                else:  # exit code 3: the backup is at fault; anything else: the drill could not run
                    if drill.exit_code == 3:
                        self.failed_checks += 1
                    else:
                        self.failed_jobs += 1
                    log.error("shard %s: DRILL FAILED: %s", child.shard, drill.failure)
            return
        assert isinstance(outcome, AuditReport)
        self.failed_checks += bool(outcome.findings)
        for finding in outcome.findings:
            log.error("shard %s: audit (%s): %s: %s", child.shard, outcome.level, finding.check, finding.message)
        if not outcome.findings:
            log.info("shard %s: %s audit: everything holds", child.shard, outcome.level)
        elif outcome.level == "deep" and {f.check for f in outcome.findings} & REPAIRABLE and not self.signals:
            log.warning("shard %s: the deep audit found copies to repair: starting sync --verify", child.shard)
            self.chores.append(self._spawn(child.shard, JobKind.REPAIR))

    def _finished_backup(self, child: Child) -> None:
        code = child.process.returncode
        seconds = time.monotonic() - child.started
        self.stale.add(child.shard)
        outcome = self._result(child)
        child.stdout.close()
        self._print(child, "backup", outcome.to_json() if code == 0 and isinstance(outcome, BackupOutcome)
                    else {"result": "failed", "exit_code": code})
        if code == 0 and isinstance(outcome, BackupOutcome):
            self.failures.pop(child.shard, None)
            self.not_before.pop(child.shard, None)
            if outcome.result == "skipped":
                log.info("shard %s: skipped: %s", child.shard, outcome.reason)
                return
            log.info("shard %s: %s %s committed in %s", child.shard, outcome.kind, outcome.id, format_duration(seconds))
            self.metrics.emit(samples(outcome))
            if outcome.kind == "full" and not self.signals:
                self.chores.append(self._spawn(child.shard, JobKind.PRUNE))
            if self.config.audit.after_backup and not self.signals:
                self.chores.append(self._spawn(child.shard, JobKind.AUDIT_QUICK))
            return
        self.failed_jobs += 1
        if self.signals and code in (143, -signal.SIGTERM, -signal.SIGKILL):
            log.warning("shard %s: %s aborted by shutdown (no manifest, parts deleted)",
                        child.shard, child.kind.description)
            return
        self.metrics.emit(samples(BackupOutcome.failed(child.shard, "full" if child.kind is JobKind.FULL
                                                       else "incremental")))
        count = self.failures[child.shard] = self.failures.get(child.shard, 0) + 1
        wait = min(self.config.schedule.retry_after, FIRST_RETRY * 2 ** (count - 1))
        self.not_before[child.shard] = self.clock() + timedelta(seconds=wait)
        log.error("shard %s: %s failed (exit status %s, attempt %d); retrying in %s",
                  child.shard, child.kind.description, code, count, format_duration(wait))

    def _print(self, child: Child, event: str, document: dict[str, object]) -> None:
        """``run --json``: one line per finished job (what its command's own --json prints)."""
        if self.json_lines:
            line = {"event": event, "shard": child.shard, "job": child.kind.description,
                    "seconds": round(time.monotonic() - child.started, 3), **document}
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()

    # ------------------------------------------------------------------ signals and the loop
    def _on_stop(self, signum: int, frame: object) -> None:
        self.signals += 1

    def _on_hup(self, signum: int, frame: object) -> None:
        self.reload_requested = True

    def run(self) -> int:
        """Run until stopped (or, with ``once``, until what was due is done); return the exit code."""
        previous = {sig: signal.signal(sig, handler) for sig, handler in (
            (signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop), (signal.SIGHUP, self._on_hup))}
        try:
            return self._loop()
        finally:
            self.metrics.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(self) -> int:
        config = self.config
        log.info("daemon started (pid %d): %d shards, concurrency %d, stores %s", os.getpid(),
                 len(self.enabled_shards()), config.schedule.concurrency, ", ".join(config.stores))
        if self.once:
            self.queue = self.plan()
            if not self.queue:
                log.info("--once: nothing is due")
        else:
            self.refresh(force=True)
            self.log_next()
        self._start_ticker()
        self.tick()
        busy = bool(self.backups)
        while not self.signals:
            if self.reload_requested:
                self.reload()
            self.supervise_archivers()
            self.reap()
            if busy and not self.backups and not self.once:
                self.log_next()
            busy = bool(self.backups)
            if self.once and not self.backups and not self.chores and not self.queue:
                if self.maintain(closing_round=True):
                    continue
                self.send_ages()
                code = 1 if self.failed_jobs else 3 if self.failed_checks else 0
                if self.json_lines:
                    sys.stdout.write(json.dumps({"event": "done", "failed_jobs": self.failed_jobs,
                                                 "failed_checks": self.failed_checks, "exit_code": code}) + "\n")
                return code
            if self.once and self.queue:
                self.tick()
            self.ticker.run_pending()
            time.sleep(POLL)
        return self.shutdown()

    def shutdown(self) -> int:
        self.stop_archivers()
        grace = self.config.schedule.shutdown_grace
        if self.backups:
            running = ", ".join(f"shard {c.shard} ({c.kind.description}, "
                                f"{format_duration(time.monotonic() - c.started)})" for c in self.backups.values())
            log.warning("stopping: no new backups; waiting up to %s for running ones to finish: %s "
                        "(signal again to abort them now)", format_duration(grace), running)
        deadline = time.monotonic() + grace
        while self.backups and self.signals < 2 and time.monotonic() < deadline:
            self.reap()
            time.sleep(POLL)
        if self.backups:
            log.warning("stopping: aborting %d running backups (they delete their parts)", len(self.backups))
            for child in self.backups.values():
                child.signal(signal.SIGTERM)
            deadline = time.monotonic() + ABORT_WAIT
            while self.backups and time.monotonic() < deadline:
                self.reap()
                time.sleep(POLL)
            for child in self.backups.values():
                log.error("shard %s: backup did not stop; killing it (its parts are cleaned by the "
                          "next backup of the shard)", child.shard)
                child.signal(signal.SIGKILL)
                child.process.wait()
            self.reap()
        for child in self.chores:
            if child.kind not in (JobKind.PRUNE, JobKind.REPAIR) and child.process.poll() is None:
                log.warning("shard %s: stopping: aborting its %s", child.shard, child.kind.description)
                child.signal(signal.SIGTERM)  # a drill may restore for a long time
            child.process.wait()
        log.info("daemon stopped")
        return 0
