"""A usage report on a ledger whose writer has stopped, in a directory the report's
user cannot write (the gateway's data volume, read by an operator's CLI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from azure_openai_proxy.store.sqlite import connect
from tests.support import as_nobody, readable_directory


@pytest.fixture
def shut_directory() -> Iterator[Path]:
    """A directory readable by all, made unwritable by the test."""
    with readable_directory() as top:
        yield top


def test_a_report_reads_a_stopped_wal_ledger_in_a_directory_it_cannot_write(
        shut_directory: Path) -> None:
    """SQLite reads a WAL database read-only only when its -shm file is there or can be
    made: with the writer stopped (no -wal, no -shm) and the directory not writable, the
    report failed with 'attempt to write a readonly database'."""
    path = shut_directory / "gw.db"
    writer = connect(path)
    writer.execute("CREATE TABLE t (x)")
    writer.execute("INSERT INTO t VALUES (7)")
    writer.close()
    assert sorted(p.name for p in shut_directory.iterdir()) == ["gw.db"]
    path.chmod(0o644)
    shut_directory.chmod(0o555)
    with as_nobody():
        reader = connect(path, create=False)
        try:
            assert reader.execute("SELECT x FROM t").fetchall() == [(7,)]
        finally:
            reader.close()
    assert sorted(p.name for p in shut_directory.iterdir()) == ["gw.db"]
