"""The key directory and a file moved over its database (storeleft's `_read_replaced`),
two cases that branch got wrong:

- The replaced file's -wal was known by its inode number alone. Once removed, as the
  log line asks, the next -wal made for the new file (by the CLI, another worker, the
  ledger) gets on ext4 the number just freed: the directory took it for the replaced
  one's for good, reading the file as it is on disk (a change in the new -wal unseen:
  a key blocked there let in) and refusing every admin write (503) until a restart.
  The -wal is now held open while known (store/replaced.py): its number stays taken.
  (On storeleft the first test fails only when ext4 does reuse the number: 2 runs of 7
  here, the machine's other files taking it the other times; the second always.)
- A file removed under the directory, then another put at its path (`rm`, then a copy
  or a move), was opened with the removed one's -wal beside it: SQLite applied the old
  file's pages to the new one (the removal was a plain failure: the -wal not noted).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.store.keys import KeyStore
from tests.unit.test_revkeydir_replaced import _restore as _copy

NOW = 1_000_000.0


def _with_backup(tmp_path: Path) -> tuple[Path, Path, dict[str, str], str]:
    """The gateway's database (keys `kept` and `revoked`) and a backup of it with
    `revoked` revoked; the secrets by name, and `revoked`'s id."""
    path, backup = tmp_path / "gateway.db", tmp_path / "backup.db"
    store = KeyStore.open(path)
    secrets = {name: store.create_key(name, now=NOW)[1] for name in ("kept", "revoked")}
    revoked_id = store.key("revoked").id
    store.close()
    _copy(path, backup)
    elsewhere = KeyStore.open(backup)
    elsewhere.delete_key(revoked_id)
    elsewhere.close()
    return path, backup, secrets, revoked_id


def _names_on_disk(path: Path) -> set[str]:
    """The keys in the file itself (no -wal read)."""
    raw = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return {row[0] for row in raw.execute("SELECT name FROM keys")}
    finally:
        raw.close()


def test_once_the_replaced_wal_is_removed_the_new_file_is_followed_whatever_wal_comes(
        tmp_path: Path) -> None:
    path, backup, secrets, _ = _with_backup(tmp_path)
    directory = KeyDirectory(path, clock=lambda: NOW)
    wal = path.with_name(path.name + "-wal")

    async def run() -> None:
        await directory.refresh()
        assert directory.authenticate(secrets["revoked"]).key is not None
        os.replace(backup, path)
        await directory.refresh()  # read as on disk, the replaced -wal beside
        with pytest.raises(AuthenticationFailed):
            directory.authenticate(secrets["revoked"])
        wal.unlink()  # as the log line asks (every process of the replaced file stopped)
        path.with_name(path.name + "-shm").unlink()
        cli = KeyStore.open(path)  # a new -wal for the new file (kept open: its writes stay in it)
        try:
            # (storeleft: ext4 gave this -wal the replaced one's inode number, freed)
            cli.update_key("kept", {"blocked": True})  # in the -wal, not the file yet
            await directory.refresh()
            with pytest.raises(AuthenticationFailed, match="blocked"):
                directory.authenticate(secrets["kept"])  # storeleft: let in
            made = await directory.call(lambda store: store.create_key("after", now=NOW))
            assert made[0].name == "after"  # storeleft: refused (the 503), for good
        finally:
            cli.close()
        await directory.close()

    asyncio.run(run())


def test_a_file_removed_then_put_back_is_not_read_through_the_removed_ones_wal(
        tmp_path: Path) -> None:
    path, backup, secrets, _ = _with_backup(tmp_path)
    directory = KeyDirectory(path, clock=lambda: NOW)

    async def run() -> None:
        await directory.refresh()
        # An admin write: in the -wal the directory's connection keeps (the keys' pages).
        await directory.call(lambda store: store.create_key("late", now=NOW))
        path.unlink()  # `rm gateway.db` (its -wal and -shm left: the directory has it)
        await directory.refresh()  # gone: the keys known are served
        assert directory.authenticate(secrets["kept"]).key is not None
        os.replace(backup, path)  # then the backup put there
        await directory.refresh()
        with pytest.raises(AuthenticationFailed):
            directory.authenticate(secrets["revoked"])  # storeleft: let in (the old pages)
        assert directory.authenticate(secrets["kept"]).key is not None
        assert directory.key_count == 1  # storeleft: 3 (`late` too)
        with pytest.raises(sqlite3.OperationalError, match="-wal is beside it"):
            await directory.call(lambda store: store.create_key("refused", now=NOW))
        await directory.close()

    asyncio.run(run())
    assert _names_on_disk(path) == {"kept"}  # the backup's, not rewritten by the old -wal
