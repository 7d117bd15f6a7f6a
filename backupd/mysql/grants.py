"""Least-privilege accounts: the exact ``CREATE USER`` and ``GRANT`` statements each of
backupd's accounts needs on a server of a given vendor and version (``backupd grants``).

Pure: no server, no file, no clock. ``grant_statements`` takes the vendor, the version, the role,
the account and what the role's jobs do (``BackupNeeds``, ``RestoreNeeds``,
``ReplicationNeeds``, built from the configuration by ``backup_needs`` / ``restore_needs`` /
``replication_needs``) and returns the statements, each ``GRANT`` with a ``-- why`` comment
naming the job that needs it, so a DBA can review every privilege.

The roles and what they run (read off the code, and off the tools' documentation):

* ``backup``, the shard's account (``shards.ID.user``) on its primary and on every replica it
  backs up from: the snapshot hand-off (``backupd.mysql.snapshot``: ``BACKUP STAGE`` on MariaDB
  >= 10.4, ``FLUSH TABLES WITH READ LOCK`` elsewhere: RELOAD; ``SHOW MASTER STATUS`` on MySQL),
  mysqldump (rows, views, triggers, events, routines) and the per-table reference, incrementals
  (the same reads), mariabackup/xtrabackup (RELOAD, PROCESS, LOCK TABLES, the binlog position;
  MySQL: BACKUP_ADMIN and some performance_schema tables), the binlog archiver
  (``COM_BINLOG_DUMP``: REPLICATION SLAVE; ``SHOW MASTER STATUS`` / ``SHOW BINARY LOGS``),
  backups from a replica (``SHOW SLAVE STATUS``; mariabackup ``--slave-info``, and
  ``--safe-slave-backup`` which stops its SQL thread), binlog archiving from a replica,
  and ``restore --replica-of`` reading the shard's position through this account.
* ``restore``, a target's account (``targets.NAME.user``): loading and verifying the shard's
  databases (``sql_log_bin=0`` sessions, objects re-created with their ``DEFINER``), incrementals
  (deletes, temporary tables of live keys, objects dropped and re-created), ``restore --table``
  (a scratch database ``backupd_restore_<random>`` and ``RENAME TABLE``), point-in-time replays
  (``mysqlbinlog | mysql``: ``BINLOG`` statements and the session variables they set) and
  ``restore --replica-of`` (``CHANGE MASTER``, ``START SLAVE``, ``SHOW SLAVE STATUS``...).
* ``replication``, the shard's ``replication_user`` on its primary: what a replica connects with.

Privilege names follow the version: MariaDB >= 10.5.2 split SUPER (BINLOG MONITOR, BINLOG
ADMIN, BINLOG REPLAY, SET USER, REPLICATION SLAVE ADMIN; SLAVE MONITOR from 10.5.9, before which
REPLICATION SLAVE ADMIN allowed SHOW SLAVE STATUS) and has SHOW CREATE ROUTINE from 11.3; MySQL
8.0 has dynamic privileges (BACKUP_ADMIN, REPLICATION_SLAVE_ADMIN, SYSTEM_VARIABLES_ADMIN,
SHOW_ROUTINE from 8.0.20, SET_USER_ID from 8.0.22, SET_ANY_DEFINER from 8.2); older servers use
SUPER and REPLICATION CLIENT. Database-scoped privileges are granted on the shard's
``databases`` when it lists them, globally otherwise.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from backupd.config import Config
from backupd.errors import ConfigError, UsageError

Role = Literal["backup", "restore", "replication"]
ROLES: tuple[Role, ...] = ("backup", "restore", "replication")
VENDORS = ("mariadb", "mysql")

# restore --table loads into `backupd_restore_<8 hex digits>` (restore.tables): a grant pattern.
SCRATCH_DATABASES = "backupd\\_restore\\_%"
PASSWORD_PLACEHOLDER = "<set a password>"


@dataclass(frozen=True)
class BackupNeeds:
    """What the shard's account does (``backup_needs`` reads it off the configuration)."""

    databases: tuple[str, ...] = ()      # the shard's ``databases`` (empty: every database)
    physical: bool = False               # mariabackup / xtrabackup
    binlogs: bool = False                # a binlog archiver runs for the shard
    from_replica: bool = False           # backup_from = "replica": SHOW SLAVE STATUS on replicas
    binlogs_from_replica: bool = False   # binlogs_from = "replica": the archiver reads a replica
    safe_slave_backup: bool = False      # physical backups on a replica with --safe-slave-backup
    heartbeat_table: str | None = None   # "db.table" read on replicas
    replica_source: bool = False         # replication_user set: restore --replica-of reads this server


