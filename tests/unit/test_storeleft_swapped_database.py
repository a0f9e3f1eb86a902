"""A database replaced under a running gateway by one whose change counter equals the
one read was not noticed: revoked keys kept working. Moved into place (`mv backup.db
gateway.db`: another file at the path), the open connection read the file replaced for
good, whatever its counter; restored into the file (`sqlite3 gateway.db ".restore
backup.db"`), the counter alone was asked. Now the file's identity (device, inode) is
compared at each call, and the log's mark at the position read at each poll: either
differing, the directory reads the database whole (a moved file as it is on disk, while
the replaced one's -wal, which SQLite would apply to it, is beside it)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.store.keys import KeyStore
from tests.unit.test_revkeydir_replaced import _restore as _copy  # (the backup API)

NOW = 1_000_000.0


def _diverged(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """The gateway's database and another one, a copy of it that went its own way with as
    many writes (the same change counter): `revoked` revoked and `blocked` blocked there,
    `only-here` made in the gateway's. Their secrets by name."""
    path, other = tmp_path / "gateway.db", tmp_path / "other.db"
    store = KeyStore.open(path)
    secrets = {name: store.create_key(name, now=NOW)[1] for name in ("kept", "revoked", "blocked")}
    _copy(path, other)
    secrets["only-here"] = store.create_key("only-here", now=NOW)[1]
    store.update_key("kept", {"name": "kept"})
    store.close()
    elsewhere = KeyStore.open(other)
    elsewhere.delete_key("revoked")
    elsewhere.update_key("blocked", {"blocked": True})
    counter = elsewhere.version()
    elsewhere.close()
    gateways = KeyStore.open(path)
    assert gateways.version() == counter  # the same change counter
    gateways.close()
    return path, other, secrets


def _read_whole(directory: KeyDirectory, secrets: dict[str, str]) -> None:
    assert directory.authenticate(secrets["kept"]).key is not None
    for name, reason in (("revoked", "Incorrect"), ("only-here", "Incorrect"),
                         ("blocked", "blocked")):
        with pytest.raises(AuthenticationFailed, match=reason):
            directory.authenticate(secrets[name])  # main: let in
    assert directory.key_count == 2


def test_a_database_moved_into_place_with_the_same_counter_is_read_whole(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Read as the moved file holds it, not through the -wal SQLite leaves beside it
    (the replaced one's: opened, SQLite applies its pages to the new file, for good);
    followed as usual once that -wal is gone."""
    path, other, secrets = _diverged(tmp_path)
    directory = KeyDirectory(path, clock=lambda: NOW)

    async def run() -> None:
        await directory.refresh()
        assert all(directory.authenticate(secret).key is not None
                   for secret in secrets.values())
        inode = path.stat().st_ino
        os.replace(other, path)  # a real swap: another file at the path
        assert path.stat().st_ino != inode
        await directory.refresh()
        _read_whole(directory, secrets)
        assert "was replaced by another file while in use" in caplog.text
        wal = path.with_name(path.name + "-wal")
        assert wal.exists()  # (the replaced one's: left by SQLite)
        with pytest.raises(sqlite3.OperationalError, match="-wal is beside it"):
            await directory.call(lambda store: store.create_key("refused", now=NOW))
        await directory.refresh()
        _read_whole(directory, secrets)  # (not read again: the file did not change)
        # Every process that had the replaced file stopped, its -wal and -shm removed:
        # the file is opened as usual, and followed from there.
        wal.unlink()
        path.with_name(path.name + "-shm").unlink()
        await directory.refresh()
        _read_whole(directory, secrets)
        store = KeyStore.open(path)
        store.update_key("kept", {"blocked": True})
        store.close()
        await directory.refresh()
        with pytest.raises(AuthenticationFailed, match="blocked"):
            directory.authenticate(secrets["kept"])
        await directory.close()

    asyncio.run(run())


def test_a_database_restored_into_the_file_with_the_same_counter_is_read_whole(
        tmp_path: Path) -> None:
    path, other, secrets = _diverged(tmp_path)
    directory = KeyDirectory(path, clock=lambda: NOW)

    async def run() -> None:
        await directory.refresh()
        inode = path.stat().st_ino
        _copy(other, path)  # `sqlite3 gateway.db ".restore other.db"`: the same file
        assert path.stat().st_ino == inode
        await directory.refresh()
        _read_whole(directory, secrets)
        await directory.close()

    asyncio.run(run())


def test_a_poll_with_nothing_changed_reads_nothing_more(tmp_path: Path) -> None:
    """The check each poll makes (the counter, the mark, the file's identity) reads no
    key: a database unchanged is not read again."""
    path = tmp_path / "gateway.db"
    store = KeyStore.open(path)
    _, secret = store.create_key("a", now=NOW)
    store.close()
    directory = KeyDirectory(path, clock=lambda: NOW)
    reads: list[int] = []
    directory.on_reload = lambda limits: reads.append(len(limits))

    async def run() -> None:
        for _ in range(5):
            await directory.refresh()
        assert reads == [1] and directory.authenticate(secret).key is not None
        await directory.close()

    asyncio.run(run())
