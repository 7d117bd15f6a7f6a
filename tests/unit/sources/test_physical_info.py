"""What a physical backup tool recorded about its copy (``--extra-lsndir`` files)."""

from __future__ import annotations

import pytest

from backupd.errors import SourceError
from backupd.sources.physical import read_backup_info

INFO = """uuid = b2714c0e
tool_name = mariabackup
tool_version = 10.11.19-MariaDB
server_version = 10.11.19-MariaDB-0+deb12u1-log
binlog_pos = filename 'bin.000004', position '8822', GTID of the last change '0-1-17,1-5-3'
"""
CHECKPOINTS = "backup_type = incremental\nfrom_lsn = 44404\nto_lsn = 2670202\nlast_lsn = 2670202\n"


@pytest.mark.parametrize("prefix", ["xtrabackup_", "mariadb_backup_"])
def test_backup_info_from_either_file_name(tmp_path, prefix):
    (tmp_path / f"{prefix}checkpoints").write_text(CHECKPOINTS)
    (tmp_path / f"{prefix}info").write_text(INFO)
    info = read_backup_info(tmp_path, label="shard 7")
    assert (info.from_lsn, info.to_lsn) == (44404, 2670202)
    assert info.coordinates.binlog_file == "bin.000004" and info.coordinates.binlog_pos == 8822
    assert info.coordinates.gtid == "0-1-17,1-5-3" and info.tool_version == "10.11.19-MariaDB"


def test_backup_info_without_binlog_or_files_is_an_error(tmp_path):
    with pytest.raises(SourceError, match="no checkpoints file"):
        read_backup_info(tmp_path, label="shard 7")
    (tmp_path / "xtrabackup_checkpoints").write_text(CHECKPOINTS)
    (tmp_path / "xtrabackup_info").write_text(INFO.replace("binlog_pos", "no_binlog"))
    with pytest.raises(SourceError, match="log_bin"):
        read_backup_info(tmp_path, label="shard 7")