@dataclass(frozen=True)
class RestoreNeeds:
    """What a target's account does for a shard's restores."""

    databases: tuple[str, ...] = ()      # the shard's ``databases`` (empty: every database)
    write_binlog: bool = False           # targets.NAME.write_binlog (else sessions run sql_log_bin=0)
    physical: bool = False               # the target has a datadir: physical restores replace it


@dataclass(frozen=True)
class ReplicationNeeds:
    """What the shard's replication account does (nothing to choose)."""


Needs = BackupNeeds | RestoreNeeds | ReplicationNeeds


@dataclass(frozen=True)
class Grant:
    """Privileges on one object (``*.*``, ```app`.*``, ```mysql`.`proc```), and why."""

    privileges: tuple[str, ...]
    on: str
    why: str

    def sql(self, account: str) -> str:
        return f"GRANT {', '.join(self.privileges)} ON {self.on} TO {account};  -- {self.why}"


@dataclass(frozen=True)
class Server:
    """A vendor and a version, compared as numbers."""

    vendor: Literal["mariadb", "mysql"]
    version: tuple[int, int, int]

    @property
    def label(self) -> str:
        return f"{'MariaDB' if self.vendor == 'mariadb' else 'MySQL'} {'.'.join(map(str, self.version))}"

    def mariadb(self, *at_least: int) -> bool:
        return self.vendor == "mariadb" and self.version >= _pad(at_least)

    def mysql(self, *at_least: int) -> bool:
        return self.vendor == "mysql" and self.version >= _pad(at_least)

    @property
    def split_super(self) -> bool:
        """MariaDB >= 10.5.2: SUPER's powers have names of their own."""
        return self.mariadb(10, 5, 2)

    @property
    def dynamic(self) -> bool:
        """MySQL >= 8.0: dynamic privileges."""
        return self.mysql(8, 0)


def _pad(parts: tuple[int, ...]) -> tuple[int, int, int]:
    padded = (*parts, 0, 0, 0)
    return padded[0], padded[1], padded[2]


