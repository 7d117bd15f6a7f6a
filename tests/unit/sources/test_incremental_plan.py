"""How an incremental carries each table, and its window (pure)."""

from datetime import timedelta

from backupd.mysql.reference import Column, TableInfo
from backupd.sources.incremental import LONG_TRANSACTION_MARGIN, change_column_for, plan_tables, window_start
from tests.unit.manifests import NOW, full

RULES = {"legacy.*": "modified", "scratch.*": "", "*": "updated_at"}


def table(db, name, *, columns=(("id", "bigint"), ("updated_at", "datetime")), pk=("id",), schema="s1"):
    return TableInfo(db, name, tuple(Column(c, None, t) for c, t in columns), tuple(pk), schema)


def test_change_column_first_matching_pattern_wins():
    assert change_column_for("app.bucket_0001", RULES) == "updated_at"
    assert change_column_for("legacy.orders", RULES) == "modified"
    assert change_column_for("scratch.tmp", RULES) == ""
    assert change_column_for("app.t", {"other.*": "x"}) == ""


def test_plan_tables_modes_and_reasons():
    base = full(timedelta(0), tables=[("app", "t_ok", "s1"), ("app", "t_changed", "s0"),
                                      ("app", "t_nopk", "s1"), ("app", "t_text", "s1")])
    tables = [
        table("app", "t_ok"),
        table("app", "t_changed"),                       # definition differs from the base
        table("app", "t_new"),                           # not in the base
        table("app", "t_nopk", pk=()),
        table("app", "t_text", columns=(("id", "int"), ("updated_at", "varchar"))),
        table("app", "t_nocol", columns=(("id", "int"),)),
        table("scratch", "t", ),
    ]
    plan = {c.name: c for c in plan_tables(tables, base, RULES)}
    assert plan["app.t_ok"].mode == "changed" and plan["app.t_ok"].column == "updated_at"
    reasons = {name: c.reason for name, c in plan.items() if c.mode == "whole"}
    assert reasons == {
        "app.t_changed": "definition changed since the base full",
        "app.t_new": "new since the base full",
        "app.t_nopk": "no primary key",
        "app.t_text": "column updated_at is VARCHAR, not DATETIME/TIMESTAMP",
        "app.t_nocol": "no column updated_at",
        "scratch.t": "no change column configured",
    }


def test_window_reaches_back_to_an_old_base():
    base = full(timedelta(0))
    assert window_start(NOW + timedelta(hours=9), timedelta(hours=24), base) == NOW - timedelta(hours=15)
    late = NOW + timedelta(days=3)
    assert window_start(late, timedelta(hours=24), base) == NOW - LONG_TRANSACTION_MARGIN
