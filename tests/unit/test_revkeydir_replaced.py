"""A database replaced under a running gateway (`sqlite3 gateway.db ".restore other.db"`,
or a backup restored and written to before the next poll) is another change log whose
positions mean other changes: a directory that read "the changes since my position"
from it kept keys the database no longer has, and missed keys and blocks written before
that position. The log's row at the directory's position carries a random mark: when it
is not the mark the directory read there, the directory reads everything."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.store.keys import KeyStore

NOW = 1_000_000.0


def _restore(source: Path, target: Path) -> None:
    """What `sqlite3 target ".restore source"` does: the backup API, page by page."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def test_another_database_restored_over_the_one_read_is_read_whole(tmp_path: Path) -> None:
    path, other = tmp_path / "gateway.db", tmp_path / "other.db"
    store = KeyStore.open(path)
    _, only_here = store.create_key("only-here", now=NOW)
    store.close()
    elsewhere = KeyStore.open(other)
    _, early = elsewhere.create_key("early", now=NOW)
    blocked, blocked_secret = elsewhere.create_key("blocked", now=NOW)
    elsewhere.update_key(blocked.id, {"blocked": True})
    for i in range(5):  # its log now reaches well past the first database's
        elsewhere.create_key(f"k{i}", now=NOW)
    elsewhere.close()
    directory = KeyDirectory(path, clock=lambda: NOW)

    async def run() -> None:
        await directory.refresh()
        assert directory.authenticate(only_here).key is not None
        _restore(other, path)
        await directory.refresh()
        with pytest.raises(AuthenticationFailed, match="Incorrect"):
            directory.authenticate(only_here)  # keydir: still let in
        assert directory.authenticate(early).key is not None  # keydir: 401
        with pytest.raises(AuthenticationFailed, match="blocked"):
            directory.authenticate(blocked_secret)
        assert directory.key_count == 7
        await directory.close()

    asyncio.run(run())


def test_a_backup_restored_and_written_past_the_position_read_is_read_whole(
        tmp_path: Path) -> None:
    path, backup = tmp_path / "gateway.db", tmp_path / "backup.db"
    store = KeyStore.open(path)
    store.create_key("before", now=NOW)
    _restore(path, backup)
    _, after_backup = store.create_key("after-the-backup", now=NOW)
    directory = KeyDirectory(path, clock=lambda: NOW)

    async def run() -> None:
        await directory.refresh()
        assert directory.authenticate(after_backup).key is not None
        store.close()
        _restore(backup, path)
        restored = KeyStore.open(path)
        made = [restored.create_key(f"new-{i}", now=NOW)[1] for i in range(3)]
        restored.close()
        await directory.refresh()
        with pytest.raises(AuthenticationFailed, match="Incorrect"):
            directory.authenticate(after_backup)  # keydir: still let in
        assert all(directory.authenticate(secret).key is not None for secret in made)
        assert directory.key_count == 4
        await directory.close()

    asyncio.run(run())


def test_a_log_made_without_marks_is_made_again_and_followed(tmp_path: Path) -> None:
    """A database whose log was made before the marks (keydir's first version 2) is
    given a log with them when next opened for writing, its triggers kept: a directory
    then follows its changes (before: every read of it failed, and the last keys loaded
    were served for good)."""
    path = tmp_path / "gateway.db"
    KeyStore.open(path).close()
    with sqlite3.connect(path, isolation_level=None) as raw:
        raw.executescript("DROP TABLE key_changes; CREATE TABLE key_changes (seq INTEGER "
                          "PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, id TEXT NOT NULL);")
    raw.close()
    store = KeyStore.open(path)
    key, secret = store.create_key("a", now=NOW)
    directory = KeyDirectory(path, clock=lambda: NOW)

    async def run() -> None:
        await directory.refresh()
        assert directory.authenticate(secret).key is not None
        store.update_key(key.id, {"blocked": True})
        await directory.refresh()
        with pytest.raises(AuthenticationFailed, match="blocked"):
            directory.authenticate(secret)
        await directory.close()

    asyncio.run(run())
    start = store.everything()
    store.create_key("b", now=NOW)
    changes = store.changes_since(start.position, start.mark)
    assert changes is not None and [k.name for k in changes.keys] == ["b"]
    store.close()
