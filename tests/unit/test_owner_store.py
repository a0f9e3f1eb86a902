"""store/ownership.py: the object owners' table made by an older gateway (no home
columns), opened while another process holds the database's write lock."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from azure_openai_proxy.gateway.ownership import ObjectOwners
from azure_openai_proxy.store import sqlite as store_sqlite
from azure_openai_proxy.store.ownership import OwnerStore
from azure_openai_proxy.store.sqlite import connect

_OLD_TABLE = ("CREATE TABLE object_owners (id TEXT PRIMARY KEY, key_id TEXT NOT NULL, "
              "models TEXT, created REAL NOT NULL) WITHOUT ROWID")
_OLD_CONTEXTS = ("CREATE TABLE chained_context (key_id TEXT NOT NULL, id TEXT NOT NULL, "
                 "tokens INTEGER NOT NULL, noted REAL NOT NULL, PRIMARY KEY (key_id, id)) "
                 "WITHOUT ROWID")
_EAST = ("https://east.example", "gpt-4o")


@pytest.fixture
def short_lock_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock waited for 0.2 s instead of 5 (what is tested is the same)."""
    monkeypatch.setattr(store_sqlite, "_BUSY_TIMEOUT_MS", 200)


@pytest.fixture
def older_database(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """An older gateway's database holding `file-1` of `key-a`, and another connection
    to it (a ledger writer, the CLI, another worker) that will take the write lock."""
    database = tmp_path / "gateway.db"
    other = connect(database)
    other.execute(_OLD_TABLE)
    other.execute(_OLD_CONTEXTS)
    other.execute("INSERT INTO object_owners VALUES ('file-1', 'key-a', NULL, 1.0)")
    yield database, other
    other.close()


@pytest.mark.usefixtures("short_lock_wait")
def test_an_older_table_is_read_while_another_process_holds_the_write_lock(
        older_database: tuple[Path, sqlite3.Connection]) -> None:
    """Reading owners needs no write lock, as before the home columns: adding them
    waits for the first write (on e13a4ba..87db8cd the open itself altered the table, so
    a held lock failed the store, and a restricted key's own file was a 404)."""
    database, other = older_database
    other.execute("BEGIN IMMEDIATE")

    async def scenario() -> None:
        owners = ObjectOwners(database=database)
        assert await owners.check(["file-1"], "key-a", restricted=True) == []
        assert await owners.owned_of("key-a", ["file-1", "file-2"]) == {"file-1"}
        owners.close()

    asyncio.run(scenario())
    store = OwnerStore.open(database)
    assert store.get("file-1") == ("key-a", None, None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):  # as any write would
        store.add("file-2", "key-a", None, 2.0, _EAST)
    other.execute("COMMIT")
    store.add("file-2", "key-a", None, 2.0, _EAST)  # the lock gone: the columns added
    assert store.get_many(["file-1", "file-2"]) == {
        "file-1": ("key-a", None, None), "file-2": ("key-a", None, _EAST)}
    store.close()


def test_a_store_opened_before_another_added_the_columns_reads_the_homes(
        older_database: tuple[Path, sqlite3.Connection]) -> None:
    """A worker that opened the older table reads the homes another worker's first
    write added the columns for, and its own insert records its home too."""
    database, _ = older_database
    first, second = OwnerStore.open(database), OwnerStore.open(database)
    try:
        assert second.get("file-1") == ("key-a", None, None)
        first.add("file-2", "key-a", None, 2.0, _EAST)
        assert second.get("file-2") == ("key-a", None, _EAST)
        second.add("file-3", "key-b", None, 3.0, _EAST)
        assert first.get_many(["file-3"]) == {"file-3": ("key-b", None, _EAST)}
    finally:
        first.close()
        second.close()


def test_workers_adding_the_columns_at_once_all_record(tmp_path: Path) -> None:
    """Several stores on one older table, each adding the columns on its first write:
    one of them adds them, the others find them added (one transaction)."""
    database = tmp_path / "gateway.db"
    old = connect(database)
    old.execute(_OLD_TABLE)
    stores = [OwnerStore.open(database) for _ in range(4)]
    try:
        for number, store in enumerate(stores):
            store.add(f"file-{number}", "key-a", None, 1.0, _EAST)
        assert stores[0].get_many([f"file-{n}" for n in range(4)]) == {
            f"file-{n}": ("key-a", None, _EAST) for n in range(4)}
    finally:
        for store in stores:
            store.close()
        old.close()

