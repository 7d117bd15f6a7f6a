"""The planner with a fake clock: three simulated days, a 10-hour outage, a restart, two daemons.

The simulation runs the real planner (``backupd.policy.scheduler``) and the real shard lock
(``backupd.backup.lease`` on a local store in a temporary folder) the way the daemon and its backup
jobs use them: plan from the catalog, take the lock, plan again (double check), back up (a fake
backup that takes some simulated minutes and commits a manifest), release.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import count

import pytest

from backupd.backup.lease import Owner, ShardLease
from backupd.errors import LockHeld
from backupd.policy.scheduler import Cadence, History, due_jobs, jitter_offset, next_job
from backupd.repo.model import Manifest
from backupd.stores.local import LocalStore
from tests.unit.manifests import NOW, full, incremental

MIN = timedelta(minutes=1)
H = timedelta(hours=1)
SHARDS = ["1", "2", "3"]
DURATION = {"full": 20 * MIN, "incremental": 3 * MIN}
_pids = count(1000)


class FakeClock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Fleet:
    """What every simulated daemon shares: the catalog (committed manifests), the lock store,
    and which daemon process is alive on each host."""

    clock: FakeClock
    store: LocalStore
    catalog: list[Manifest] = field(default_factory=list)
    alive_pids: dict[str, int] = field(default_factory=dict)
    log: list[tuple[str, str, str, datetime, datetime]] = field(default_factory=list)  # host, shard, kind, start, end

    def history(self, shard: str) -> History:
        return History.of(m for m in self.catalog if m.shard == shard)

    def commit(self, shard: str, kind: str, started: datetime) -> None:
        if kind == "full":
            self.catalog.append(full(started, shard))
        else:
            base = max((m for m in self.catalog if m.shard == shard and m.kind == "full"),
                       key=lambda m: m.snapshot_at)
            self.catalog.append(incremental(started, base))


class SimDaemon:
    def __init__(self, host: str, fleet: Fleet, cadences: dict[str, Cadence], concurrency: int = 2):
        self.host = host
        self.fleet = fleet
        self.cadences = cadences
        self.concurrency = concurrency
        self.pid = next(_pids)
        fleet.alive_pids[host] = self.pid
        self.running: dict[str, tuple[str, datetime, ShardLease]] = {}
        self.renewed: dict[str, datetime] = {}
        self.histories: dict[str, History] = {}
        self.refreshed: datetime | None = None

    def lease(self, shard: str) -> ShardLease:
        fleet = self.fleet
        return ShardLease(fleet.store, shard, ttl=600, owner=Owner(self.host, self.pid, "", "backup"),
                          clock=fleet.clock, host=self.host,
                          alive=lambda owner: fleet.alive_pids.get(owner.host) == owner.pid)

    def tick(self) -> None:
        now = self.fleet.clock()
        finished = False
        for shard, (kind, started, lease) in list(self.running.items()):
            if now - self.renewed.get(shard, started) >= lease.ttl / 4:  # the heartbeat's job
                lease.renew()
                self.renewed[shard] = now
            if now >= started + DURATION[kind]:
                lease.check()  # the fence: still ours when committing
                self.fleet.commit(shard, kind, started)
                self.fleet.log.append((self.host, shard, kind, started, now))
                lease.release()
                del self.running[shard]
                self.renewed.pop(shard, None)
                finished = True
        # like the daemon, plan from a catalog read at most every 5 minutes (catalog_refresh) or
        # after one of its own jobs ended: what other hosts did meanwhile is not seen yet
        if self.refreshed is None or now - self.refreshed >= 5 * MIN or finished:
            self.histories = {s: self.fleet.history(s) for s in self.cadences}
            self.refreshed = now
        for job in due_jobs(now, self.cadences, self.histories, running=self.running):
            if len(self.running) >= self.concurrency:
                break
            lease = self.lease(job.shard)
            try:
                lease.acquire()
            except LockHeld:
                continue
            again = next_job(job.shard, self.cadences[job.shard], self.fleet.history(job.shard), now)
            if not again.is_due(now):  # another host did it while we were deciding
                lease.release()
                continue
            self.running[job.shard] = (again.kind, now, lease)

    def crash(self) -> None:
        """kill -9: running backups die without committing; their leases stay behind."""
        self.running.clear()
        self.fleet.alive_pids.pop(self.host, None)


def make_fleet(tmp_path) -> Fleet:
    return Fleet(FakeClock(NOW), LocalStore("locks", tmp_path / "locks"))


def cadences(jitter: float = 0.0) -> dict[str, Cadence]:
    return {s: Cadence.of(s, 8 * 3600, 3600, jitter) for s in SHARDS}


def simulate(fleet: Fleet, daemons: list[SimDaemon], until: datetime, *, down: tuple[datetime, datetime] | None = None,
             events: dict[datetime, callable] | None = None) -> None:
    events = dict(events or {})
    while fleet.clock.now < until:
        for moment in [m for m in events if m <= fleet.clock.now]:
            events.pop(moment)()
        if not (down and down[0] <= fleet.clock.now < down[1]):
            for daemon in daemons:
                daemon.tick()
        fleet.clock.now += MIN


def starts(fleet: Fleet, shard: str, kind: str | None = None) -> list[datetime]:
    return sorted(start for _, s, k, start, _ in fleet.log if s == shard and (kind is None or k == kind))


def assert_no_overlap_and_no_doubles(fleet: Fleet, spacing: timedelta) -> None:
    for shard in SHARDS:
        runs = sorted((start, end) for _, s, _, start, end in fleet.log if s == shard)
        for (s1, e1), (s2, _) in zip(runs, runs[1:]):
            assert s2 >= e1, f"shard {shard}: two backups at once ({s1} and {s2})"
            assert s2 - s1 >= spacing, f"shard {shard}: backups {s1} and {s2} are a double"


def test_three_days_with_a_ten_hour_outage(tmp_path):
    fleet = make_fleet(tmp_path)
    daemon = SimDaemon("a", fleet, cadences())
    outage = (NOW + 30 * H + 17 * MIN, NOW + 40 * H + 17 * MIN)
    simulate(fleet, [daemon], NOW + 72 * H, down=outage,
             events={outage[0]: daemon.crash, outage[1]: lambda: setattr(daemon, "pid", _restart(daemon))})
    assert_no_overlap_and_no_doubles(fleet, H - MIN)
    for shard in SHARDS:
        fulls = starts(fleet, shard, "full")
        every = starts(fleet, shard)
        assert fulls[0] <= NOW + DURATION["full"]  # at once (concurrency 2: the third waits for a slot)
        # fulls every 8 h (a tick late at most), except across the outage
        gaps = [b - a for a, b in zip(fulls, fulls[1:])]
        assert sum(1 for g in gaps if g > 8 * H + MIN) == 1 and max(gaps) < 8 * H + 11 * H
        assert all(g >= 8 * H for g in gaps)
        # incrementals hourly (a full counts as the newest backup too), except across the outage
        between = [b - a for a, b in zip(every, every[1:])]
        assert sum(1 for g in between if g > H + DURATION["full"] + MIN) == 1
        # after the outage: one full at once, then incrementals an hour apart, not a burst
        after = [t for t in every if t >= outage[1]]
        assert after[0] <= outage[1] + DURATION["full"] and after[0] in fulls
        assert after[1] - after[0] >= H
        assert len([t for t in after if t < outage[1] + 3 * H]) == 3
        # 72 h minus the outage: ~ 62 h of hourly backups, 8-9 of them fulls
        assert 8 <= len(fulls) <= 10 and 58 <= len(every) <= 64


def _restart(daemon: SimDaemon) -> int:
    daemon.pid = next(_pids)
    daemon.fleet.alive_pids[daemon.host] = daemon.pid
    return daemon.pid


def test_restart_in_the_middle_neither_loses_nor_doubles_a_backup(tmp_path):
    fleet = make_fleet(tmp_path)
    first = SimDaemon("a", fleet, cadences())
    daemons = [first]
    # kill -9 while shard fulls are running (at 8 h they all fall due), restart 5 minutes later
    crash_at, restart_at = NOW + 8 * H + 5 * MIN, NOW + 8 * H + 10 * MIN

    def restart() -> None:
        daemons[0] = SimDaemon("a", fleet, cadences())  # a new process: no memory of the old one

    simulate(fleet, daemons, NOW + 24 * H, events={crash_at: first.crash, restart_at: restart},
             down=(crash_at, restart_at))
    assert_no_overlap_and_no_doubles(fleet, H - MIN)
    for shard in SHARDS:
        fulls = starts(fleet, shard, "full")
        # the interrupted fulls are redone right after the restart (their stale leases were
        # left by a dead process on this host, so they do not block), then every 8 h
        assert any(restart_at <= f <= restart_at + 2 * DURATION["full"] for f in fulls)
        assert len(fulls) == 3
    assert len(fleet.catalog) == len(fleet.log)  # one manifest per finished backup


def test_two_daemons_contending_share_the_work_without_doubles(tmp_path):
    fleet = make_fleet(tmp_path)
    a = SimDaemon("a", fleet, cadences(), concurrency=1)
    b = SimDaemon("b", fleet, cadences(), concurrency=1)
    simulate(fleet, [a, b], NOW + 48 * H)
    assert_no_overlap_and_no_doubles(fleet, H - MIN)
    hosts = {host for host, *_ in fleet.log}
    assert hosts == {"a", "b"}  # both took part
    # exactly the backups one daemon alone would have taken
    alone = make_fleet(tmp_path / "alone")
    simulate(alone, [SimDaemon("c", alone, cadences(), concurrency=2)], NOW + 48 * H)
    for shard in SHARDS:
        assert len(starts(fleet, shard, "full")) == len(starts(alone, shard, "full"))
        assert abs(len(starts(fleet, shard)) - len(starts(alone, shard))) <= 1


def test_a_crashed_host_lock_expires_for_other_hosts(tmp_path):
    fleet = make_fleet(tmp_path)
    a, b = SimDaemon("a", fleet, cadences()), SimDaemon("b", fleet, cadences())
    a.tick()  # a takes every shard's first full
    assert set(a.running) == {"1", "2"}  # concurrency 2
    a.crash()
    fleet.clock.now += MIN
    b.tick()  # a's leases on host a are not b's to judge: they are live until they expire
    assert "1" not in b.running and "2" not in b.running and "3" in b.running
    fleet.clock.now += 10 * MIN  # ttl 600 s
    b.running.clear()
    b.tick()
    assert {"1", "2"} <= set(b.running)


def test_jitter_brings_due_times_forward_by_a_fixed_per_shard_offset():
    offsets = {s: jitter_offset(s, 600) for s in map(str, range(16))}
    assert len(set(offsets.values())) == 16
    assert all(timedelta(0) <= o < timedelta(seconds=600) for o in offsets.values())
    assert jitter_offset("7", 600) == offsets["7"]  # the same on every host and run
    cadence = Cadence.of("7", 8 * 3600, 3600, 600)
    history = History(newest_full=NOW, newest_any=NOW + 7 * H)
    job = next_job("7", cadence, history, NOW + 7 * H)
    assert job.kind == "full" and job.due_at == NOW + 8 * H - offsets["7"]


def test_full_wins_over_incremental_and_disabled_incrementals():
    history = History(newest_full=NOW, newest_any=NOW + 7 * H)
    cadence = Cadence.of("7", 8 * 3600, 3600, 0)
    assert next_job("7", cadence, history, NOW + 9 * H).kind == "full"
    assert next_job("7", cadence, history, NOW + 7.5 * H).kind == "full"  # not due yet: full is next
    assert next_job("7", cadence, History(NOW, NOW + 5 * H), NOW + 6 * H).kind == "incremental"
    fulls_only = Cadence.of("7", 8 * 3600, 0, 0)
    assert next_job("7", fulls_only, History(NOW, NOW), NOW + 7 * H).kind == "full"
    due = due_jobs(NOW + 9 * H, {"7": cadence, "8": cadence}, {"7": history},
                   not_before={"8": NOW + 10 * H})
    assert [(j.shard, j.kind) for j in due] == [("7", "full")]  # 8 waits for its retry backoff
    assert due_jobs(NOW + 9 * H, {"7": cadence}, {"7": history}, running=["7"]) == []
    with pytest.raises(AssertionError):
        assert due_jobs(NOW + 9 * H, {"7": cadence}, {}) == []  # never backed up: due at once
