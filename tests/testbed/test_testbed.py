"""The test bed itself: real MariaDB servers start, seed, fingerprint and go away cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.testbed import (
    ROW_ID_STRIDE,
    MariaDBServer,
    buckets_for_shard,
    seed_bulk,
    seed_shard,
    table_fingerprint,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def pid_gone(pid: int, timeout: float = 10.0) -> bool:
    """True once /proc/<pid> is gone or a zombie (checked until ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def test_parallel_servers_seed_fingerprint_and_stop(mariadb_factory):
    with ThreadPoolExecutor(2) as pool:
        servers = list(pool.map(mariadb_factory, ["shard1", "shard2"]))
    assert {s.server_id for s in servers} == {1, 2}
    assert len({s.port for s in servers}) == 2
    for server in servers:
        assert server.query("SELECT @@server_id, @@character_set_server, @@log_bin") == [
            (server.server_id, "utf8mb4", 1)]

    with ThreadPoolExecutor(2) as pool:
        stats = list(pool.map(lambda i: seed_shard(servers[i], i, 2, n_buckets=32,
                                                   target_bytes=256 * 1024), [0, 1]))
    ids: list[set[int]] = []
    for index, (server, stat) in enumerate(zip(servers, stats, strict=True)):
        buckets = buckets_for_shard(index, 2, 32)
        assert stat.tables == len(buckets) == 16
        assert stat.payload_bytes >= 256 * 1024
        fingerprint = table_fingerprint(server, "app")
        assert sorted(fingerprint) == [f"bucket_{b:04d}" for b in buckets]
        assert sum(count for count, _ in fingerprint.values()) == stat.rows
        assert table_fingerprint(server, "app") == fingerprint  # stable
        union = " UNION ALL ".join(f"SELECT id FROM app.bucket_{b:04d}" for b in buckets)
        shard_ids = {row[0] for row in server.query(union)}
        assert {i // ROW_ID_STRIDE % 2 for i in shard_ids} == {index}
        ids.append(shard_ids)
    assert not ids[0] & ids[1]

    pids = [s.pid for s in servers]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: s.stop(), servers))
    for server, pid in zip(servers, pids, strict=True):
        assert pid is not None and pid_gone(pid, timeout=0)
        assert not server.is_running()
        server.stop()  # idempotent


def test_seeded_shard_data_is_realistic(seeded_shard):
    stats = seeded_shard.query(
        "SELECT COUNT(*), SUM(LENGTH(data)), MIN(LENGTH(data)), MAX(LENGTH(data)), "
        "SUM(created_at > updated_at), MIN(created_at), MAX(updated_at), "
        "SUM(data LIKE BINARY '%🎉%' OR data LIKE BINARY '%🚀%'), SUM(JSON_VALID(data) = 0) "
        "FROM app.bucket_0000")
    rows, total, shortest, longest, inverted, oldest, newest, emoji, invalid = stats[0]
    assert rows > 20 and inverted == 0 and invalid == 0 and emoji > 0
    assert shortest >= 512 and longest <= 4096
    assert datetime.now() - oldest < timedelta(days=3, hours=1)
    assert newest <= datetime.now() + timedelta(seconds=1)
    tables = seeded_shard.query("SELECT COUNT(*) FROM information_schema.TABLES "
                                "WHERE TABLE_SCHEMA='app'")
    assert tables == [(16,)]
    doc = json.loads(seeded_shard.query("SELECT data FROM app.bucket_0064 LIMIT 1")[0][0])
    assert doc["kind"] in {"user", "order", "event"}
    # Fixtures are loaded with sql_log_bin=0: the binlog holds no transactions.
    assert seeded_shard.query("SELECT @@gtid_binlog_pos") == [("",)]


