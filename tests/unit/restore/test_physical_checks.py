"""The pure checks of a physical restore: disk space and what a datadir holds."""

from __future__ import annotations

from restore.physical import space_problem, user_databases_in


def test_space_problem_names_the_shortfall():
    assert space_problem({"/restore": 100}, {"/restore": 100}) is None
    message = space_problem({"/restore": 3 * 1024**3, "/data": 10}, {"/restore": 1024**3, "/data": 99})
    assert message == "/restore has 1.0 GiB free, the restore needs 3.0 GiB there"


def test_user_databases_in_a_datadir(tmp_path):
    for name in ("mysql", "performance_schema", "sys", "#innodb_temp", "lost+found", "app", "edge"):
        (tmp_path / name).mkdir()
    (tmp_path / "ibdata1").write_bytes(b"")
    assert user_databases_in(tmp_path) == ["app", "edge"]
    assert user_databases_in(tmp_path / "missing") == []
