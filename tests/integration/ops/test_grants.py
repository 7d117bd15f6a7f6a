"""backupd grants against real servers: the statements it prints, run as root on a fresh primary
and a fresh target, are exactly what SHOW GRANTS then shows, and with those accounts (and no
more) a physical backup, a logical full, an incremental, binlog archiving and a point-in-time
restore that then replicates from the primary all succeed; without one of the printed privileges
the backup (and the restore) fail, naming it (TRIGGER included: the server would hide triggers).

The shard has views, triggers, routines and an event (``seed_edge_cases``), so every privilege
that reads or re-creates them is exercised. The backup account's grants are printed for the
shard configured for mariabackup; the logical configuration's are a subset of them (checked).
Every command must finish within its ``run`` timeout (300 s); the archiver within 30 s of SIGTERM.
"""

from __future__ import annotations

import json
import re
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from tests.integration.support import Archiver, run, wait_archived, write_config
from tests.testbed import seed_edge_cases, seed_shard, table_fingerprint
from tests.testbed.config import endpoint

pytestmark = pytest.mark.integration

PASSWORDS = {"BACKUPD_TEST_BACKUP_PW": "b4ckup-s3cret!", "BACKUPD_TEST_RESTORE_PW": "rest0re-s3cret!",
             "BACKUPD_TEST_REPL_PW": "repl-s3cret!"}
BINLOGS = "[binlogs]\nflush_every = \"1s\"\n"
_GRANT = re.compile(r"^GRANT (.+?) ON (\S+) TO ")


def granted(lines: list[str]) -> set[tuple[str, str]]:
    """``(privilege, object)`` of every GRANT line (SHOW GRANTS' rows, or what backupd printed)."""
    pairs = set()
    for line in lines:
        match = _GRANT.match(line)
        if match:
            pairs |= {(p.strip(), match.group(2)) for p in match.group(1).split(",") if p.strip() != "USAGE"}
    return pairs


def show_grants(server, account: str) -> set[tuple[str, str]]:
    return granted([row[0] for row in server.query(f"SHOW GRANTS FOR {account}")])


def grants(config: Path, *args: str) -> list[str]:
    result = run("backupd", "--config", str(config), "grants", "--shard", "1", *args)
    assert result.code == 0, result.stderr
    return result.stdout.splitlines()


def as_root(server, sql: str) -> None:
    """Run a script through the mysql client as root, as a DBA pipes backupd grants' output."""
    done = subprocess.run(["mysql", "--no-defaults", f"--socket={server.socket}", "--user=root"], input=sql,
                          text=True, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr


def unlogged(server, *statements: str) -> None:
    """Statements as root that stay out of the binary log (neither replayed nor replicated)."""
    with closing(server.connect()) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION sql_log_bin = 0")
        for statement in statements:
            cur.execute(statement)


def schema_objects(server) -> list[tuple[str, ...]]:
    """The shard's views, triggers, routines and events (seen as root)."""
    return server.query("""
        SELECT 'view', TABLE_SCHEMA, TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA IN ('app', 'edge')
        UNION ALL SELECT 'trigger', TRIGGER_SCHEMA, TRIGGER_NAME FROM information_schema.TRIGGERS
                  WHERE TRIGGER_SCHEMA IN ('app', 'edge')
        UNION ALL SELECT ROUTINE_TYPE, ROUTINE_SCHEMA, ROUTINE_NAME FROM information_schema.ROUTINES
                  WHERE ROUTINE_SCHEMA IN ('app', 'edge')
        UNION ALL SELECT 'event', EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS
                  WHERE EVENT_SCHEMA IN ('app', 'edge')
        ORDER BY 1, 2, 3""")


def backup(config: Path, kind: str = "full") -> str:
    result = run("backupd", "--config", str(config), "backup", "--shard", "1", "--kind", kind)
    assert result.code == 0, result.stderr
    return result.stdout.strip()


def writes(server, n: int) -> None:
    """An insert, an update, a delete and DDL, each its own transaction."""
    tables = [r[0] for r in server.query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                                         "TABLE_SCHEMA = 'app' AND TABLE_NAME LIKE 'bucket%' ORDER BY 1")]
    server.execute(f"INSERT INTO app.{tables[0]} (id, data, created_at, updated_at) VALUES "
                   f"({900000 + n}, '{{\"n\": {n}}}', NOW(6), NOW(6))")
    server.execute(f"UPDATE app.{tables[1]} SET data = JSON_SET(data, '$.n', %s), updated_at = NOW(6) "
                   "ORDER BY id LIMIT 2", (n,))
    server.execute(f"DELETE FROM app.{tables[2]} ORDER BY id LIMIT 1")
    server.execute(f"CREATE TABLE app.extra_{n} (id INT PRIMARY KEY, note VARCHAR(40), KEY (note))")
    server.execute(f"INSERT INTO app.extra_{n} VALUES (1, 'written {n}')")


