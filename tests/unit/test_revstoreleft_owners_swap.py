"""The object owners' own connection to the governance database (gateway/ownership.py)
and a backup moved over the file under it (`mv backup.db gateway.db`). It never looked
at the file again: every owner recorded after went to the replaced, unlinked file, and
was lost (after a restart, or to the other workers, the objects were of no known
owner). Now, as the key directory and the ledger (store/replaced.py), it opens the new
file, not while the replaced one's -wal is beside it (SQLite would apply it to the new
file: memory alone answers meanwhile), and never makes an empty one where the file
went missing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from azure_openai_proxy.gateway.ownership import ObjectOwners, Owned
from azure_openai_proxy.store.ownership import OwnerStore
from tests.unit.test_revkeydir_replaced import _restore as _copy
from tests.unit.test_revstoreleft_ledger_swap import database_and_backup


def _in_file(path: Path, *object_ids: str) -> list[str]:
    store = OwnerStore.open(path)
    try:
        return [object_id for object_id in object_ids if store.get(object_id) is not None]
    finally:
        store.close()


def test_owners_recorded_after_a_backup_moved_in_reach_it_once_the_old_wal_is_gone(
        tmp_path: Path) -> None:
    path, backup, wal, shm = database_and_backup(tmp_path)
    owners = ObjectOwners(database=path)
    mine = Owned("key_a")

    async def run() -> None:
        await owners.remember("file-1", mine)
        _copy(path, backup)
        await owners.remember("file-2", mine)  # the old file's, in its -wal
        os.replace(backup, path)
        await owners.remember("file-3", mine)  # memory only: the old -wal is beside
        assert wal.exists() and await owners.get("file-3") == mine
        wal.unlink()  # every process of the replaced file stopped
        shm.unlink()
        await owners.remember("file-4", mine)
        owners.close()

    asyncio.run(run())
    # storeleft: ["file-1"] (file-4 went to the replaced file)
    assert _in_file(path, "file-1", "file-2", "file-3", "file-4") == ["file-1", "file-4"]


def test_owners_make_no_empty_database_where_the_file_went_missing(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    owners = ObjectOwners(database=path)

    async def run() -> None:
        await owners.remember("file-1", Owned("key_a"))
        for name in ("gateway.db", "gateway.db-wal", "gateway.db-shm"):
            (tmp_path / name).unlink()
        await owners.remember("file-2", Owned("key_a"))  # memory only
        assert await owners.get("file-2") == Owned("key_a")
        owners.close()

    asyncio.run(run())
    assert not path.exists()  # (the key directory would read an empty one: every key 401)
