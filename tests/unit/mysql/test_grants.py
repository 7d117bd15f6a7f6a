"""backupd grants (pure): the privilege names of each vendor and version, what each role's
configuration adds or leaves out, the password hash, the SQL as printed, and the errors."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from backupd.config import load_config
from backupd.errors import ConfigError, UsageError, exit_code_for
from backupd.mysql.grants import (
    BackupNeeds,
    ReplicationNeeds,
    RestoreNeeds,
    account_name,
    backup_needs,
    grant_statements,
    left_out,
    native_password_hash,
    parse_server_version,
    replication_user,
    required_grants,
    restore_needs,
    server,
)

EVERYTHING = BackupNeeds(databases=("app",), physical=True, binlogs=True, from_replica=True, binlogs_from_replica=True,
                         safe_slave_backup=True, heartbeat_table="ops.heartbeat", replica_source=True)


def privileges(vendor: str, version: str, role: str, needs: object, on: str | None = "*.*") -> set[str]:
    """Every privilege granted (on ``on``; None: anywhere)."""
    return {p for g in required_grants(vendor, version, role, needs)
            if on is None or g.on == on for p in g.privileges}


def objects(vendor: str, version: str, role: str, needs: object) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for g in required_grants(vendor, version, role, needs):
        found.setdefault(g.on, set()).update(g.privileges)
    return found


# ------------------------------------------------------------------ backup role, per version
def test_backup_mariadb_10_11_uses_the_split_privileges():
    granted = privileges("mariadb", "10.11.6-MariaDB-log", "backup", EVERYTHING)
    assert {"RELOAD", "PROCESS", "LOCK TABLES", "BINLOG MONITOR", "REPLICATION SLAVE", "SLAVE MONITOR",
            "REPLICATION SLAVE ADMIN"} == granted
    assert not granted & {"SUPER", "REPLICATION CLIENT", "BACKUP_ADMIN"}
    on_app = privileges("mariadb", "10.11.6", "backup", EVERYTHING, on="`app`.*")
    assert on_app == {"SELECT", "SHOW VIEW", "TRIGGER", "EVENT"}
    found = objects("mariadb", "10.11.6", "backup", EVERYTHING)
    assert found["`mysql`.`proc`"] == {"SELECT"}  # routines' definitions before 11.3
    assert found["`ops`.`heartbeat`"] == {"SELECT"}  # outside the shard's databases: that table alone


def test_backup_mariadb_10_4_uses_replication_client_and_super():
    granted = privileges("mariadb", "10.4.30", "backup", EVERYTHING)
    assert {"RELOAD", "PROCESS", "LOCK TABLES", "REPLICATION CLIENT", "REPLICATION SLAVE", "SUPER"} == granted
    assert not granted & {"BINLOG MONITOR", "SLAVE MONITOR", "REPLICATION SLAVE ADMIN"}


def test_backup_mariadb_10_5_before_slave_monitor():
    granted = privileges("mariadb", "10.5.8", "backup", EVERYTHING)
    assert "SLAVE MONITOR" not in granted and "REPLICATION SLAVE ADMIN" in granted  # SHOW SLAVE STATUS in 10.5.2-8
    assert "BINLOG MONITOR" in granted
    assert "SLAVE MONITOR" in privileges("mariadb", "10.5.9", "backup", EVERYTHING)


def test_backup_mariadb_11_3_shows_routines_per_database():
    found = objects("mariadb", "11.4.2", "backup", EVERYTHING)
    assert "SHOW CREATE ROUTINE" in found["`app`.*"] and "`mysql`.`proc`" not in found


def test_backup_mysql_8_0_uses_dynamic_privileges():
    granted = privileges("mysql", "8.0.36", "backup", EVERYTHING)
    assert {"RELOAD", "REPLICATION CLIENT", "PROCESS", "LOCK TABLES", "BACKUP_ADMIN", "REPLICATION SLAVE",
            "REPLICATION_SLAVE_ADMIN", "SHOW_ROUTINE"} == granted
    assert not granted & {"SUPER", "BINLOG MONITOR", "SLAVE MONITOR"}
    found = objects("mysql", "8.0.36", "backup", EVERYTHING)
    for table in ("log_status", "replication_group_members", "keyring_component_status"):
        assert found[f"`performance_schema`.`{table}`"] == {"SELECT"}
    assert "`performance_schema`.`keyring_component_status`" not in objects("mysql", "8.0.23", "backup", EVERYTHING)
    assert "SELECT" in privileges("mysql", "8.0.19", "backup", EVERYTHING)  # --routines: global SELECT then


def test_backup_mysql_5_7_uses_super():
    granted = privileges("mysql", "5.7.44", "backup", EVERYTHING)
    assert "SUPER" in granted and not any("_" in p for p in granted)  # no dynamic privileges


def test_backup_logical_from_the_primary_needs_only_the_snapshot_and_reads():
    granted = objects("mariadb", "10.11.6", "backup", BackupNeeds(databases=("app", "my_db")))
    assert granted == {"*.*": {"RELOAD"}, "`app`.*": {"SELECT", "SHOW VIEW", "TRIGGER", "EVENT"},
                       "`my\\_db`.*": {"SELECT", "SHOW VIEW", "TRIGGER", "EVENT"},  # `_` is a wildcard there
                       "`mysql`.`proc`": {"SELECT"}}


def test_backup_of_every_database_is_global():
    granted = objects("mariadb", "10.11.6", "backup", BackupNeeds(binlogs=True))
    assert set(granted) == {"*.*"}  # global SELECT covers mysql.proc
    assert {"RELOAD", "SELECT", "SHOW VIEW", "TRIGGER", "EVENT", "REPLICATION SLAVE", "BINLOG MONITOR"} == \
        granted["*.*"]


def test_safe_slave_backup_only_for_physical_backups_on_replicas():
    logical = BackupNeeds(databases=("app",), from_replica=True, safe_slave_backup=True)
    assert "REPLICATION SLAVE ADMIN" not in privileges("mariadb", "10.11.6", "backup", logical)
    on_primary = BackupNeeds(databases=("app",), physical=True, safe_slave_backup=True)
    assert "REPLICATION SLAVE ADMIN" not in privileges("mariadb", "10.11.6", "backup", on_primary)


def test_binlogs_from_a_replica_read_its_replication_status():
    needs = BackupNeeds(databases=("app",), binlogs=True, binlogs_from_replica=True)
    assert "SLAVE MONITOR" in privileges("mariadb", "10.11.6", "backup", needs)
    assert "REPLICATION CLIENT" in privileges("mariadb", "10.3.39", "backup", needs)
    assert "SLAVE MONITOR" not in privileges("mariadb", "10.11.6", "backup", BackupNeeds(binlogs=True))


def test_a_heartbeat_table_inside_the_databases_needs_nothing_more():
    needs = BackupNeeds(databases=("app",), from_replica=True, heartbeat_table="app.heartbeat")
    assert not [g for g in required_grants("mariadb", "10.11.6", "backup", needs) if "heartbeat" in g.on]


# ------------------------------------------------------------------ restore and replication roles
def test_restore_mariadb_10_11():
    found = objects("mariadb", "10.11.6", "restore", RestoreNeeds(databases=("app",)))
    assert found["*.*"] == {"BINLOG ADMIN", "SET USER", "BINLOG REPLAY", "REPLICATION SLAVE ADMIN", "SLAVE MONITOR",
                            "RELOAD"}
    assert {"SELECT", "INSERT", "DELETE", "CREATE", "DROP", "ALTER", "INDEX", "LOCK TABLES", "CREATE TEMPORARY TABLES",
            "CREATE VIEW", "TRIGGER", "EVENT", "CREATE ROUTINE", "ALTER ROUTINE"} <= found["`app`.*"]
    assert "REFERENCES" not in found["`app`.*"]
    assert found["`backupd\\_restore\\_%`.*"] >= {"CREATE", "DROP", "ALTER", "INSERT", "SELECT"}  # restore --table
    writes_binlog = objects("mariadb", "10.11.6", "restore", RestoreNeeds(databases=("app",), write_binlog=True))
    assert "BINLOG ADMIN" not in writes_binlog["*.*"]


def test_restore_older_servers_and_mysql():
    assert privileges("mariadb", "10.4.30", "restore", RestoreNeeds()) >= {"SUPER", "RELOAD", "REPLICATION CLIENT"}
    assert "SLAVE MONITOR" not in privileges("mariadb", "10.5.8", "restore", RestoreNeeds())
    mysql = privileges("mysql", "8.0.36", "restore", RestoreNeeds())
    assert {"SYSTEM_VARIABLES_ADMIN", "SET_USER_ID", "BINLOG_ADMIN", "REPLICATION_SLAVE_ADMIN", "RELOAD",
            "REPLICATION CLIENT", "REFERENCES"} <= mysql and "SUPER" not in mysql
    assert {"SET_ANY_DEFINER", "ALLOW_NONEXISTENT_DEFINER"} <= privileges("mysql", "8.4.0", "restore", RestoreNeeds())
    assert "SUPER" in privileges("mysql", "8.0.21", "restore", RestoreNeeds())  # before SET_USER_ID


def test_restore_of_every_database_has_no_scratch_grant():
    found = objects("mariadb", "10.11.6", "restore", RestoreNeeds())
    assert set(found) == {"*.*"} and "CREATE" in found["*.*"]


def test_replication_role():
    assert privileges("mariadb", "10.11.6", "replication", ReplicationNeeds()) == {"REPLICATION SLAVE",
                                                                                   "BINLOG MONITOR"}
    assert privileges("mysql", "8.0.36", "replication", ReplicationNeeds()) == {"REPLICATION SLAVE",
                                                                              "REPLICATION CLIENT"}


# ------------------------------------------------------------------ the SQL
def test_password_hash_is_mysql_native_password():
    assert native_password_hash("bkpw") == "*87252F2D76EAD921483EDD4CD2D10329AD9CAD1F"  # PASSWORD('bkpw') on 10.11
    assert native_password_hash("password") == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
    inner = hashlib.sha1("pässwörd".encode()).digest()
    assert native_password_hash("pässwörd") == "*" + hashlib.sha1(inner).hexdigest().upper()


def test_statements_as_printed():
    hashed = native_password_hash("s3cret")
    sql = grant_statements("mariadb", "10.11.6", "backup", user="backupd", host="10.0.%", password_hash=hashed,
                           needs=BackupNeeds(databases=("app",), binlogs=True))
    assert sql[0] == f"CREATE USER IF NOT EXISTS 'backupd'@'10.0.%' IDENTIFIED BY PASSWORD '{hashed}';"
    assert "s3cret" not in "\n".join(sql)
    for line in sql[1:]:
        assert re.fullmatch(r"GRANT [A-Z_, ]+ ON \S+ TO 'backupd'@'10\.0\.%';  -- \S.*", line), line
    assert "GRANT REPLICATION SLAVE ON *.* TO 'backupd'@'10.0.%';  -- the binlog archiver" in "\n".join(sql)
    mysql = grant_statements("mysql", "8.0.36", "backup", user="b", password_hash=hashed, needs=BackupNeeds())
    assert mysql[0] == f"CREATE USER IF NOT EXISTS 'b'@'%' IDENTIFIED WITH mysql_native_password AS '{hashed}';"


def test_no_password_is_a_marked_placeholder():
    sql = grant_statements("mariadb", "10.11.6", "replication", user="repl", password_hash=None,
                           needs=ReplicationNeeds())
    assert "IDENTIFIED BY '<set a password>';  -- PLACEHOLDER" in sql[0]


def test_restore_sets_what_replaces_super_for_triggers():
    sql = grant_statements("mariadb", "10.11.6", "restore", user="r", password_hash=None, needs=RestoreNeeds())
    assert sql[-1].startswith("SET GLOBAL log_bin_trust_function_creators = ON;  -- ")
    old = grant_statements("mariadb", "10.4.30", "restore", user="r", password_hash=None, needs=RestoreNeeds())
    assert not any(s.startswith("SET GLOBAL") for s in old)  # SUPER is granted there


def test_names_are_quoted():
    assert account_name("o'brien", "%") == "'o''brien'@'%'"
    sql = grant_statements("mariadb", "10.11.6", "backup", user="b", password_hash=None,
                           needs=BackupNeeds(databases=("we`ird",)))
    assert any(" ON `we``ird`.* TO " in line for line in sql)


def test_left_out_says_what_the_configuration_does_not_need():
    notes = "\n".join(left_out("mariadb", "10.11.6", "backup", BackupNeeds(databases=("app",))))
    assert "REPLICATION SLAVE" in notes and "mysqldump" in notes and "BINLOG MONITOR" in notes
    assert left_out("mariadb", "10.11.6", "backup", EVERYTHING) == []


# ------------------------------------------------------------------ errors
def test_server_versions():
    assert server("MariaDB", "10.11.19-MariaDB-0+deb12u1-log").version == (10, 11, 19)
    assert parse_server_version("mariadb-10.11.6").label == "MariaDB 10.11.6"
    assert parse_server_version("mysql-8.0").version == (8, 0, 0)
    for bad in ("10.11.6", "postgres-16.1", "mariadb-latest", "mariadb"):
        with pytest.raises(UsageError, match="--server-version"):
            parse_server_version(bad)
    with pytest.raises(UsageError, match="unknown server vendor 'oracle'"):
        server("oracle", "19.0")
    with pytest.raises(UsageError, match="expected a version"):
        server("mysql", "eight")


def test_wrong_needs_or_role():
    with pytest.raises(ValueError, match="RestoreNeeds"):
        required_grants("mariadb", "10.11.6", "restore", BackupNeeds())
    with pytest.raises(UsageError, match="unknown role 'admin'"):
        required_grants("mariadb", "10.11.6", "admin", BackupNeeds())
    with pytest.raises(ValueError, match="password_hash"):
        grant_statements("mariadb", "10.11.6", "backup", user="b", password_hash="plain", needs=BackupNeeds())


CONFIG = """
[stores.local]
type = "local"
path = "store"

