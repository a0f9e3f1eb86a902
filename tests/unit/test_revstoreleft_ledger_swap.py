"""The usage ledger's own connection and a backup moved over the database under it
(`mv backup.db gateway.db`). The writer noticed the other file (its inode) and opened
it at once, with the replaced file's -wal beside it, which SQLite leaves there and
applies to whatever file it then opens: the backup read as the old database, and the
writer's next checkpoint wrote the old pages into it (here: the usage rows written
after the backup was taken, back in it). Now, while that -wal is beside the new file,
the writer does not open it: its records spool, and reach the new file once the -wal
and -shm are gone (as the key directory, store/replaced.py)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tests.unit.test_ledger_writer import finished, stored, writer
from tests.unit.test_revkeydir_replaced import _restore as _copy


def _on_disk(path: Path) -> list[str]:
    """The usage rows in the file itself (no -wal read)."""
    raw = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return sorted(row[0] for row in raw.execute("SELECT request_id FROM usage_records"))
    finally:
        raw.close()


def database_and_backup(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """The database's path, a backup's beside it, and the database's -wal and -shm."""
    path = tmp_path / "gateway.db"
    return (path, tmp_path / "backup.db", *(path.with_name(path.name + end)
                                            for end in ("-wal", "-shm")))


def test_a_backup_moved_under_the_writer_is_not_written_through_the_old_wal(
        tmp_path: Path) -> None:
    path, backup, wal, shm = database_and_backup(tmp_path)
    ledger = writer(path)
    ledger.start()
    try:
        ledger.add(finished(1))
        assert ledger.flush()
        _copy(path, backup)  # the backup: req-1
        for n in range(2, 6):
            ledger.add(finished(n))
        assert ledger.flush() and wal.exists()  # req-2..5: in the writer's -wal
        os.replace(backup, path)
        ledger.add(finished(6))
        assert ledger.flush()
        assert _on_disk(path) == ["req-1"]
        assert wal.exists() and ledger.failures > 0  # refused while the old -wal is there
        assert "req-6" in ledger.spool_path.read_text()  # kept, not lost
        # Every process of the replaced file stopped: its -wal and -shm removed.
        wal.unlink()
        shm.unlink()
        assert ledger.flush()
    finally:
        ledger.close()
    assert stored(path) == ["req-1", "req-6"]  # storeleft: req-1..6 (the old -wal's rows)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    raw.close()
