"""Splitting SQL into statements the way the mysql client does for mysqldump's output (pure logic)."""

from __future__ import annotations

import pymysql
import pytest

from backupd.errors import RestoreFailed
from restore.statements import SqlStatements, describe_error, has_sql

DUMP = b"/*M!999999\\- enable the sandbox mode */ \n" + b"""-- MariaDB dump 10.19
--
/*!40101 SET NAMES utf8mb4 */;
-- CHANGE MASTER TO MASTER_LOG_FILE='bin.000001', MASTER_LOG_POS=328;

--
-- Table structure for table `t`
--

DROP TABLE IF EXISTS `t`;
CREATE TABLE `t` (
  `a` int,
  `b` varchar(9) COMMENT 'x;'
) ENGINE=InnoDB;
LOCK TABLES `t` WRITE;
INSERT INTO `t` VALUES
(1,'semi;colon'),
(2,'line\\nbreak;');
UNLOCK TABLES;
DELIMITER ;;
/*!50003 CREATE*/ /*!50003 TRIGGER `trg` AFTER INSERT ON `t` FOR EACH ROW BEGIN
SET @x = 1;
SET @y = 2;
END */;;
DELIMITER ;
-- the end;
"""

EXPECTED = [
    b"/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19\n--\n/*!40101 SET NAMES utf8mb4 */",
    b"\n--\n-- Table structure for table `t`\n--\n\nDROP TABLE IF EXISTS `t`",
    b"CREATE TABLE `t` (\n  `a` int,\n  `b` varchar(9) COMMENT 'x;'\n) ENGINE=InnoDB",
    b"LOCK TABLES `t` WRITE",
    b"INSERT INTO `t` VALUES\n(1,'semi;colon'),\n(2,'line\\nbreak;')",
    b"UNLOCK TABLES",
    b"/*!50003 CREATE*/ /*!50003 TRIGGER `trg` AFTER INSERT ON `t` FOR EACH ROW BEGIN\nSET @x = 1;\nSET @y = 2;\nEND */",
]


@pytest.mark.parametrize("chunk", [1, 2, 5, 64, 10**6])
def test_statements_whatever_the_chunking(chunk):
    splitter = SqlStatements()
    statements: list[bytes] = []
    for i in range(0, len(DUMP), chunk):
        statements += splitter.feed(DUMP[i:i + chunk])
    statements += splitter.finish()
    assert statements == EXPECTED  # comment-only pieces (the coordinates, "the end;") are not sent
    assert splitter.delimiter == b";"


def test_a_last_statement_without_newline_or_delimiter_is_sent():
    splitter = SqlStatements()
    assert splitter.feed(b"SELECT 1;\nSELECT 2;") == [b"SELECT 1"]
    assert splitter.finish() == [b"SELECT 2"]


def test_a_delimiter_line_inside_a_statement_is_refused():
    splitter = SqlStatements()
    with pytest.raises(RestoreFailed, match="cut short by a DELIMITER line"):
        splitter.feed(b"INSERT INTO t VALUES\n(1)\nDELIMITER ;;\n")


def test_comment_lines_hold_no_sql_and_values_are_withheld_from_errors():
    assert not has_sql(b"--\n-- SET GLOBAL gtid_slave_pos='0-1-5'\n\n")
    assert has_sql(b"-- c\n/*!40101 SET NAMES utf8mb4 */")
    error = pymysql.err.IntegrityError(1062, "Duplicate entry 'alice@example.com' for key 'email'")
    assert describe_error(error) == (1062, "Duplicate entry (value withheld) for key 'email'")
