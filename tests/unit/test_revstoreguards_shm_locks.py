"""The -wal/-shm marks (store/replaced.py) must not cost a connection its locks.

SQLite's locks in WAL mode are POSIX record locks on the -shm (the writer's lock, the
readers' marks, the "someone has it open" byte), and a POSIX lock belongs to the
process and the file: closing ANY descriptor of the -shm in the process drops every
one of them. storeguards' `mark_beside`/`stale_beside` opened and closed the -shm at
each `connect` (the usage report's reader at each /admin/usage, the ledger's and key
directory's opening): a write transaction open in the same process lost its lock, a
writer in another process (another worker, the CLI) wrote at once, and that write was
then overwritten by the first one's commit. The marks are now read and written by the
path (no descriptor of the -shm is ever opened).

The other writer is a real process on the same file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from azure_openai_proxy.store.replaced import FileWatch
from azure_openai_proxy.store.sqlite import connect

_OTHER_WRITER = """
import sqlite3, sys
other = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
try:
    other.execute("INSERT INTO t VALUES ('other')")
except sqlite3.OperationalError as exc:
    print(exc)
else:
    print("written")
"""


def _reader(path: Path) -> None:  # /admin/usage (store/usage_report.py)
    connect(path, create=False).close()


def _writer(path: Path) -> None:  # the ledger, the key directory, ownership: a reopening
    watch = FileWatch(path)
    watch.opening()
    connection = connect(path)
    watch.opened()
    connection.close()
    watch.release()


@pytest.mark.parametrize("opening", [_reader, _writer], ids=["reader", "writer"])
def test_a_connection_opened_beside_a_write_keeps_its_lock(
        tmp_path: Path, opening: Callable[[Path], None]) -> None:
    path = tmp_path / "gateway.db"
    writing = connect(path)
    try:
        writing.execute("CREATE TABLE t (who TEXT)")
        writing.execute("BEGIN IMMEDIATE")
        writing.execute("INSERT INTO t VALUES ('here')")
        opening(path)  # another connection of this process, during the transaction
        other = subprocess.run([sys.executable, "-c", _OTHER_WRITER, str(path)],
                               capture_output=True, text=True, timeout=60, check=True)
        # storeguards: "written" (the lock dropped), then lost under the commit below
        assert other.stdout.strip() == "database is locked", other
        writing.execute("COMMIT")
        assert writing.execute("SELECT who FROM t").fetchall() == [("here",)]
        assert writing.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        writing.close()
