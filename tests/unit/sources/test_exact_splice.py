"""The splice of exactly written rows into mysqldump's output (pure logic)."""

from __future__ import annotations

import pytest

from backupd.errors import SourceError
from backupd.sources.exact_splice import ExactDataSplicer

CREATE_END = b"/*!40101 SET character_set_client = @saved_cs_client */;\n"


def table(name: str, data: bytes = b"") -> bytes:
    return (b"\n--\n-- Table structure for table `" + name + b"`\n--\n\nDROP TABLE IF EXISTS `" + name +
            b"`;\n/*!40101 SET @saved_cs_client     = @@character_set_client */;\nCREATE TABLE `" + name +
            b"` (\n  `f` float\n);\n" + CREATE_END + data)


DUMP = (b"-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;\nUSE `a`;\n" + table(b"t") + table(b"u", b"LOCK TABLES `u` WRITE;\n"
        b"INSERT INTO `u` VALUES (1);\nUNLOCK TABLES;\n") + b"USE `b`;\n" + table(b"t") +
        b"DELIMITER ;;\n/*!50003 CREATE TRIGGER x AFTER INSERT ON `t` FOR EACH ROW SET @a = 1 */;;\nDELIMITER ;\n"
        b"-- Dump completed on 2026-12-05\n")


def splice(chunk_size: int, tables=(("b", "t"),), dump: bytes = DUMP) -> bytes:
    splicer = ExactDataSplicer(tables, lambda d, t: [f"<rows of {d}.{t}>\n".encode()], label="shard 1")
    out = []
    for i in range(0, len(dump), chunk_size):
        out += splicer.feed(dump[i:i + chunk_size])
    out += splicer.finish()
    return b"".join(out)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10**6])
def test_the_rows_go_right_after_the_tables_create_statement_whatever_the_chunking(chunk_size):
    spliced = splice(chunk_size)
    position = spliced.index(b"<rows of b.t>\n")
    before, after = spliced[:position], spliced[position + len(b"<rows of b.t>\n"):]
    assert before + after == DUMP  # nothing else changed
    assert before.endswith(b"USE `b`;\n" + table(b"t"))  # the second `t`: the one in database b
    assert after.startswith(b"DELIMITER ;;")  # before its trigger
    assert spliced.count(b"<rows of") == 1


def test_two_tables_each_get_their_rows():
    spliced = splice(5, tables=(("a", "t"), ("b", "t")))
    assert spliced.index(b"<rows of a.t>") < spliced.index(b"`u`") < spliced.index(b"<rows of b.t>")


def test_a_table_mysqldump_never_wrote_fails_the_backup():
    with pytest.raises(SourceError, match=r"shard 1: mysqldump wrote no structure for a.t, b.gone"):
        splice(64, tables=(("b", "gone"), ("a", "t")), dump=DUMP.replace(b"USE `a`;\n" + table(b"t"), b"USE `a`;\n"))


def test_a_cut_off_create_statement_fails_the_backup():
    cut = DUMP[:DUMP.index(b"USE `b`;") + 60]
    with pytest.raises(SourceError, match="b.t"):
        splice(64, dump=cut)


def test_a_trigger_body_that_looks_like_a_table_is_not_spliced_into():
    body = (b"DELIMITER ;;\n/*!50003 CREATE TRIGGER x AFTER INSERT ON `t` FOR EACH ROW BEGIN\n"
            b"-- Table structure for table `u`\n" + CREATE_END + b"END */;;\nDELIMITER ;\n")
    dump = b"USE `a`;\n" + table(b"t") + body + table(b"u")
    spliced = splice(11, tables=(("a", "u"),), dump=dump)
    assert spliced.index(b"<rows of a.u>") > spliced.index(b"DELIMITER ;\n")  # after the real `u`, not the body
