"""The shard lock on a local store with a fake clock (real files, no server)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from backupd.backup.lease import Owner, ShardLease, process_alive
from backupd.errors import LockHeld, LockLost
from backupd.repo.layout import lock_prefix
from backupd.stores.base import Payload
from backupd.stores.local import LocalStore
from tests.unit.manifests import NOW


class Clock:
    def __init__(self):
        self.now = NOW

    def __call__(self):
        return self.now


@pytest.fixture
def store(tmp_path):
    return LocalStore("locks", tmp_path / "store")


def lease(store, clock, host="a", pid=1, alive=lambda owner: True, ttl=600):
    return ShardLease(store, "7", ttl=ttl, owner=Owner(host, pid, "", "backup full"), clock=clock,
                      host=host, alive=alive)


def test_one_holder_at_a_time_and_release(store):
    clock = Clock()
    first, second = lease(store, clock), lease(store, clock, host="b", pid=2)
    first.acquire()
    with pytest.raises(LockHeld, match=r"shard 7: a backup is already running: .*host a pid 1 \(backup full\)"):
        second.acquire()
    first.check()  # still ours
    first.release()
    assert list(store.list(lock_prefix("7"))) == []  # released: the lease is gone
    second.acquire()
    assert [i.key for i in store.list(lock_prefix("7"))] == ["7/locks/000000000001.json"]


def test_expired_lease_is_taken_over_and_the_old_holder_is_fenced(store):
    clock = Clock()
    stalled, other = lease(store, clock), lease(store, clock, host="b", pid=2)
    stalled.acquire()
    clock.now += timedelta(seconds=599)
    with pytest.raises(LockHeld):
        other.acquire()
    clock.now += timedelta(seconds=2)  # past the ttl, never renewed
    other.acquire()
    assert [i.key for i in store.list(lock_prefix("7"))] == ["7/locks/000000000002.json"]  # old generation gone
    with pytest.raises(LockLost, match="lost the backup lock before committing"):
        stalled.check()
    stalled.renew()  # notices, and does not overwrite the new holder's lease
    assert stalled.lost
    other.check()
    stalled.release()  # not ours any more: nothing deleted
    other.check()


def test_renewal_keeps_the_lock(store):
    clock = Clock()
    holder, other = lease(store, clock), lease(store, clock, host="b", pid=2)
    holder.acquire()
    for _ in range(10):
        clock.now += timedelta(seconds=150)
        holder.renew()
    with pytest.raises(LockHeld):
        other.acquire()
    holder.check()


def test_lease_of_a_dead_process_on_this_host_is_stale_at_once(store):
    clock = Clock()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    crashed = ShardLease(store, "7", ttl=600, owner=Owner("host", dead.pid, "", "backup full"), clock=clock,
                         host="host")
    crashed.acquire()
    restarted = ShardLease(store, "7", ttl=600, owner=Owner.this_process("backup full"), clock=clock, host="host")
    restarted.acquire()  # no wait for the ttl: the owner's process is gone
    restarted.check()
    elsewhere = ShardLease(store, "7", ttl=600, owner=Owner("other", 99, "", "x"), clock=clock, host="other")
    with pytest.raises(LockHeld):
        elsewhere.acquire()


def test_process_alive_tells_pid_reuse_apart():
    me = Owner.this_process("x")
    assert process_alive(me)
    assert not process_alive(Owner(me.host, me.pid, "1", "x"))  # same pid, other start time
    assert not process_alive(Owner(me.host, 2**22 + 7, "", "x"))


def test_garbled_lease_counts_as_expired(store):
    clock = Clock()
    store.put("7/locks/000000000001.json", Payload.from_bytes(b"{not json"))
    holder = lease(store, clock)
    holder.acquire()
    assert holder.generation == 2


def test_racing_acquirers_one_wins(store):
    from concurrent.futures import ThreadPoolExecutor

    clock = Clock()
    contenders = [lease(store, clock, host=f"h{i}", pid=i) for i in range(8)]

    def attempt(candidate):
        try:
            candidate.acquire()
            return True
        except LockHeld:
            return False

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, contenders))
    assert results.count(True) == 1
    winner = contenders[results.index(True)]
    winner.check()
    assert os.path.exists(store.root / "7" / "locks" / f"{winner.generation:012d}.json")


class Down(LocalStore):
    """A store that cannot be reached."""

    def list(self, prefix=""):
        from backupd.errors import TransientStoreError

        raise TransientStoreError(f"store {self.name}: connection refused", store=self.name)


def test_shard_lock_falls_back_when_the_first_store_is_down(tmp_path):
    from backupd.backup.lease import ShardLock

    clock = Clock()
    first, second = Down("s3", tmp_path / "s3"), LocalStore("swift", tmp_path / "swift")
    owner = Owner("a", 1, "", "backup")
    lock = ShardLock([ShardLease(s, "7", ttl=600, owner=owner, clock=clock, host="a", alive=lambda o: True)
                      for s in (first, second)])
    lock.acquire()
    assert lock.held.store is second
    lock.check()
    # a host that reaches both stores sees the lease in the second one and does not start
    other = ShardLock([ShardLease(s, "7", ttl=600, owner=Owner("b", 2, "", "x"), clock=clock, host="b",
                                  alive=lambda o: True)
                       for s in (LocalStore("s3", tmp_path / "s3"), second)])
    with pytest.raises(LockHeld, match="host a pid 1"):
        other.acquire()
    assert list(LocalStore("s3", tmp_path / "s3").list("7/locks/")) == []  # it gave its own back
    lock.release()
    other.acquire()


def test_shard_lock_with_every_store_down_fails_naming_them(tmp_path):
    from backupd.backup.lease import ShardLock
    from backupd.errors import BackupFailed

    lock = ShardLock([ShardLease(Down(n, tmp_path / n), "7", ttl=600, owner=Owner("a", 1, "", "x"),
                                 clock=Clock(), host="a") for n in ("s3", "swift")])
    with pytest.raises(BackupFailed, match=r"shard 7: every store failed: .*s3: .*connection refused.*swift: "):
        lock.acquire()
