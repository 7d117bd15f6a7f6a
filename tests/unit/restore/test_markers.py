import pytest

from restore.markers import LoadMarkers, parse_marker

DUMP = b"""-- MariaDB dump
/*!40101 SET NAMES utf8mb4 */;
USE `edge`;
CREATE TABLE `a` (id int);
LOCK TABLES `a` WRITE;
INSERT INTO `a` VALUES (1),(2);
UNLOCK TABLES;
LOCK TABLES `we``ird` WRITE;
UNLOCK TABLES;
USE `app`;
LOCK TABLES `b` WRITE;
INSERT INTO `b` VALUES ('UNLOCK TABLES;\\nLOCK TABLES `x` WRITE;\\n');
UNLOCK TABLES;
-- Dump completed"""


@pytest.mark.parametrize("size", [1, 2, 5, 13, 64, 10_000])
def test_markers_follow_each_table_whatever_the_chunking(size):
    markers = LoadMarkers()
    out = b""
    for i in range(0, len(DUMP), size):
        out += b"".join(markers.feed(DUMP[i:i + size]))
    out += b"".join(markers.flush())
    assert markers.tables == {1: ("edge", "a"), 2: ("edge", "we`ird"), 3: ("app", "b")}
    for n in (1, 2, 3):
        assert out.count(b"SELECT 'backupd-loaded:%d';\n" % n) == 1
    stripped = out
    for n in (1, 2, 3):
        stripped = stripped.replace(b"SELECT 'backupd-loaded:%d';\n" % n, b"")
    assert stripped == DUMP  # nothing else changed
    assert out.index(b"backupd-loaded:1") > out.index(b"INSERT INTO `a`")
    assert out.index(b"backupd-loaded:3") > out.index(b"INSERT INTO `b`")


def test_parse_marker():
    assert parse_marker(b"backupd-loaded:17\n") == 17
    assert parse_marker(b"something else\n") is None
    assert parse_marker(b"backupd-loaded:x\n") is None
