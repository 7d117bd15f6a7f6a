"""Both digest algorithms against a real server: equal data verifies, one changed byte does not."""

from __future__ import annotations

import pytest

from backupd.config import EndpointConfig
from backupd.mysql.connection import connect
from backupd.mysql.reference import CRC_SUM64, CRC_SUM64_EXACT, MD5_SUM64, MD5_SUM64_EXACT, compute_reference
from restore.verify import TableVerifier

pytestmark = pytest.mark.integration


@pytest.fixture
def server(seeded_shard):
    return seeded_shard


def _endpoint(server) -> EndpointConfig:
    return EndpointConfig(socket=str(server.socket), user="root")


@pytest.mark.parametrize("algorithm", [MD5_SUM64, CRC_SUM64, MD5_SUM64_EXACT, CRC_SUM64_EXACT, None])
def test_digest_algorithms_verify_and_catch_a_changed_byte(server, algorithm):
    conn = connect(_endpoint(server), label="source")
    try:
        reference = compute_reference([conn], ["app", "edge"], "digest", label="source", algorithm=algorithm)
    finally:
        conn.close()
    assert reference.digest_algorithm == (algorithm or CRC_SUM64_EXACT)  # MariaDB 10.11 computes CRC32C
    assert all(len(t.digest or "") == 16 for t in reference.tables)

    report = TableVerifier(_endpoint(server), reference, label="target").finish()
    assert report.ok, report.failures

    server.execute("UPDATE app.bucket_0000 SET created_at = created_at + INTERVAL 1 SECOND ORDER BY id LIMIT 1")
    report = TableVerifier(_endpoint(server), reference, label="target").finish()
    assert [f.split(":")[0] for f in report.failures] == ["app.bucket_0000"]
    assert "digest" in report.failures[0] and "rows" not in report.failures[0]
