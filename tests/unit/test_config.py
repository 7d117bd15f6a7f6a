"""Configuration validation: every bad input is one line naming the file, the key and the problem."""

import os
from pathlib import Path

import pytest

from backupd.config import load_config, resolve_config_path
from backupd.errors import ConfigError, UsageError

GOOD = """
[backupd]
part_size = "8MiB"
compression_level = 5

[stores.local]
type = "local"
path = "store"

[shards.7]
host = "127.0.0.1"
port = 3307
user = "backup"
password_env = "TEST_SHARD_PW"
databases = ["app"]

[targets.us-west]
socket = "run/mysqld.sock"
user = "restore"
password_file = "pw.txt"
read_from = ["local"]
"""


@pytest.fixture
def write(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_SHARD_PW", "s3cret")
    (tmp_path / "pw.txt").write_text("target-pw\n")
    (tmp_path / "pw.txt").chmod(0o600)

    def _write(text: str) -> Path:
        path = tmp_path / "backupd.toml"
        path.write_text(text)
        return path
    return _write


def test_good_config_resolves_everything(write, tmp_path):
    config = load_config(write(GOOD))
    assert config.settings.part_size == 8 * 1024**2
    assert config.settings.compression_level == 5
    assert config.stores["local"].path == str(tmp_path / "store")
    shard = config.shard("7")
    assert shard.port == 3307 and shard.password.reveal() == "s3cret"
    assert "s3cret" not in repr(shard) and "s3cret" not in repr(shard.password)
    target = config.target("us-west")
    assert target.password.reveal() == "target-pw"  # trailing newline ignored
    assert target.socket == str(tmp_path / "run/mysqld.sock")
    assert config.shard_stores("7") == ["local"]


def _error(write, text: str) -> str:
    """The one-line error of a bad config, secrets included (read as the daemon reads them)."""
    with pytest.raises(ConfigError) as info:
        load_config(write(text)).check_secrets()
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("edit,key,problem", [
    (lambda t: t.replace('port = 3307', 'port = "abc"'), "shards.7.port", "valid integer"),
    (lambda t: t.replace('port = 3307', 'port = 70000'), "shards.7.port", "less than or equal"),
    (lambda t: t.replace('port = 3307', 'port = 3307\ncolour = "red"'), "shards.7.colour", "unknown key"),
    (lambda t: t.replace('user = "backup"\n', ''), "shards.7.user", "missing required key"),
    (lambda t: t.replace('read_from = ["local"]', 'read_from = ["s3-east"]'), "targets.us-west.read_from",
     "no store named 's3-east'"),
    (lambda t: t.replace('"8MiB"', '"8 parsecs"'), "backupd.part_size", "not a size"),
    (lambda t: t.replace('pw.txt', 'missing.txt'), "targets.us-west.password_file", "cannot read"),
    (lambda t: t.replace('TEST_SHARD_PW', 'NOT_SET_ANYWHERE_X'), "shards.7.password_env", "is not set"),
    (lambda t: t.replace('type = "local"', 'type = "ftp"'), "stores.local.type", "unknown store type"),
    (lambda t: t + '\n[metricz]\nx = 1\n', "metricz", "unknown section"),
    (lambda t: t.replace('databases = ["app"]', 'databases = "app"'), "shards.7.databases", "valid list"),
    (lambda t: t + '\n[schedule]\nfull_every = "often"\n', "schedule.full_every", "not a duration"),
    (lambda t: t + '\n[schedule]\nconcurrency = 0\n', "schedule.concurrency", "greater than or equal to 1"),
    (lambda t: t + '\n[schedule]\nlock_store = "s3"\n', "schedule.lock_store", "no store named 's3'"),
    (lambda t: t + '\n[schedule.shards.9]\nfull_every = "4h"\n', "schedule.shards.9", "no shard named '9'"),
    (lambda t: t + '\n[schedule.shards.7]\nfull_evry = "4h"\n', "schedule.shards.7.full_evry", "unknown key"),
    (lambda t: t + '\n[retention]\nfull_days = -1\n', "retention.full_days", "greater than or equal to 0"),
    (lambda t: t + '\n[retention]\nkeep_hourly = 3\n', "retention.keep_hourly", "unknown key"),
    (lambda t: t.replace('[backupd]', '[backupd]\nincremental_columns = ["updated_at"]'),
     "backupd.incremental_columns", "valid dictionary"),
    (lambda t: t.replace('databases = ["app"]', 'method = "physical"'), "shards.7.datadir",
     "copies the server's datadir"),
    (lambda t: t.replace('databases = ["app"]', 'method = "rsync"'), "shards.7.method", "input should be"),
    (lambda t: t.replace('databases = ["app"]', 'replication_user = "repl"'), "shards.7.replication_password_env",
     "together"),
    (lambda t: t.replace('read_from = ["local"]', 'read_from = ["local"]\nstart_command = ["x"]'),
     "targets.us-west.stop_command", "together"),
    (lambda t: t.replace('read_from = ["local"]', 'read_from = ["local"]\nsystemd_unit = "mariadb"\n'
                         'start_command = ["x"]\nstop_command = ["y"]'), "targets.us-west.systemd_unit", "not both"),
    (lambda t: t.replace('read_from = ["local"]', 'read_from = ["local"]\nstart_command = "systemctl start db"'),
     "targets.us-west.start_command", "valid list"),
])
def test_bad_config_names_file_key_and_problem(write, edit, key, problem):
    text = edit(GOOD)
    assert text != GOOD
    message = _error(write, text)
    assert message.startswith(str(write(text)))
    assert f": {key}: " in message
    assert problem in message


def test_schedule_retention_and_incremental_columns(write):
    config = load_config(write(GOOD))
    assert config.schedule.for_shard("7").full_every == 8 * 3600
    assert config.schedule.for_shard("7").incremental_window == 24 * 3600
    assert config.schedule.concurrency == 2 and config.schedule.shutdown_grace == 300
    assert config.retention.full_days == 7 and config.retention.keep_daily == 0
    assert config.lock_stores("7") == ["local"]
    assert dict(config.incremental_columns("7")) == {"*": "updated_at"}
    config = load_config(write(GOOD.replace("[backupd]", '[backupd]\nincremental_columns = {"app.*" = "updated_at", "*" = ""}')
                               + '\n[schedule]\nfull_every = "6h"\nincremental_every = 0\n'
                               + '[schedule.shards.7]\nincremental_every = "30m"\nenabled = false\n'
                               + '[retention]\nfull_days = 3\nkeep_weekly = 4\n'))
    schedule = config.schedule.for_shard("7")
    assert (schedule.full_every, schedule.incremental_every, schedule.enabled) == (6 * 3600, 1800, False)
    assert list(config.incremental_columns("7")) == ["app.*", "*"]  # file order: first match wins
    assert (config.retention.full_days, config.retention.keep_weekly) == (3, 4)


def test_unreadable_password_file(write, tmp_path):
    if os.geteuid() == 0:
        # root reads any file: make the path a directory instead
        (tmp_path / "pwdir").mkdir()
        text = GOOD.replace("pw.txt", "pwdir")
    else:
        (tmp_path / "pw.txt").chmod(0)
        text = GOOD
    message = _error(write, text)
    assert "targets.us-west.password_file: cannot read" in message


def test_secret_files_others_may_read_are_refused(write, tmp_path):
    """Like ssh with a private key: a password or credentials file open to group or others is a
    config error naming the file and the fix."""
    (tmp_path / "pw.txt").chmod(0o640)
    message = _error(write, GOOD)
    assert f"targets.us-west.password_file: {tmp_path / 'pw.txt'} is readable or writable by group or others " \
           "(mode 0640): chmod 600" in message


def test_both_password_sources_rejected(write):
    message = _error(write, GOOD.replace('password_env = "TEST_SHARD_PW"',
                                         'password_env = "TEST_SHARD_PW"\npassword_file = "pw.txt"'))
    assert "shards.7.password_file: give password_env or password_file, not both" in message


def test_invalid_toml_and_missing_file(write, tmp_path):
    assert "not valid TOML" in _error(write, "[shards\n")
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.toml")


def test_unknown_shard_and_target_are_usage_errors(write):
    config = load_config(write(GOOD))
    with pytest.raises(UsageError, match="unknown shard '9' \\(configured shards: 7\\)"):
        config.shard("9")
    with pytest.raises(UsageError, match="unknown target 'mars'"):
        config.target("mars")


def test_config_path_resolution(monkeypatch):
    monkeypatch.delenv("BACKUPD_CONFIG", raising=False)
    assert resolve_config_path(None) == Path("config/backupd.toml")
    monkeypatch.setenv("BACKUPD_CONFIG", "/etc/backupd.toml")
    assert resolve_config_path(None) == Path("/etc/backupd.toml")
    assert resolve_config_path("x.toml") == Path("x.toml")


def test_shipped_configs_are_valid(tmp_path, monkeypatch):
    repo = Path(__file__).resolve().parents[2]
    load_config(repo / "config" / "backupd.toml")
    monkeypatch.setenv("BACKUPD_SHARD_PASSWORD", "x")
    monkeypatch.setenv("BACKUPD_RESTORE_PASSWORD", "y")
    example = (repo / "config" / "example.toml").read_text()
    (tmp_path / "pw").write_text("z\n")
    (tmp_path / "pw").chmod(0o600)
    copy = tmp_path / "example.toml"
    (tmp_path / "rackspace.ini").write_text("[rackspace_cloud]\nusername = acme\napi_key = k3y\n")
    (tmp_path / "rackspace.ini").chmod(0o600)
    copy.write_text(example.replace("/etc/backupd/shard.password", str(tmp_path / "pw"))
                    .replace("/etc/backupd/rackspace.ini", str(tmp_path / "rackspace.ini")))
    config = load_config(copy)
    assert set(config.shards) == {str(n) for n in range(1, 17)}
    assert set(config.targets) == {"us-east", "rackspace-dfw", "us-west"}
    assert config.shard("7").host == "db-shard-7.internal" and config.shard("15").host == "db-shard-15b.internal"
    assert config.shard("16").password.reveal() == "z" and config.shard("3").password.reveal() == "x"
    assert config.shard("7").backup_from == "replica" and \
        config.shard("7").replicas[0].host == "db-shard-7-replica.internal"
    assert config.target("us-east").for_shard("7").host == "db-restore-7.us-east.internal"
    assert config.target("us-west").systemd_unit == "mariadb"
    assert config.stores["rackspace-dfw"].credentials[0] == "acme"
    assert config.shard_stores("1") == ["s3-east", "rackspace-dfw"]


STORES = """
[stores.s3]
type = "s3"
bucket = "b"
endpoint_url = "http://127.0.0.1:9000"
access_key_env = "TEST_S3_KEY"
secret_key_env = "TEST_S3_SECRET"
checksum_mode = "when_required"

[stores.dfw]
type = "cloudfiles"
region = "DFW"
container = "backups"
credentials_file = "rax.ini"

[stores.lab]
type = "swift"
auth_url = "http://127.0.0.1:8080/auth/v1.0"
user = "test:tester"
key_env = "TEST_SWIFT_KEY"
container = "backups"
"""


@pytest.fixture
def cloud_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_S3_KEY", "AK")
    monkeypatch.setenv("TEST_S3_SECRET", "SK")
    monkeypatch.setenv("TEST_SWIFT_KEY", "testing")
    (tmp_path / "rax.ini").write_text("[rackspace_cloud]\nusername = rackuser\napi_key = rack-key\n")
    (tmp_path / "rax.ini").chmod(0o600)


def test_cloud_stores_resolve_credentials(write, cloud_env):
    config = load_config(write(STORES))
    access, secret = config.stores["s3"].credentials
    assert (access.reveal(), secret.reveal()) == ("AK", "SK")
    user, key = config.stores["dfw"].credentials
    assert (user, key.reveal()) == ("rackuser", "rack-key")
    assert config.stores["lab"].key.reveal() == "testing"
    assert "rack-key" not in repr(config.stores["dfw"]) and "SK" not in repr(config.stores["s3"])


@pytest.mark.parametrize("edit,key,problem", [
    (lambda t: t.replace('secret_key_env = "TEST_S3_SECRET"\n', ''), "stores.s3.secret_key_env", "both"),
    (lambda t: t.replace('TEST_SWIFT_KEY', 'UNSET_SWIFT_KEY_X'), "stores.lab.key_env", "is not set"),
    (lambda t: t.replace('rax.ini', 'nope.ini'), "stores.dfw.credentials_file", "cannot read"),
    (lambda t: t.replace('region = "DFW"', 'region = "MARS"'), "stores.dfw.region", "dfw"),
    (lambda t: t.replace('credentials_file = "rax.ini"', 'username = "u"'), "stores.dfw.api_key_env", "missing"),
    (lambda t: t.replace('checksum_mode = "when_required"', 'checksum_mode = "sometimes"'),
     "stores.s3.checksum_mode", "when_required"),
    (lambda t: t.replace('bucket = "b"\n', ''), "stores.s3.bucket", "missing required key"),
])
def test_cloud_store_errors(write, cloud_env, edit, key, problem):
    message = _error(write, edit(STORES))
    assert f": {key}: " in message and problem.lower() in message.lower()


def test_a_credentials_file_others_may_read_is_refused(write, cloud_env, tmp_path):
    (tmp_path / "rax.ini").chmod(0o604)
    assert f"stores.dfw.credentials_file: {tmp_path / 'rax.ini'} is readable or writable by group or others " \
           "(mode 0604): chmod 600" in _error(write, STORES)


def test_credentials_file_without_section(write, cloud_env, tmp_path):
    (tmp_path / "rax.ini").write_text("[other]\nx = 1\n")
    (tmp_path / "rax.ini").chmod(0o600)
    assert "needs a [rackspace_cloud] section" in _error(write, STORES)


def test_physical_shard_and_target_keys(write, tmp_path):
    text = GOOD.replace('databases = ["app"]', 'method = "mariabackup"\ndatadir = "data/mysql"\n'
                        'replication_user = "repl"\nreplication_password_env = "NOT_SET_ON_BACKUP_HOSTS"')
    text = text.replace('read_from = ["local"]', 'read_from = ["local"]\ndatadir = "/srv/mysql"\n'
                        'restore_dir = "scratch"\nsystemd_unit = "mariadb"')
    config = load_config(write(text))  # the replication password is only read by restore --replica-of
    shard, target = config.shard("7"), config.target("us-west")
    assert shard.is_physical and shard.datadir == str(tmp_path / "data/mysql")
    assert target.datadir == "/srv/mysql" and target.restore_dir == str(tmp_path / "scratch")
    assert target.systemd_unit == "mariadb" and target.start_timeout == 600


def test_relative_start_stop_programs_resolve_against_the_config(write, tmp_path):
    text = GOOD.replace('read_from = ["local"]', 'read_from = ["local"]\nstart_command = ["../bin/db", "start"]\n'
                        'stop_command = ["systemctl", "stop", "db"]')
    target = load_config(write(text)).target("us-west")
    assert target.start_command == [str(tmp_path.parent / "bin" / "db"), "start"]
    assert target.stop_command == ["systemctl", "stop", "db"]  # a program on PATH stays as it is


def test_secrets_are_read_only_when_needed(write, monkeypatch):
    """Restoring shard 7 must not need shard 8's password, nor a store's key it does not read."""
    text = GOOD + '\n[shards.8]\nport = 3308\nuser = "backup"\npassword_env = "SHARD_8_PW_NOT_SET"\n' \
        '[stores.far]\ntype = "swift"\nauth_url = "http://127.0.0.1:1/auth/v1.0"\nuser = "u"\n' \
        'key_env = "FAR_KEY_NOT_SET"\ncontainer = "c"\n'
    config = load_config(write(text))  # loads: nothing unneeded is read
    assert config.shard("7").password.reveal() == "s3cret"
    with pytest.raises(ConfigError, match=r": shards\.8\.password_env: environment variable SHARD_8_PW_NOT_SET is not set"):
        config.shard("8").password  # noqa: B018
    with pytest.raises(ConfigError, match=r": stores\.far\.key_env: environment variable FAR_KEY_NOT_SET"):
        config.stores["far"].key  # noqa: B018
    with pytest.raises(ConfigError, match="shards.8.password_env"):
        config.check_secrets()  # what the daemon does at start
    monkeypatch.setenv("SHARD_8_PW_NOT_SET", "late")
    assert config.shard("8").password.reveal() == "late"  # read when first needed, then kept


def test_encryption_section_names_its_bad_keys(write, tmp_path, monkeypatch):
    from backupd.repo.keys import Identity, identities_of, recipients_of

    owner = Identity.generate()
    key_file = tmp_path / "restore.key"
    key_file.write_text(f"# test\n{owner.secret_text}\n")
    key_file.chmod(0o600)
    config = load_config(write(GOOD + f'[encryption]\nrecipients = ["{owner.recipient.text}"]\n'
                                      'private_key_file = "restore.key"\n'))
    assert config.encryption.enabled and [r.key_id for r in recipients_of(config.encryption)] == [owner.key_id]
    assert [i.key_id for i in identities_of(config.encryption)] == [owner.key_id]
    assert owner.secret_text not in repr(config.encryption)
    assert "encryption.recipients.1: string should match pattern" in \
        _error(write, GOOD + f'[encryption]\nrecipients = ["{owner.recipient.text}", "ssh-ed25519 AAAA"]\n').lower()
    assert "encryption.private_key_env: give private_key_file or private_key_env, not both" in \
        _error(write, GOOD + '[encryption]\nprivate_key_file = "restore.key"\nprivate_key_env = "K"\n')
    key_file.chmod(0o644)
    config = load_config(write(GOOD + '[encryption]\nprivate_key_file = "restore.key"\n'))
    with pytest.raises(ConfigError, match=r"encryption.private_key_file: .*restore.key is readable .* chmod 600"):
        identities_of(config.encryption)
    monkeypatch.setenv("TEST_RESTORE_KEY", "not a key")
    config = load_config(write(GOOD + '[encryption]\nprivate_key_env = "TEST_RESTORE_KEY"\n'))
    with pytest.raises(UsageError, match=r"encryption.private_key_env \(TEST_RESTORE_KEY\): line 1 is not"):
        identities_of(config.encryption)


FLEET = """
[stores.local]
type = "local"
path = "store"

[shard_defaults]
user = "backup"
password_env = "TEST_SHARD_PW"
host = "db-{shard}.internal"
databases = ["app"]

[target_defaults]
user = "restore"
read_from = ["local"]
""" + "".join(f"\n[shards.{n}]\nport = {3300 + n}\n" for n in range(1, 17)) + """
[targets.us-west]
host = "us-west-{shard}.internal"
"""


def test_a_sixteen_shard_fleet_is_sixteen_short_blocks_and_errors_name_their_origin(write):
    config = load_config(write(FLEET))
    assert sorted(config.shards, key=int) == [str(n) for n in range(1, 17)]
    seven = config.shard("7")
    assert (seven.host, seven.port, seven.user, seven.databases) == ("db-7.internal", 3307, "backup", ["app"])
    assert seven.password.reveal() == "s3cret"
    assert config.target("us-west").for_shard("7").host == "us-west-7.internal"
    assert config.target("us-west").user == "restore"
    assert _error(write, FLEET.replace("port = 3309", "port = \"nine\"")).endswith(
        ": shards.9.port: input should be a valid integer (got 'nine')")
    assert _error(write, FLEET.replace("port = 3309", "prot = 3309")).endswith(": shards.9.prot: unknown key")
    assert ": shard_defaults.databases (inherited by shards.1): input should be a valid list" in \
        _error(write, FLEET.replace('databases = ["app"]', 'databases = "app"'))
    assert _error(write, FLEET.replace('databases = ["app"]', 'databses = ["app"]')).endswith(
        ": shard_defaults.databses: unknown key")
    assert _error(write, FLEET.replace('read_from = ["local"]', 'read_from = ["nowhere"]')).endswith(
        ": targets.us-west.read_from: no store named 'nowhere' (configured stores: local)")


def test_a_shard_backed_up_from_replicas_names_its_bad_keys(write):
    replica = GOOD.replace('[shards.7]\nhost = "127.0.0.1"\nport = 3307\n',
                           '[shards.7]\nprimary = {host = "10.0.0.7", port = 3307}\nbackup_from = "replica"\n'
                           'replicas = [{host = "10.0.1.7"}, {socket = "run/replica.sock"}]\n'
                           'max_lag = "2m"\nheartbeat_table = "hb.heartbeat"\n')
    shard = load_config(write(replica)).shard("7")
    assert (shard.host, shard.port, shard.max_lag, shard.lag_policy) == ("10.0.0.7", 3307, 120.0, "refuse")
    assert shard.replicas[0].describe() == "10.0.1.7:3306" and shard.replicas[1].socket.endswith("run/replica.sock")
    on = shard.on(shard.replicas[0])
    assert (on.host, on.user, on.password.reveal()) == ("10.0.1.7", "backup", "s3cret")
    assert _error(write, replica.replace('replicas = [{host = "10.0.1.7"}, {socket = "run/replica.sock"}]\n', "")
                  ).endswith(": shards.7.replicas: missing required key (backup_from = \"replica\" backs up from "
                             "the first healthy one of them)")
    physical = replica.replace('max_lag = "2m"', 'max_lag = "2m"\nmethod = "physical"')
    assert _error(write, physical).endswith(": shards.7.replicas[0].datadir: missing required key (method = "
                                            "'physical' copies the replica's datadir, so backups run on its host)")
    physical = physical.replace('{host = "10.0.1.7"}, {socket = "run/replica.sock"}',
                                '{host = "10.0.1.7", datadir = "d1"}, {socket = "run/replica.sock", datadir = "d2"}')
    on = load_config(write(physical)).shard("7")
    assert on.datadir is None and on.on(on.replicas[1]).datadir.endswith("/d2")  # the primary's is not needed
    assert _error(write, physical.replace("heartbeat_table", "safe_slave_backup = true\n#")).endswith(
        ": shards.7.safe_slave_backup: needs heartbeat_table: the backup tool stops the replica's SQL thread, so "
        "its lag cannot be read at the snapshot")
    assert _error(write, physical.replace('backup_from = "replica"', 'fallback_to_primary = true')
                  ).endswith(": shards.7.datadir: missing required key (method = 'physical' copies the server's "
                             "datadir, so backups run on its host)")
    assert _error(write, GOOD.replace('port = 3307\n', 'port = 3307\nbinlogs_from = "replica"\n', 1)).endswith(
        ": shards.7.replicas: missing required key (binlogs_from = \"replica\" archives the binlog of the first of "
        "them that has log_slave_updates)")
    assert _error(write, replica.replace('primary = {host = "10.0.0.7", port = 3307}',
                                         'primary = {host = "10.0.0.7"}\nport = 1')).endswith(
        ": shards.7.port: give the primary's endpoint once: in primary = {...} or here")
    assert ": shards.7.heartbeat_table: string should match pattern" in \
        _error(write, replica.replace('"hb.heartbeat"', '"heartbeat"'))


def test_a_replicas_status_says_why_it_is_unfit():
    from backupd.mysql.replication import ReplicaStatus

    healthy = ReplicaStatus(io_running=True, sql_running=True, lag=3.0, primary_file="bin.000004",
                            primary_pos=1234, primary_server_id=1, error=None)
    assert healthy.problem(300) is None
    assert healthy.problem(2) == "it lags 3s behind the primary (max_lag 2s)"
    stopped = ReplicaStatus(io_running=True, sql_running=False, lag=None, primary_file="bin.000004",
                            primary_pos=1234, primary_server_id=1, error="Duplicate entry '7' for key 'PRIMARY'")
    assert stopped.problem(300) == "replication is stopped (SQL thread: Duplicate entry '7' for key 'PRIMARY')"
    assert ReplicaStatus(io_running=False, sql_running=True, lag=None, primary_file=None, primary_pos=None,
                         primary_server_id=None, error=None).problem(300) == "replication is stopped (IO thread)"