[shards.1]
socket = "run/shard1.sock"
user = "backupd"
databases = ["app"]
method = "mariabackup"
datadir = "data"
binlogs = true
backup_from = "replica"
binlogs_from = "replica"
replicas = [{host = "replica-1", datadir = "data"}]
safe_slave_backup = true
heartbeat_table = "ops.heartbeat"

[shards.2]
host = "db2"
user = "backupd"

[targets.dr]
host = "dr"
user = "restorer"
read_from = ["local"]
write_binlog = true
"""


def test_needs_from_the_configuration(tmp_path: Path):
    (tmp_path / "data").mkdir()
    path = tmp_path / "backupd.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    assert backup_needs(config, "1") == BackupNeeds(databases=("app",), physical=True, binlogs=True, from_replica=True,
                                                    binlogs_from_replica=True, safe_slave_backup=True,
                                                    heartbeat_table="ops.heartbeat")
    assert backup_needs(config, "2") == BackupNeeds()
    assert restore_needs(config, "1", "dr") == RestoreNeeds(databases=("app",), write_binlog=True)
    physical = "\n".join(left_out("mariadb", "10.11.6", "restore", RestoreNeeds(physical=True)))
    assert "create this account on the shard too" in physical
    with pytest.raises(UsageError, match="--target NAME") as missing:
        restore_needs(config, "1", None)
    assert exit_code_for(missing.value) == 2
    with pytest.raises(UsageError, match="unknown target 'nowhere'"):
        restore_needs(config, "1", "nowhere")
    with pytest.raises(UsageError, match="unknown shard '9'"):
        backup_needs(config, "9")
    with pytest.raises(ConfigError, match=r"shards\.1\.replication_user is not set") as unset:
        replication_user(config, "1")
    assert exit_code_for(unset.value) == 2