def test_edge_case_objects(seeded_shard):
    q = seeded_shard.query
    assert q("SELECT COUNT(*) FROM edge.oddities") == [(50,)]
    assert q("SELECT COUNT(*) FROM edge.audit_log") == [(61,)]  # written by the triggers
    assert q("SELECT CAST(f AS DOUBLE), d FROM edge.floats WHERE id = 1") == [(0.3333333432674408, 1 / 3)]
    assert q("SELECT vbin, blb FROM edge.oddities WHERE id = 2") == [(bytes(range(256)),) * 2]
    assert q("SELECT vbin, blb, txt FROM edge.oddities WHERE id = 3") == [(b"", b"", "")]
    assert all(v is None for v in q("SELECT * FROM edge.oddities WHERE id = 1")[0][1:])
    assert q("SELECT COUNT(*), COUNT(DISTINCT a, b, c) FROM edge.no_pk WHERE a = 1") == [
        (3, 1)]
    assert ("e\u0301 combining a\u0308 o\u0323\u0302",) in q("SELECT txt FROM edge.oddities")
    assert q("SELECT COUNT(*) FROM edge.v_oddities") == [(25,)]
    assert q("SELECT edge.f_label(7)") == [("odd-7-✓",)]
    with seeded_shard.connect() as conn, conn.cursor() as cur:
        cur.execute("CALL edge.p_count_oddities(@n)")
        cur.execute("SELECT @n")
        assert cur.fetchall() == ((50,),)
    fingerprint = table_fingerprint(seeded_shard, "edge")
    assert {t: c for t, (c, _) in fingerprint.items()} == {
        "audit_log": 61, "floats": 11, "no_pk": 10, "oddities": 50}


def test_fingerprint_matches_after_logical_copy(seeded_shard, mariadb_factory):
    target = mariadb_factory("copy")
    dump = subprocess.run(
        ["mariadb-dump", "--no-defaults", f"--socket={seeded_shard.socket}", "-uroot",
         "--single-transaction", "--routines", "--triggers", "--hex-blob",
         "--databases", "app", "edge"],
        check=True, capture_output=True)
    subprocess.run(
        ["mariadb", "--no-defaults", f"--socket={target.socket}", "-uroot",
         "--init-command=SET SESSION sql_log_bin=0"],
        input=dump.stdout, check=True, capture_output=True)
    assert table_fingerprint(target, "app") == table_fingerprint(seeded_shard, "app")
    copied, original = table_fingerprint(target, "edge"), table_fingerprint(seeded_shard, "edge")
    # a plain dump writes FLOAT with 6 digits: the oracle sees the change, and nothing else differs
    assert copied["floats"] != original["floats"]
    assert {t: v for t, v in copied.items() if t != "floats"} == \
        {t: v for t, v in original.items() if t != "floats"}
    target.execute("UPDATE edge.oddities SET dbl = dbl + 1 WHERE id = 2 OR id = 10")
    assert (table_fingerprint(target, "edge")["oddities"]
            != table_fingerprint(seeded_shard, "edge")["oddities"])


