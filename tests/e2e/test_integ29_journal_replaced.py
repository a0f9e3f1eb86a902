"""Seam of session 29 (integration review): the journal's child writer (journal) and
the marks on a database's -wal and -shm (storeguards). The child opens its own SQLite
connection: it marks the files beside the database as the thread writer's connection
does, is refused a database moved in beside the replaced file's -wal (which SQLite
would apply to it), and keeps the records in the journal meanwhile; once that -wal
and -shm are removed, it writes them into the file moved in. A real child, a real
file moved over the one the worker and the child hold open."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import pytest

from azure_openai_proxy.store.ledger import LedgerStore
from azure_openai_proxy.store.replaced import file_identity, stale_beside
from tests.e2e.test_ledger_journal import journal
from tests.unit.test_ledger_writer import finished, stored

# The slow step (`.ci/run`'s `pytest --slow`): the opt-in journal writer's end-to-end
# tests start real child processes and wait on them (~1 min of the default run's wall
# time at two processes, session 29).
pytestmark = pytest.mark.slow


def _on_disk(path: Path) -> set[str]:
    """The request ids in the file itself (no -wal applied)."""
    raw = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return {row[0] for row in raw.execute("SELECT request_id FROM usage_records")}
    finally:
        raw.close()


def test_the_child_is_refused_a_replaced_database_and_keeps_the_records(
        tmp_path: Path) -> None:
    path, backup = tmp_path / "gw.db", tmp_path / "backup.db"
    LedgerStore.open(backup).close()  # a backup: the schema, no record
    ledger = journal(path)
    ledger.start()
    try:
        for n in range(5):
            ledger.add(finished(n))
        assert ledger.flush(30)
        wal = path.with_name(path.name + "-wal")
        assert wal.exists()
        # The -wal the child wrote is marked as this file's (it names its inode).
        assert stale_beside(path) is None
        old = file_identity(path)
        os.replace(backup, path)  # moved in while the worker and the child hold it
        assert file_identity(path) != old
        assert stale_beside(path) is not None  # the replaced file's -wal, marked
        for n in range(5, 12):
            ledger.add(finished(n))
        assert not ledger.flush(3)  # refused: not written through the old -wal
        assert ledger.journal_bytes() > 0  # kept in the journal
        assert _on_disk(path) == set()  # the file moved in is untouched
        wal.unlink()
        path.with_name(path.name + "-shm").unlink(missing_ok=True)
        assert ledger.flush(30)
    finally:
        ledger.close()
    # The file moved in holds the records served after it, none of the replaced file's.
    assert set(stored(path)) == {f"req-{n}" for n in range(5, 12)}


def test_the_child_is_refused_a_replaced_database_whose_wal_keeps_no_mark(
        tmp_path: Path) -> None:
    """As above, on a file system that keeps no user extended attribute (the marks'
    best effort: none is kept): the thread writer's `FileWatch` still refuses the file
    moved in while the replaced file's -wal it holds is beside it; so must the child."""
    path, backup = tmp_path / "gw.db", tmp_path / "backup.db"
    LedgerStore.open(backup).close()
    ledger = journal(path)
    ledger.start()
    try:
        for n in range(5):
            ledger.add(finished(n))
        assert ledger.flush(30)
        wal, shm = (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))
        os.replace(backup, path)
        for side in (wal, shm):  # what such a file system holds: no mark
            with contextlib.suppress(OSError):
                os.removexattr(side, "user.azure-openai-proxy.database")
        assert stale_beside(path) is None
        for n in range(5, 12):
            ledger.add(finished(n))
        assert not ledger.flush(3)  # refused: not written through the old -wal
        assert _on_disk(path) == set()
        wal.unlink()
        shm.unlink(missing_ok=True)
        assert ledger.flush(30)
    finally:
        ledger.close()
    assert set(stored(path)) == {f"req-{n}" for n in range(5, 12)}
