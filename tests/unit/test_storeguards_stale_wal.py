"""A database file moved over the gateway's (a backup put in place) while a process of
the replaced one ran, and the gateway started afresh after that process stopped: SQLite
left the replaced file's -wal and -shm beside the new one (its last connection neither
checkpoints nor deletes them once its file moved), and the fresh start, holding nothing
of the file before (store/replaced.py `FileWatch`), opened the new file with them: the
old file's pages were read in place of the backup's (its revoked key let in) and the
first checkpoint would have written them into it. The -wal and -shm are now marked as
their file's when opened (`mark_beside`), and one marked as another file's is never
applied: the directory reads the file as it is on disk, a writer (the CLI, an admin
write) is refused, a reader reads it immutable; once they are removed, as the log says,
the file is opened as usual. The -shm alone too: left beside the new file (the -wal
removed) while the replaced file's process still runs, a new connection shared that
process's index of the old -wal.

The replaced file's process is a real one (a subprocess holding its own connection)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.store.replaced import ReplacedInUse
from tests.unit.test_revstoreleft_replaced_wal import NOW, _names_on_disk, _with_backup

_HOLDER = """
import sys
from pathlib import Path
from azure_openai_proxy.store.keys import KeyStore
store = KeyStore.open(Path(sys.argv[1]))
store.create_key("late", now=1.0)  # in its -wal: not in the file yet
print("open", flush=True)
sys.stdin.readline()  # the file at the path is replaced meanwhile
store.create_key("later", now=1.0)  # into the replaced file's -wal
store.close()  # its file moved: the -wal and -shm are left
"""


@contextmanager
def _replaced_while_held(path: Path, backup: Path) -> Iterator[subprocess.Popen[str]]:
    """A process holding `path` open while `backup` is moved over it; it stops when
    the block's body has run (the body runs while it still holds the replaced file)."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        os.replace(backup, path)
        yield holder
    finally:
        if holder.stdin is not None:
            holder.stdin.write("go\n")
            holder.stdin.close()
        assert holder.wait(timeout=30) == 0


def _side(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def test_a_fresh_start_beside_the_replaced_files_wal_does_not_apply_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, backup, secrets, _ = _with_backup(tmp_path)
    with _replaced_while_held(path, backup):
        pass
    assert _side(path, "-wal").exists()  # left: the replaced file's pages
    directory = KeyDirectory(path, clock=lambda: NOW)  # a fresh start

    async def run() -> None:
        await directory.start()
        with pytest.raises(AuthenticationFailed):
            directory.authenticate(secrets["revoked"])  # main: let in (the old pages)
        assert directory.authenticate(secrets["kept"]).key is not None
        assert directory.key_count == 1  # main: 4 (`late` and `later` too)
        with pytest.raises(sqlite3.OperationalError, match="another database file's"):
            await directory.call(lambda store: store.create_key("refused", now=NOW))
        await directory.close()

    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        asyncio.run(run())
    assert "replaced by another file" in caplog.text, caplog.text
    with pytest.raises(ReplacedInUse):
        KeyStore.open(path)  # the CLI's writes: main applied the -wal, then wrote
    reader = KeyStore.reader(path)  # `keys list`: the file as it is on disk
    try:
        assert {key.name for key in reader.list_keys()} == {"kept"}
    finally:
        reader.close()
    assert _names_on_disk(path) == {"kept"}  # the backup's, not rewritten by the old -wal

    # Removed, as the log line asks: the file is opened as usual.
    _side(path, "-wal").unlink()
    _side(path, "-shm").unlink()
    store = KeyStore.open(path)
    try:
        store.create_key("after", now=NOW)
        assert {key.name for key in store.list_keys()} == {"kept", "after"}
    finally:
        store.close()


def test_the_replaced_files_shm_left_alone_is_not_shared(tmp_path: Path) -> None:
    path, backup, _, _ = _with_backup(tmp_path)
    with _replaced_while_held(path, backup):
        # Its -wal removed, not its -shm: the process of the replaced file still
        # maps it, an index of that file's -wal.
        _side(path, "-wal").unlink()
        assert _side(path, "-shm").exists()
        with pytest.raises(ReplacedInUse, match="-shm is another database file's"):
            KeyStore.open(path)  # main: opened, sharing that index
    assert _names_on_disk(path) == {"kept"}


def test_a_database_moved_with_its_wal_is_read_with_it(tmp_path: Path) -> None:
    """A database and its -wal moved (or copied with their attributes) together are a
    pair, not a stale -wal: the marks name the -wal's own inode, another now."""
    path = tmp_path / "gateway.db"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == "open\n"
    try:
        moved = tmp_path / "moved"
        moved.mkdir()
        for suffix in ("", "-wal", "-shm"):  # a crash's files, as a copy of them is
            subprocess.run(["cp", "-a", f"{path}{suffix}", str(moved)], check=True)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    store = KeyStore.open(moved / "gateway.db")
    try:
        assert {key.name for key in store.list_keys()} == {"late"}  # the -wal's own key
    finally:
        store.close()


def test_the_replaced_files_shm_left_alone_by_no_process_is_rebuilt(tmp_path: Path) -> None:
    """Review of storeguards: a -shm marked as the replaced file's that no process holds
    any more (its processes stopped or killed, the -wal removed) is what SQLite's first
    connection rebuilds anyway: opened, not refused (storeguards refused it until someone
    removed it: admin writes 503, the ledger spooling); and marked as its file's now."""
    path, backup, _, _ = _with_backup(tmp_path)
    with _replaced_while_held(path, backup):
        pass
    _side(path, "-wal").unlink()  # the stale -wal removed, as the log asks; not the -shm
    assert _side(path, "-shm").exists()
    store = KeyStore.open(path)  # storeguards: ReplacedInUse ("-shm is another ...")
    try:
        store.create_key("after", now=NOW)
        assert {key.name for key in store.list_keys()} == {"kept", "after"}
        store.close()
        store = KeyStore.open(path)  # again: the -shm is this file's now
        assert {key.name for key in store.list_keys()} == {"kept", "after"}
    finally:
        store.close()