def test_seed_bulk_loads_exact_payload(mariadb_factory, tmp_path):
    server = mariadb_factory("bulk")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    stats = seed_bulk(server, 3, 16, target_bytes=3 * 1024 * 1024, tables_limit=3,
                      tmp_dir=scratch)
    buckets = buckets_for_shard(3, 16)[:3]
    assert stats.tables == 3 and stats.payload_bytes >= 3 * 1024 * 1024
    union = " UNION ALL ".join(
        f"SELECT id, data, created_at <= updated_at FROM app.bucket_{b:04d}" for b in buckets)
    rows = server.query(union)
    assert len(rows) == stats.rows
    # Byte-exact payload and valid JSON prove the TSV escaping (docs contain \" and \\n).
    assert sum(len(data.encode()) for _, data, _ in rows) == stats.payload_bytes
    docs = [json.loads(data) for _, data, _ in rows]
    orders = [d for d in docs if d["kind"] == "order"]
    assert orders and all(d["shipping"]["instructions"].endswith('"\\n') for d in orders)
    assert all(ordered for _, _, ordered in rows)
    assert {i // ROW_ID_STRIDE for i, _, _ in rows} == set(buckets)
    assert server.query("SELECT @@gtid_binlog_pos") == [("",)]
    assert not list(scratch.iterdir())  # temp files and their directory are gone


def test_kill_and_restart_keeps_committed_data(mariadb_factory):
    server = mariadb_factory("crashy")
    server.execute("CREATE DATABASE t")
    server.execute("CREATE TABLE t.x (id INT PRIMARY KEY) ENGINE=InnoDB")
    server.execute("INSERT INTO t.x VALUES (1), (2), (3)")
    pid = server.pid
    server.kill()
    assert pid is not None and pid_gone(pid, timeout=0) and not server.is_running()
    server.start()
    assert server.pid != pid
    assert server.query("SELECT COUNT(*) FROM t.x") == [(3,)]


def test_start_failure_reports_error_log_and_leaves_no_process(mariadb_factory):
    with pytest.raises(RuntimeError, match="unknown (option|variable)") as info:
        mariadb_factory("broken", extra_args=["--no-such-option-for-testbed"])
    assert "error.log" in str(info.value)


def test_long_root_uses_short_socket(tmp_path, mariadb_cache):
    root = tmp_path.joinpath(*(["deeply-nested-directory"] * 5), "server")
    server = MariaDBServer.create(root, "deep", 7, mariadb_cache)
    try:
        assert not server.socket.is_relative_to(root)
        server.start()
        assert server.query("SELECT @@server_id") == [(7,)]
        clone = MariaDBServer.from_dict(json.loads(json.dumps(server.to_dict())))
        assert clone.is_running() and clone.socket == server.socket
    finally:
        server.destroy()
    assert not server.socket.exists() and not root.exists()


def test_template_is_built_once_by_concurrent_processes(tmp_path):
    cache = tmp_path / "cache"
    code = ("import sys; from pathlib import Path; from tests.testbed import template_datadir;"
            " print(template_datadir(Path(sys.argv[1])))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(cache)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outputs) == 1
    datadirs = [p.name for p in cache.iterdir() if not p.name.endswith(".lock")]
    assert datadirs == [Path(outputs.pop()).name]
    assert (cache / datadirs[0] / "mysql" / "user.frm").exists() or \
        (cache / datadirs[0] / "mysql" / "global_priv.frm").exists()


def test_cli_start_status_stop(tmp_path, mariadb_cache):
    root = tmp_path / "fleet"
    cli = [sys.executable, "-m", "tests.testbed"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args, "--root", str(root)], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=300)

    start_args = ("start", "--shards", "2", "--targets", "dr", "--mib-per-shard", "0.25",
                  "--buckets", "16", "--edge-cases", "--cache", str(mariadb_cache))
    try:
        first = run(*start_args)
        assert first.returncode == 0, first.stderr
        old_pids = [s["pid"] for s in json.loads((root / "testbed.json").read_text())["servers"]]
        again = run(*start_args)  # replaces the running fleet
        assert again.returncode == 0, again.stderr
        assert all(pid_gone(pid) for pid in old_pids)
        state = json.loads((root / "testbed.json").read_text())
        assert state["phase"] == "ready" and state["shards"] == ["shard1", "shard2"]
        servers = [MariaDBServer.from_dict(d) for d in state["servers"]]
        assert [s.name for s in servers] == ["shard1", "shard2", "dr"]
        assert [s.server_id for s in servers] == [1, 2, 1001]
        assert all(s.is_running() for s in servers)
        assert servers[1].query("SELECT COUNT(*) FROM edge.oddities") == [(50,)]
        assert servers[2].query("SHOW DATABASES LIKE 'app'") == []
        assert run("status").returncode == 0

        assert run("stop").returncode == 0
        assert all(pid_gone(pid) for pid in (s.pid for s in servers) if pid is not None)
        assert not any(s.is_running() for s in servers)
        assert run("status").returncode == 1
        assert run("stop").returncode == 0  # idempotent
    finally:
        run("stop", "--destroy")


def test_factory_cleans_up_after_a_failing_test(tmp_path):
    pid_file = tmp_path / "pids.txt"
    test_file = tmp_path / "test_fails.py"
    test_file.write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.integration\n"
        "def test_boom(mariadb_factory):\n"
        "    servers = [mariadb_factory('a'), mariadb_factory('b')]\n"
        f"    open({str(pid_file)!r}, 'w').write(' '.join(str(s.pid) for s in servers))\n"
        "    assert False, 'deliberate failure'\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--basetemp", str(tmp_path / "inner"), str(test_file)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "deliberate failure" in result.stdout, result.stdout
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2 and all(pid_gone(pid, timeout=0) for pid in pids)
    assert not list((tmp_path / "inner").glob("*/a/data"))
