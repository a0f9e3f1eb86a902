"""Review of storeleft2 (store/replaced.py, store/sqlite.py `LockWaits`): edges its tests
left open, with real files and real processes.

- The frameless bound: a stale -wal of its header and exactly one frame of a 512-byte
  page (568 bytes) holds a commit SQLite applies: refused; one byte shorter (a header
  and a torn frame) holds none: opened. (Any bound from 33 to 4,153 bytes passed the
  branch's tests.)
- A stale frameless -wal while a process holds an unmarked -shm (made anew by a tool,
  or its mark lost): that process may still write frames: refused.
- A mark written where no birth time was read (0) names this file by its number.
- No `ctypes` (a Python built without libffi): the store module still imports; files
  are then known by their number (birth time 0). The branch failed at import.
- Only a busy failure cuts the waits of `LockWaits`.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from azure_openai_proxy.store import replaced
from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.store.ledger import LedgerStore
from azure_openai_proxy.store.replaced import ReplacedInUse, stale_beside
from azure_openai_proxy.store.sqlite import LockWaits, connect
from tests.processes import ROOT
from tests.unit.test_revstoreleft_replaced_wal import _names_on_disk, _with_backup
from tests.unit.test_storeleft2_lock_waits import _BUSY_MS, _failing, _labels, _locked
from tests.unit.test_storeleft2_wal_edges import _held, _wal

# The replaced file's process: one commit of page 1 (512 bytes) into its -wal, then
# gone without closing (the -wal stays, its -shm held by nobody).
_ONE_FRAME = """
import os, sys
from pathlib import Path
from azure_openai_proxy.store.sqlite import connect
db = connect(Path(sys.argv[1]))
db.execute("PRAGMA user_version=7")
os._exit(0)
"""


def _user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_the_frameless_bound_is_one_frame_of_the_smallest_page(tmp_path: Path) -> None:
    path, new = tmp_path / "gateway.db", tmp_path / "new.db"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA page_size=512")
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("CREATE TABLE t(x)")
    raw.close()
    shutil.copyfile(path, new)
    subprocess.run([sys.executable, "-c", _ONE_FRAME, str(path)], check=True, cwd=ROOT)
    os.replace(new, path)
    wal = _wal(path)
    assert wal.stat().st_size == 32 + 24 + 512
    # What SQLite would do with it: the replaced file's commit applied to this one.
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copyfile(path, copy / "c.db")
    shutil.copyfile(wal, copy / "c.db-wal")
    assert _user_version(copy / "c.db") == 7
    with pytest.raises(ReplacedInUse):
        connect(path)
    os.truncate(wal, 32 + 24 + 511)  # the frame torn: none whole
    opened = connect(path)
    try:
        assert opened.execute("PRAGMA user_version").fetchone()[0] == 0
    finally:
        opened.close()


def test_a_frameless_wal_is_refused_while_an_unmarked_shm_is_held(tmp_path: Path) -> None:
    path, backup, _, _ = _with_backup(tmp_path)
    with _held(path, write=False):
        os.replace(backup, path)
        os.removexattr(f"{path}-shm", "user.azure-openai-proxy.database")
        assert _wal(path).stat().st_size == 0
        with pytest.raises(ReplacedInUse):
            KeyStore.open(path)
    assert _names_on_disk(path) == {"kept"}


def test_a_mark_without_a_birth_time_names_the_file_by_its_number(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gateway.db"
    monkeypatch.setattr(replaced, "_birth_ns", lambda path: 0)
    db = connect(path)  # its -wal and -shm marked with birth time 0
    try:
        db.execute("CREATE TABLE t(x)")
        monkeypatch.undo()
        assert replaced.file_identity(path) is not None
        assert replaced.file_identity(path)[2] != 0  # type: ignore[index]
        assert stale_beside(path) is None
    finally:
        db.close()


def test_the_store_imports_without_ctypes(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.modules['ctypes'] = None\n"
        "from pathlib import Path\n"
        "from azure_openai_proxy.store import replaced\n"
        "from azure_openai_proxy.store.sqlite import connect\n"
        "path = Path(sys.argv[1])\n"
        "connect(path).close()\n"
        "print(replaced.file_identity(path)[2])\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "g.db")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-800:]
    assert done.stdout == "0\n"


def test_only_a_busy_failure_cuts_the_waits(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    waits = LockWaits()
    store = LedgerStore.open(path, busy_timeout_ms=_BUSY_MS, waits=waits)
    try:
        db = store._db
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            waits.execute(db, _BUSY_MS, "INSERT INTO missing VALUES (1)")
        with _locked(path):
            assert _failing(lambda: store.label_id(_labels("a"))) >= _BUSY_MS / 1000
    finally:
        store.close()