def test_printed_grants_are_enough_and_no_more(mariadb_factory, tmp_path, monkeypatch):
    for name, value in PASSWORDS.items():
        monkeypatch.setenv(name, value)  # the archiver inherits the environment
    primary, target = mariadb_factory("primary"), mariadb_factory("target")
    seed_shard(primary, 0, 64, target_bytes=256 * 1024)
    seed_edge_cases(primary)
    unlogged(primary, "CREATE EVENT edge.ev_nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM edge.audit_log")
    shard = endpoint(primary, user="backupd", password_env="BACKUPD_TEST_BACKUP_PW", databases=["app", "edge"],
                     binlogs=True, replication_user="repl", replication_password_env="BACKUPD_TEST_REPL_PW")
    targets = {"dr": endpoint(target, user="restorer", password_env="BACKUPD_TEST_RESTORE_PW", read_from=["local"])}
    config = write_config(tmp_path / "backupd.toml", shards={"1": shard}, targets=targets, store_dir=tmp_path / "store")
    config.write_text(config.read_text() + BINLOGS)
    physical = write_config(tmp_path / "physical.toml", targets=targets, store_dir=tmp_path / "store",
                            shards={"1": {**shard, "method": "mariabackup", "datadir": str(primary.datadir)}})

    # Before the accounts exist, the server's version cannot be asked through them.
    missing = run("backupd", "--config", str(physical), "grants", "--shard", "1")
    assert missing.code == 1 and "Access denied for user 'backupd'" in missing.stderr
    assert "--server-version" in missing.stderr

    # An account that exists but holds nothing can ask; the answer is what --server-version gives.
    primary.execute("CREATE USER 'backupd'@'%%' IDENTIFIED BY %s", (PASSWORDS["BACKUPD_TEST_BACKUP_PW"],))
    target.execute("CREATE USER 'restorer'@'%%' IDENTIFIED BY %s", (PASSWORDS["BACKUPD_TEST_RESTORE_PW"],))
    version = "mariadb-" + str(primary.query("SELECT VERSION()")[0][0]).split("-")[0]
    printed = {"backup": grants(physical), "restore": grants(physical, "--role", "restore", "--target", "dr"),
               "replication": grants(physical, "--role", "replication")}
    assert printed["backup"] == grants(physical, "--server-version", version)
    assert printed["restore"] == grants(physical, "--role", "restore", "--target", "dr", "--server-version", version)
    assert granted(grants(config, "--server-version", version)) < granted(printed["backup"])  # logical: fewer
    text = "\n".join(line for lines in printed.values() for line in lines)
    assert not any(password in text for password in PASSWORDS.values())
    for line in text.splitlines():
        assert line.startswith(("--", "CREATE USER IF NOT EXISTS", "SET GLOBAL")) or \
            re.fullmatch(r"GRANT .+ ON \S+ TO '\w+'@'%';  -- \S.*", line), line
    primary.execute("DROP USER 'backupd'@'%'")
    target.execute("DROP USER 'restorer'@'%'")

    # What a DBA does: pipe the reviewed statements into the client as root. SHOW GRANTS then
    # holds exactly what was printed (the passwords are the configured ones: backups log in).
    as_root(primary, "\n".join(printed["backup"] + printed["replication"]))
    as_root(target, "\n".join(printed["restore"]))
    accounts = {"backup": (primary, "'backupd'@'%'"), "replication": (primary, "'repl'@'%'"),
                "restore": (target, "'restorer'@'%'")}
    for role, (server, account) in accounts.items():
        assert show_grants(server, account) == granted(printed[role]), role
    backup_privileges = {p for p, on in granted(printed["backup"])}
    assert {"RELOAD", "BINLOG MONITOR", "REPLICATION SLAVE", "PROCESS"} <= backup_privileges
    assert not backup_privileges & {"SUPER", "ALL PRIVILEGES", "INSERT", "UPDATE", "DELETE"}

    # Every job, with those accounts alone.
    physical_id = backup(physical)
    full_id = backup(config)
    writes(primary, 1)
    incremental_id = backup(config, "incremental")
    entries = {e["id"]: e for e in json.loads(run("backupd", "--config", str(config), "list", "--json").stdout)}
    assert entries[physical_id]["method"] == "mariabackup" and entries[incremental_id]["parent_id"] == full_id

    archiver = Archiver(config, "1", tmp_path / "archiver.log")
    writes(primary, 2)
    wait_archived(config, "1", primary)
    summary = archiver.stop()
    assert summary["transactions"] >= 5 and not summary["gaps"]

    # The restore account needs BINLOG REPLAY to replay: without it the replay fails, naming it.
    as_root(target, "REVOKE BINLOG REPLAY ON *.* FROM 'restorer'@'%';")
    refused = run("restore", "--config", str(config), "--shard", "1", "--target", "dr")
    assert refused.code == 1 and "BINLOG REPLAY" in error_line(refused.stderr, "restore"), refused.stderr
    as_root(target, "GRANT BINLOG REPLAY ON *.* TO 'restorer'@'%';")
    assert show_grants(target, "'restorer'@'%'") == granted(printed["restore"])

    # To the archive's end, verified, then a replica of the primary (the replication account).
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--force", "--replica-of", "1",
                 "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] and report["chain"] == [full_id, incremental_id]
    assert report["replay"]["transactions"] >= 5 and report["replica"]["caught_up_at"]
    writes(primary, 3)
    position = primary.query("SELECT @@gtid_binlog_pos")[0][0]
    assert target.query("SELECT MASTER_GTID_WAIT(%s, 60)", (position,))[0][0] == 0
    for database in ("app", "edge"):
        assert table_fingerprint(target, database) == table_fingerprint(primary, database), database
    assert schema_objects(target) == schema_objects(primary) and len(schema_objects(primary)) == 6

    # And the backup account: without BINLOG MONITOR mariabackup cannot read its binlog position.
    unlogged(primary, "REVOKE BINLOG MONITOR ON *.* FROM 'backupd'@'%'")
    failed = run("backupd", "--config", str(physical), "backup", "--shard", "1")
    assert failed.code == 1 and "BINLOG MONITOR" in error_line(failed.stderr, "backupd"), failed.stderr
    # ... without TRIGGER the server would hide the triggers: the logical backup refuses, naming it
    unlogged(primary, "REVOKE TRIGGER ON `edge`.* FROM 'backupd'@'%'")
    failed = run("backupd", "--config", str(config), "backup", "--shard", "1")
    assert failed.code == 1 and "lacks TRIGGER on `edge`" in error_line(failed.stderr, "backupd"), failed.stderr
    # ... and without RELOAD no snapshot can be pinned: one line naming it, no traceback
    unlogged(primary, "GRANT TRIGGER ON `edge`.* TO 'backupd'@'%'", "REVOKE RELOAD ON *.* FROM 'backupd'@'%'")
    failed = run("backupd", "--config", str(config), "backup", "--shard", "1")
    assert failed.code == 1 and "could not block commits" in error_line(failed.stderr, "backupd") and \
        "RELOAD" in error_line(failed.stderr, "backupd") and "Traceback" not in failed.stderr, failed.stderr


def error_line(stderr: str, prog: str) -> str:
    """The one line a command's error is (``prog: error: ...``)."""
    return next((line for line in stderr.splitlines() if line.startswith(f"{prog}: error: ")), "")