_VERSION = re.compile(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?")


def server(vendor: str, version: str) -> Server:
    """``("mariadb", "10.11.6-MariaDB-log")`` -> ``Server``; UsageError for anything else."""
    name = vendor.strip().lower()
    if name not in VENDORS:
        raise UsageError(f"unknown server vendor '{vendor}' (expected mariadb or mysql)")
    match = _VERSION.match(version)
    if not match:
        raise UsageError(f"{vendor} version '{version}': expected a version such as 10.11.6")
    major, minor, patch = (int(g) if g is not None else 0 for g in match.groups())
    return Server("mariadb" if name == "mariadb" else "mysql", (major, minor, patch))


def parse_server_version(text: str) -> Server:
    """``--server-version mariadb-10.11.6`` (or ``mysql-8.0.36``) -> ``Server``."""
    vendor, _, version = text.strip().partition("-")
    if vendor.lower() not in VENDORS or not _VERSION.match(version):
        raise UsageError(f"--server-version '{text}': expected VENDOR-VERSION such as mariadb-10.11.6 "
                         "or mysql-8.0.36")
    return server(vendor, version)


def native_password_hash(password: str) -> str:
    """What ``mysql_native_password`` stores: ``*`` and the upper hex of SHA1(SHA1(password))."""
    inner = hashlib.sha1(password.encode("utf-8")).digest()
    return "*" + hashlib.sha1(inner).hexdigest().upper()


def account_name(user: str, host: str) -> str:
    """``'user'@'host'`` as SQL."""
    return f"{_string(user)}@{_string(host)}"


def _string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _database(name: str) -> str:
    """A database in a database-level grant: `_` and `%` are wildcards there, so escaped."""
    escaped = name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    return "`" + escaped.replace("`", "``") + "`.*"


def _table(database: str, table: str) -> str:
    return "`" + database.replace("`", "``") + "`.`" + table.replace("`", "``") + "`"


class _Grants:
    """Grants in the order they are added; one privilege on one object added twice is one
    grant whose reasons are joined."""

    def __init__(self) -> None:
        self._reasons: dict[tuple[tuple[str, ...], str], list[str]] = {}

    def add(self, privileges: str | tuple[str, ...], on: str, why: str) -> None:
        key = ((privileges,) if isinstance(privileges, str) else privileges, on)
        reasons = self._reasons.setdefault(key, [])
        if why not in reasons:
            reasons.append(why)

    def per_database(self, databases: tuple[str, ...], privilege: str, why: str) -> None:
        """``privilege`` on each of ``databases``, or on ``*.*`` when there are none."""
        for on in [_database(d) for d in databases] or ["*.*"]:
            self.add(privilege, on, why)

    def grants(self) -> list[Grant]:
        made = [Grant(privileges, on, "; ".join(whys)) for (privileges, on), whys in self._reasons.items()]
        rank = {"*.*": 0}
        return sorted(made, key=lambda g: rank.get(g.on, 1 if g.on.endswith(".*") else 2))


def required_grants(vendor: str, version: str, role: Role, needs: Needs) -> list[Grant]:
    """The grants ``role`` needs on a server of ``vendor`` and ``version`` (module docstring)."""
    srv = server(vendor, version)
    if role == "backup" and isinstance(needs, BackupNeeds):
        return _backup(srv, needs)
    if role == "restore" and isinstance(needs, RestoreNeeds):
        return _restore(srv, needs)
    if role == "replication" and isinstance(needs, ReplicationNeeds):
        return _replication(srv)
    if role not in ROLES:
        raise UsageError(f"unknown role '{role}' (expected {', '.join(ROLES)})")
    raise ValueError(f"role {role} takes {role.capitalize()}Needs, not {type(needs).__name__}")


def routines_privilege(srv: Server) -> tuple[str, Literal["database", "global", "mysql.proc"]]:
    """What lets an account see procedures' and functions' definitions, and where it is granted
    (global ``SELECT`` always does too): ``SHOW CREATE ROUTINE`` on each database (MariaDB >=
    11.3), ``SHOW_ROUTINE`` (MySQL >= 8.0.20), global ``SELECT`` (MySQL 8.0 before that),
    ``SELECT`` on ``mysql.proc`` (older MariaDB, MySQL 5.7). Without it the server hides them."""
    if srv.mariadb(11, 3):
        return "SHOW CREATE ROUTINE", "database"
    if srv.mysql(8, 0, 20):
        return "SHOW_ROUTINE", "global"
    if srv.dynamic:
        return "SELECT", "global"
    return "SELECT", "mysql.proc"


def _binlog_monitor(srv: Server) -> str:
    return "BINLOG MONITOR" if srv.split_super else "REPLICATION CLIENT"


def _slave_monitor(srv: Server) -> str:
    """What ``SHOW SLAVE STATUS`` needs."""
    if srv.mariadb(10, 5, 9):
        return "SLAVE MONITOR"
    if srv.split_super:
        return "REPLICATION SLAVE ADMIN"  # 10.5.2 - 10.5.8
    return "REPLICATION CLIENT"


def _backup(srv: Server, needs: BackupNeeds) -> list[Grant]:
    g = _Grants()
    tool = "mariabackup" if srv.vendor == "mariadb" else "xtrabackup"
    dbs = needs.databases
    if srv.mariadb(10, 4):
        g.add("RELOAD", "*.*", "logical backups: BACKUP STAGE blocks commits for a moment while every "
                               "snapshot opens")
    else:
        g.add("RELOAD", "*.*", "logical backups: FLUSH TABLES WITH READ LOCK for a moment while every "
                               "snapshot opens")
    if srv.vendor == "mysql":
        g.add("REPLICATION CLIENT", "*.*", "every backup reads its binlog coordinates (SHOW MASTER STATUS)")
    if needs.physical:
        g.add("RELOAD", "*.*", f"{tool}'s backup locks")
        g.add(_binlog_monitor(srv), "*.*", f"{tool} reads the backup's binlog position (SHOW MASTER STATUS)")
        g.add("PROCESS", "*.*", f"{tool} refuses to start without it (SHOW ENGINE INNODB STATUS, running "
                                "queries)")
        g.add("LOCK TABLES", "*.*", f"{tool}: required by its documentation (backup locks)")
        if srv.dynamic:
            g.add("BACKUP_ADMIN", "*.*", "xtrabackup: LOCK INSTANCE FOR BACKUP, performance_schema.log_status")
    if needs.binlogs:
        g.add("REPLICATION SLAVE", "*.*", "the binlog archiver reads the binary log as a replica does "
                                          "(COM_BINLOG_DUMP)")
        g.add(_binlog_monitor(srv), "*.*", "the binlog archiver: SHOW MASTER STATUS (first start without a "
                                           "backup), SHOW BINARY LOGS (after a purge, or to start by GTID)")
    if needs.replica_source:
        g.add(_binlog_monitor(srv), "*.*", "restore --replica-of reads this server's SHOW MASTER STATUS "
                                           "(backups without a GTID)")
    if needs.from_replica:
        g.add(_slave_monitor(srv), "*.*", "backups from a replica: SHOW SLAVE STATUS (is it fit, the "
                                          "primary's coordinates it applied)")
        if needs.physical:
            g.add(_slave_monitor(srv), "*.*", f"{tool} --slave-info")
    if needs.binlogs and needs.binlogs_from_replica:
        g.add(_slave_monitor(srv), "*.*", "binlog archiving from a replica: SHOW SLAVE STATUS (does it "
                                          "replicate, its lag)")
    if needs.from_replica and needs.physical and needs.safe_slave_backup:
        admin = ("REPLICATION SLAVE ADMIN" if srv.split_super else
                 "REPLICATION_SLAVE_ADMIN" if srv.dynamic else "SUPER")
        g.add(admin, "*.*", f"{tool} --safe-slave-backup stops and restarts the replica's SQL thread")
        if srv.mariadb(10, 5, 9):
            g.add("SLAVE MONITOR", "*.*", f"{tool} --safe-slave-backup checks for it")
    routine_privilege, routine_scope = routines_privilege(srv)
    if routine_scope == "global" and routine_privilege == "SHOW_ROUTINE":
        g.add("SHOW_ROUTINE", "*.*", "procedures and functions: mysqldump --routines and the reference read "
                                     "their definitions")
    elif routine_scope == "global":
        g.add("SELECT", "*.*", "procedures and functions: mysqldump --routines needs global SELECT before "
                               "MySQL 8.0.20")
    g.per_database(dbs, "SELECT", "mysqldump and the per-table reference read every row")
    g.per_database(dbs, "SHOW VIEW", "mysqldump reads the views' definitions (refused without it)")
    g.per_database(dbs, "TRIGGER", "mysqldump --triggers (without it triggers are silently left out)")
    g.per_database(dbs, "EVENT", "mysqldump --events (SHOW EVENTS is refused without it)")
    routines = "procedures and functions: mysqldump --routines and the reference read their definitions " \
               "(without it they are silently left out)"
    if routine_scope == "database":
        g.per_database(dbs, routine_privilege, routines)
    elif routine_scope == "mysql.proc" and dbs:  # with no databases, the global SELECT covers mysql.proc
        g.add("SELECT", _table("mysql", "proc"), routines)
    if needs.from_replica and needs.heartbeat_table and dbs:
        database, table = needs.heartbeat_table.split(".", 1)
        if database not in dbs:
            g.add("SELECT", _table(database, table), "backups from a replica read the heartbeat table's "
                                                     "newest ts")
    if needs.physical and srv.dynamic:
        for table, why in (("log_status", "xtrabackup reads the log positions"),
                           ("replication_group_members", "xtrabackup checks for group replication"),
                           ("keyring_component_status", "xtrabackup checks the keyring component")):
            if table != "keyring_component_status" or srv.mysql(8, 0, 24):
                g.add("SELECT", _table("performance_schema", table), why)
    return g.grants()


# What loading, verifying and replaying need in each database of the shard (module docstring).
_RESTORE_DATABASE = (
    ("SELECT", "verification: row counts and digests of every restored table"),
    ("INSERT", "loading rows"),
    ("UPDATE", "point-in-time replays of statement-logged updates"),
    ("DELETE", "incrementals delete the rows gone since the full (REPLACE changed ones)"),
    ("CREATE", "CREATE DATABASE, CREATE TABLE"),
    ("DROP", "DROP TABLE IF EXISTS before each table; --force and incrementals drop what is gone"),
    ("ALTER", "ALTER TABLE ... DISABLE KEYS around rows; RENAME TABLE (restore --table); replayed DDL"),
    ("INDEX", "CREATE/DROP INDEX in replayed binlogs"),
    ("LOCK TABLES", "LOCK TABLES ... WRITE around each table's rows"),
    ("CREATE TEMPORARY TABLES", "incrementals list live keys of tables without an integer key in a "
                                "temporary table"),
    ("CREATE VIEW", "views"),
    ("TRIGGER", "triggers (incrementals drop and re-create them)"),
    ("EVENT", "events"),
    ("CREATE ROUTINE", "procedures and functions"),
    ("ALTER ROUTINE", "incrementals drop procedures and functions before re-creating them"),
)
_SCRATCH = ("SELECT", "INSERT", "DELETE", "CREATE", "DROP", "ALTER", "LOCK TABLES", "CREATE TEMPORARY TABLES")


def _restore(srv: Server, needs: RestoreNeeds) -> list[Grant]:
    g = _Grants()
    if srv.split_super:
        if not needs.write_binlog:
            g.add("BINLOG ADMIN", "*.*", "SET SESSION sql_log_bin = 0: restores write nothing to the target's "
                                         "binlog (write_binlog = false)")
        g.add("SET USER", "*.*", "views, triggers, routines and events are re-created with their DEFINER")
        g.add("BINLOG REPLAY", "*.*", "point-in-time replays: BINLOG statements and the session server_id, "
                                      "gtid_seq_no, pseudo_thread_id of mysqlbinlog's output")
        g.add("REPLICATION SLAVE ADMIN", "*.*", "restore --replica-of: CHANGE MASTER, SET GLOBAL gtid_slave_pos, "
                                                "STOP/START SLAVE")
    elif srv.dynamic:
        why = "restores set sql_log_bin = 0 (write_binlog = false); " if not needs.write_binlog else ""
        g.add("SYSTEM_VARIABLES_ADMIN", "*.*", f"{why}point-in-time replays set gtid_next, pseudo_thread_id; "
                                               "restore --replica-of sets gtid_purged")
        if srv.mysql(8, 2):
            g.add("SET_ANY_DEFINER", "*.*", "views, triggers, routines and events are re-created with their "
                                            "DEFINER")
            g.add("ALLOW_NONEXISTENT_DEFINER", "*.*", "... also when that account does not exist on the target")
        elif srv.mysql(8, 0, 22):
            g.add("SET_USER_ID", "*.*", "views, triggers, routines and events are re-created with their DEFINER")
        else:
            g.add("SUPER", "*.*", "views, triggers, routines and events are re-created with their DEFINER")
        g.add("BINLOG_ADMIN", "*.*", "point-in-time replays: BINLOG statements of mysqlbinlog's output")
        g.add("REPLICATION_SLAVE_ADMIN", "*.*", "restore --replica-of: CHANGE MASTER, START/STOP SLAVE")
    else:
        g.add("SUPER", "*.*", "sql_log_bin = 0; objects' DEFINER; BINLOG statements of replays; triggers and "
                              "functions with binary logging on; restore --replica-of: CHANGE MASTER, "
                              "START/STOP SLAVE, gtid_slave_pos/gtid_purged")
    if srv.vendor == "mysql":
        g.add("RELOAD", "*.*", "restore --replica-of: RESET SLAVE ALL, RESET MASTER")
    else:
        g.add("RELOAD", "*.*", "restore --replica-of: RESET SLAVE ALL")
    if not (srv.split_super and not srv.mariadb(10, 5, 9)):  # 10.5.2-10.5.8: REPLICATION SLAVE ADMIN does it
        g.add(_slave_monitor(srv), "*.*", "restore --replica-of waits on SHOW SLAVE STATUS until caught up")
    dbs = needs.databases
    for privilege, why in _RESTORE_DATABASE:
        g.per_database(dbs, privilege, why)
    if srv.vendor == "mysql":
        g.per_database(dbs, "REFERENCES", "foreign keys")
    if dbs:
        g.add(_SCRATCH, f"`{SCRATCH_DATABASES}`.*", "restore --table loads and verifies tables in a scratch "
                                                    "database backupd_restore_<random>, then renames them in")
    return g.grants()


def _replication(srv: Server) -> list[Grant]:
    g = _Grants()
    g.add("REPLICATION SLAVE", "*.*", "a replica's IO thread reads this server's binary log (restore --replica-of)")
    g.add(_binlog_monitor(srv), "*.*", "restore --replica-of HOST:PORT reads the source's SHOW MASTER STATUS "
                                       "through this account (backups without a GTID)")
    return g.grants()


def grant_statements(vendor: str, version: str, role: Role, *, user: str, host: str = "%",
                     password_hash: str | None, needs: Needs) -> list[str]:
    """``CREATE USER IF NOT EXISTS`` (with the password's hash, or a marked placeholder), then
    every grant of ``required_grants``, each with its ``-- why``; for the restore role on
    servers where nothing short of SUPER may create triggers and functions while binary logging
    is on, the server setting that allows it instead."""
    srv = server(vendor, version)
    if password_hash is not None and not re.fullmatch(r"\*[0-9A-F]{40}", password_hash):
        raise ValueError("password_hash: expected '*' and 40 upper-case hex digits (native_password_hash)")
    account = account_name(user, host)
    statements = [_create_user(srv, account, password_hash)]
    statements += [grant.sql(account) for grant in required_grants(vendor, version, role, needs)]
    if role == "restore" and (srv.split_super or srv.dynamic):
        statements.append("SET GLOBAL log_bin_trust_function_creators = ON;  -- without SUPER, triggers and "
                          "functions cannot be created while binary logging is on (error 1419); set it in the "
                          "target's config file too")
    return statements


def left_out(vendor: str, version: str, role: Role, needs: Needs) -> list[str]:
    """What the role's configuration does not need, and which setting would (printed as
    comments, so that a change of configuration is known to need new grants)."""
    srv = server(vendor, version)
    notes = []
    if role == "backup" and isinstance(needs, BackupNeeds):
        tool = "mariabackup" if srv.vendor == "mariadb" else "xtrabackup"
        if not needs.physical:
            notes.append(f"not granted: what {tool} needs (PROCESS, LOCK TABLES...): the shard's method is "
                         "mysqldump")
        if not needs.binlogs:
            notes.append("not granted: REPLICATION SLAVE: no binlog archiver runs for this shard ([binlogs] enabled, "
                         "shards.ID.binlogs)")
        if not needs.from_replica and not (needs.binlogs and needs.binlogs_from_replica):
            notes.append("not granted: SHOW SLAVE STATUS: backups and binlogs are read on the primary "
                         "(backup_from, binlogs_from)")
        if not (needs.physical or needs.binlogs or needs.replica_source) and srv.vendor == "mariadb":
            notes.append(f"not granted: {_binlog_monitor(srv)}: nothing reads SHOW MASTER STATUS through this account")
        if not needs.databases:
            notes.append("database privileges are global: the shard lists no databases (shards.ID.databases)")
    elif role == "restore" and isinstance(needs, RestoreNeeds):
        if needs.write_binlog and srv.split_super:
            notes.append("not granted: BINLOG ADMIN: the target writes its binlog (write_binlog = true)")
        if needs.databases:
            notes.append("point-in-time replays apply the changes of every database in the shard's binlog: "
                         "grant the same on any other database written on the shard")
        else:
            notes.append("database privileges are global: the shard lists no databases (shards.ID.databases)")
        if needs.physical:
            notes.append("a physical restore brings the shard's own accounts (its mysql database): create this "
                         "account on the shard too, with the same password, or the restored server cannot be "
                         "verified through it")
    if any(note.startswith(("not granted", "database privileges")) for note in notes):
        notes.append("run backupd grants again after changing these settings")
    return notes


def _create_user(srv: Server, account: str, password_hash: str | None) -> str:
    if password_hash is None or srv.mysql(9):
        why = ("PLACEHOLDER: no password is configured for this account: put its password here"
               if password_hash is None else "PLACEHOLDER: MySQL 9 has no mysql_native_password: put the password here")
        return f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {_string(PASSWORD_PLACEHOLDER)};  -- {why}"
    if srv.vendor == "mariadb":
        return f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY PASSWORD '{password_hash}';"
    note = "  -- MySQL 8.4: the mysql_native_password plugin must be enabled" if srv.mysql(8, 4) else ""
    return f"CREATE USER IF NOT EXISTS {account} IDENTIFIED WITH mysql_native_password AS '{password_hash}';{note}"


def backup_needs(config: Config, shard_id: str) -> BackupNeeds:
    """What the shard's account does, from its configuration."""
    shard = config.shard(shard_id)
    from_replica = shard.backup_from == "replica"
    return BackupNeeds(databases=tuple(shard.databases or ()), physical=shard.is_physical,
                       binlogs=config.archives_binlogs(shard_id), from_replica=from_replica,
                       binlogs_from_replica=shard.binlogs_from == "replica",
                       safe_slave_backup=shard.safe_slave_backup,
                       heartbeat_table=shard.heartbeat_table if from_replica else None,
                       replica_source=shard.replication_user is not None)


def restore_needs(config: Config, shard_id: str, target_name: str | None) -> RestoreNeeds:
    """What target ``target_name``'s account does for the shard's restores."""
    shard = config.shard(shard_id)
    if target_name is None:
        raise UsageError("--role restore needs --target NAME (the [targets.NAME] whose account to grant)")
    target = config.target(target_name)
    return RestoreNeeds(databases=tuple(shard.databases or ()), write_binlog=target.write_binlog,
                        physical=target.for_shard(shard_id).datadir is not None)


def replication_user(config: Config, shard_id: str) -> str:
    """The shard's replication account; ConfigError when it has none."""
    user = config.shard(shard_id).replication_user
    if not user:
        raise ConfigError(f"{config.path}: shards.{shard_id}.replication_user is not set (the account "
                          "replicas of this shard connect with)")
    return user

