from backupd.errors import (
    BackupFailed,
    ConfigError,
    CorruptPart,
    DataMismatch,
    TargetNotEmpty,
    UsageError,
    exit_code_for,
)
from backupd.mysql.dump import _HEADER_COORDS, common_args, table_run_args


def test_mariadb_flags():
    common = common_args("mysqldump", "/tmp/x/client.cnf", "mariadb", "10.11.19")
    args = table_run_args(common, "app", ["big", "small"])
    assert args[1] == "--defaults-file=/tmp/x/client.cnf"  # must come first
    for flag in ("--single-transaction", "--quick", "--triggers", "--skip-routines", "--skip-events",
                 "--master-data=2", "--gtid"):
        assert flag in args
    assert "--where=1=0" not in args and "--where=1=0" in table_run_args(common, "app", ["f"], rows=False)
    assert args[-3:] == ["app", "big", "small"]  # the tables in the order given: largest first
    assert not any("password" in a for a in args)


def test_mysql8_uses_its_own_names():
    args = common_args("mysqldump", "f", "mysql", "8.0.36")
    assert "--source-data=2" in args and "--master-data=2" not in args
    assert "--set-gtid-purged=COMMENTED" in args and "--gtid" not in args
    old = common_args("mysqldump", "f", "mysql", "8.0.20")
    assert "--master-data=2" in old


def test_header_coordinates_both_spellings():
    maria = b"-- CHANGE MASTER TO MASTER_LOG_FILE='bin.000002', MASTER_LOG_POS=1003;\n"
    mysql = b"-- CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='binlog.000009', SOURCE_LOG_POS=157;\n"
    assert _HEADER_COORDS.search(maria).groups() == (b"bin.000002", b"1003")
    assert _HEADER_COORDS.search(mysql).groups() == (b"binlog.000009", b"157")


def test_exit_codes():
    assert exit_code_for(ConfigError("x")) == 2
    assert exit_code_for(UsageError("x")) == 2
    assert exit_code_for(CorruptPart("x")) == 3
    assert exit_code_for(DataMismatch("x")) == 3
    assert exit_code_for(BackupFailed("x")) == 1
    assert exit_code_for(TargetNotEmpty("x")) == 1
    assert exit_code_for(RuntimeError("x")) == 1
