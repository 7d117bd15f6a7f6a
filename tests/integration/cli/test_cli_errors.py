"""Bad input at the command line: one line naming the thing at fault, and the documented code."""

from __future__ import annotations

import pytest

from tests.integration.support import run, write_config

pytestmark = pytest.mark.integration


def error_line(stderr: str) -> str:
    """The single ``error:`` line among progress log lines."""
    lines = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, stderr
    return lines[0]


def one_error_line(stderr: str) -> str:
    """stderr must hold exactly one line, the error."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("body,key", [
    ('[stores.local]\ntype = "local"\npath = "s"\n[shards.1]\nuser = "root"\nport = "x"\n', "shards.1.port"),
    ('[stores.local]\ntype = "local"\npath = "s"\n[shards.1]\nuser = "root"\nbogus = 1\n', "shards.1.bogus"),
    ('[stores.local]\ntype = "local"\npath = "s"\n[targets.t]\nuser = "root"\nread_from = ["nope"]\n',
     "targets.t.read_from"),
    ('[stores.local]\ntype = "local"\n', "stores.local.path"),
])
@pytest.mark.parametrize("tool", ["backupd", "restore"])
def test_bad_config_is_one_line_exit_2(tmp_path, body, key, tool):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    args = ["--config", str(path), "list"] if tool == "backupd" else \
        ["--config", str(path), "--shard", "1", "--target", "t"]
    result = run(tool, *args)
    assert result.code == 2
    line = one_error_line(result.stderr)
    assert str(path) in line and f": {key}: " in line


def test_a_missing_secret_is_an_error_only_for_the_commands_that_need_it(tmp_path):
    """Passwords are read when first needed: listing backups does not need a shard's password,
    backing the shard up does, and the daemon reads every secret at start."""
    path = tmp_path / "c.toml"
    path.write_text('[stores.local]\ntype = "local"\npath = "s"\n'
                    '[shards.1]\nuser = "root"\nsocket = "/nonexistent.sock"\npassword_file = "missing"\n')
    assert run("backupd", "--config", str(path), "list").code == 0
    for args in (["backup", "--shard", "1"], ["run", "--once"]):
        result = run("backupd", "--config", str(path), *args)
        assert result.code == 2, (args, result.stderr)
        line = one_error_line(result.stderr)
        assert str(path) in line and ": shards.1.password_file: cannot read" in line, line


def test_config_from_environment_variable(tmp_path):
    path = tmp_path / "env.toml"
    path.write_text('[stores.local]\ntype = "local"\npath = "s"\n[shards.1]\nuser = "root"\nport = 0\n')
    result = run("backupd", "list", env={"BACKUPD_CONFIG": str(path)})
    assert result.code == 2 and str(path) in result.stderr


def test_unknown_shard_and_target(tmp_path):
    config = write_config(tmp_path / "c.toml", shards={"1": {"socket": "/nonexistent.sock", "user": "root"}},
                          targets={"dr": {"socket": "/nonexistent.sock", "user": "root", "read_from": ["local"]}})
    result = run("backupd", "--config", str(config), "backup", "--shard", "9")
    assert result.code == 2 and "unknown shard '9'" in one_error_line(result.stderr)
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "mars")
    assert result.code == 2 and "unknown target 'mars'" in one_error_line(result.stderr)
    result = run("restore", "--config", str(config), "--shard", "1", "--target", "dr", "--at", "yesterday-ish")
    assert result.code == 2 and "--at" in one_error_line(result.stderr)


def test_unreachable_shard_names_the_shard(tmp_path):
    config = write_config(tmp_path / "c.toml", shards={"5": {"socket": str(tmp_path / "none.sock"), "user": "root"}})
    result = run("backupd", "--config", str(config), "backup", "--shard", "5")
    assert result.code == 1
    assert "shard 5: cannot connect" in error_line(result.stderr)
    assert not list(tmp_path.glob("store/**/*.zst"))


def test_help_documents_exit_codes():
    for tool in ("backupd", "restore"):
        result = run(tool, "--help")
        assert result.code == 0
        assert "3 verification failed" in " ".join(result.stdout.split())


def test_prune_and_run_name_what_is_wrong(tmp_path):
    config = write_config(tmp_path / "c.toml", shards={"5": {"socket": str(tmp_path / "none.sock"), "user": "root"}})
    result = run("backupd", "--config", str(config), "prune", "--shard", "9")
    assert result.code == 2 and "unknown shard '9'" in one_error_line(result.stderr)
    result = run("backupd", "--config", str(config), "backup", "--shard", "5", "--kind", "weekly")
    assert result.code == 2 and "--kind" in result.stderr
    once = run("backupd", "--config", str(config), "run", "--once")
    assert once.code == 1  # the shard's backup failed: said, and the exit code says so
    assert "shard 5: cannot connect" in error_line(once.stderr)
    assert "shard 5: full backup failed" in once.stderr
