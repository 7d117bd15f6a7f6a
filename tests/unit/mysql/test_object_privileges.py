"""Which privileges a logical backup's account lacks to see every trigger and routine
(``backupd.mysql.object_privileges``): the server hides such objects instead of refusing."""

from __future__ import annotations

from backupd.mysql.object_privileges import _like, missing_privileges
from backupd.repo.model import ServerInfo

MARIADB = ServerInfo(vendor="mariadb", version="10.11.19-MariaDB")


def test_grant_patterns_match_like_sql_does():
    assert _like("app", "app") and not _like("app", "apps")
    assert _like("app\\_%", "app_7") and not _like("app\\_%", "appx7")
    assert _like("ap_", "apx") and _like("%", "anything")


def test_what_is_missing_is_named_per_database():
    everything = missing_privileges(MARIADB, ["app"], set(), [("app", "SELECT")], set())
    assert everything == ["TRIGGER on `app` (its triggers would be left out)",
                          "SELECT on `mysql`.`proc` for `app` (its procedures and functions would be left out)"]
    assert missing_privileges(MARIADB, ["app", "edge"], set(), [("app", "TRIGGER"), ("edge", "TRIGGER")],
                              {("mysql", "proc", "SELECT")}) == []
    assert missing_privileges(MARIADB, ["app"], {"SELECT", "TRIGGER"}, [], set()) == []  # global grants
    assert missing_privileges(MARIADB, ["app_1"], set(), [("app\\_%", "TRIGGER")], {("mysql", "proc", "SELECT")}) == []
    newer = ServerInfo(vendor="mariadb", version="11.4.2-MariaDB")
    assert missing_privileges(newer, ["app"], {"TRIGGER"}, [], {("mysql", "proc", "SELECT")}) == [
        "SHOW CREATE ROUTINE for `app` (its procedures and functions would be left out)"]
    mysql = ServerInfo(vendor="mysql", version="8.0.36")
    assert missing_privileges(mysql, ["app"], {"TRIGGER", "SHOW_ROUTINE"}, [], set()) == []
