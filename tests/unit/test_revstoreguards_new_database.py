"""A database the key directory makes (a first start) has its -wal made after the
connection opened (by the store's first write: `connect` had nothing to mark), so the
key directory's `FileWatch.opened` marks it (store/replaced.py). Without it, a file then
moved over the new database, with this one's -wal left beside, was opened afresh (the
CLI, a restart) through that -wal: no test covered it on storeguards (the call removed,
every test passed)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.store.replaced import ReplacedInUse
from tests.unit.test_revstoreguards_killed_restart import _keeps_user_attributes


def test_the_wal_of_a_database_the_directory_made_is_marked(tmp_path: Path) -> None:
    if not _keeps_user_attributes(tmp_path):
        pytest.skip("no user extended attributes here: no marks, SQLite's rule")
    path = tmp_path / "gateway.db"
    directory = KeyDirectory(path, clock=lambda: 2.0)  # no database yet: made

    async def run() -> None:
        await directory.start()
        await directory.call(lambda store: store.create_key("in-its-wal", now=2.0))
        other = tmp_path / "other.db"
        KeyStore.open(other).close()
        os.replace(other, path)  # moved over it while the directory has it open
        await directory.close()

    asyncio.run(run())
    assert path.with_name(path.name + "-wal").exists()  # left: the replaced file's
    with pytest.raises(ReplacedInUse):
        KeyStore.open(path)  # without the mark: opened, the old -wal applied
