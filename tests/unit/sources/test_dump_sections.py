"""Cutting mysqldump's output into sections, and spreading tables over streams (pure logic)."""

from __future__ import annotations

import pytest

from backupd.errors import SourceError
from backupd.mysql.reference import Column, TableInfo
from backupd.sources.dump_sections import DataEnd, DataStart, DumpSplitter, SectionStart, data_line, structure_line
from backupd.sources.table_dump import assign_streams

PREAMBLE = b"/*M!999999\\- enable the sandbox mode */\n-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;\n"
TRAILER = b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\n-- Dump completed on 2026-12-05\n"


def table(name: str, rows: bytes, triggers: bytes = b"") -> bytes:
    return (b"\n--\n" + structure_line(name) + b"--\n\nCREATE TABLE `" + name.encode() + b"` (`a` int);\n"
            b"\n--\n" + data_line(name) + b"--\n\nLOCK TABLES `" + name.encode() + b"` WRITE;\n" + rows +
            b"UNLOCK TABLES;\n" + triggers)


TRIGGER = (b"DELIMITER ;;\n/*!50003 CREATE TRIGGER t_ai AFTER INSERT ON `a` FOR EACH ROW BEGIN\n"
           b"-- Table structure for table `b`\nUNLOCK TABLES;\nEND */;;\nDELIMITER ;\n")
DUMP = PREAMBLE + table("a", b"INSERT INTO `a` VALUES\n(1),\n(2);\n", TRIGGER) + table("b", b"") + TRAILER


def split(dump: bytes, tables: list[str], chunk: int, *, preamble: bool = True, boundary=structure_line) -> list:
    splitter = DumpSplitter("app", tables, preamble=preamble, label="shard 1", boundary=boundary)
    events: list = []
    for i in range(0, len(dump), chunk):
        events += splitter.feed(dump[i:i + chunk])
    events += splitter.finish()
    merged: list = []
    for event in events:
        if isinstance(event, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += event
        else:
            merged.append(event)
    return merged


@pytest.mark.parametrize("chunk", [1, 13, 4096, 10**6])
def test_sections_whatever_the_chunking(chunk):
    events = split(DUMP, ["a", "b"], chunk)
    kinds = [e if not isinstance(e, bytes) else "bytes" for e in events]
    assert kinds == [SectionStart("preamble"), "bytes", SectionStart("table", "app", "a"), "bytes", DataStart(),
                     "bytes", DataEnd(), "bytes", SectionStart("table", "app", "b"), "bytes", DataStart(), "bytes",
                     DataEnd()]
    assert events[1].startswith(PREAMBLE)
    assert events[3].startswith(structure_line("a")) and events[3].endswith(b"int);\n\n--\n")  # the structure
    assert events[5].startswith(data_line("a")) and events[5].endswith(b"UNLOCK TABLES;\n")  # the rows
    assert events[7] == TRIGGER + b"\n--\n"  # a trigger body's look-alike lines cut nothing
    assert b"".join(e for e in events if isinstance(e, bytes)) == DUMP[:DUMP.index(TRAILER)]  # the trailer dropped


def test_a_run_without_structure_starts_tables_at_their_data():
    dump = PREAMBLE + b"\n--\n" + data_line("a") + b"--\nLOCK TABLES `a` WRITE;\nREPLACE INTO `a` VALUES (1);\n" \
        b"UNLOCK TABLES;\n" + TRAILER
    events = split(dump, ["a"], 7, preamble=False, boundary=data_line)
    assert events[:2] == [SectionStart("table", "app", "a"), DataStart()] and events[-1] == DataEnd()
    assert events[2].startswith(data_line("a"))


def test_a_missing_or_cut_off_table_fails_the_backup():
    with pytest.raises(SourceError, match="no table app.b"):
        split(PREAMBLE + table("a", b""), ["a", "b"], 64)
    with pytest.raises(SourceError, match="ends inside the data of app.a"):
        split(DUMP[:DUMP.index(b"UNLOCK")], ["a"], 64)
    with pytest.raises(SourceError, match="no table app.b"):  # reordered: b found only where a was expected
        split(PREAMBLE + table("b", b"") + table("a", b"") + TRAILER, ["a", "b"], 64)


def info(name: str, float_column: bool = False, database: str = "app") -> TableInfo:
    return TableInfo(database, name, (Column("id", None, "int"), *([Column("f", None, "float")] if float_column else [])))


def test_tables_are_spread_largest_first_over_the_lightest_stream():
    tables = [info("t1"), info("t2"), info("t3"), info("t4"), info("f", float_column=True), info("x", database="edge")]
    sizes = {"app.t1": 100, "app.t2": 60, "app.t3": 50, "app.t4": 10, "app.f": 5, "edge.x": 1}
    plan = assign_streams(tables, sizes, 2)
    names = [[(database, [t.table for t in run]) for database, run in stream] for stream in plan]
    assert names == [[("app", ["t1", "t4"]), ("app", ["f"])],  # 100 + 10 + 5: the FLOAT table in a run of its own
                     [("app", ["t2", "t3"]), ("edge", ["x"])]]  # 60 + 50 + 1
    assert assign_streams(tables[:1], sizes, 4) == [[("app", [tables[0]])]]  # streams without a table are left out
