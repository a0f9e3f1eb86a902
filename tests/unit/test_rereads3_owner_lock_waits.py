"""The object owners' writes while another process holds the governance database's
write lock (the CLI's write, a backup, `sqlite3` left in a transaction): each write
queued in the owners' one thread (a stream's claimed ids, a turn's context, a read's
count) waited SQLite's whole busy timeout (5 s) for the same lock, one after another,
and a stop waits for that thread (`ObjectOwners.close`): 5 s a write. Now they share a
`LockWaits` (store/sqlite.py), as the ledger's writers do: after one write waited in
vain, those of the next busy timeout wait a tenth of it.

The lock is held by a real process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from azure_openai_proxy.gateway.ownership import ObjectOwners, Owned
from tests.unit.test_storeleft2_lock_waits import _locked

_BUSY = 5.0  # store/sqlite.py's busy timeout


async def test_a_stop_with_the_owners_database_locked_waits_one_busy_timeout(
        tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    owners = ObjectOwners(database=path)
    await owners.remember("file-before", Owned("key-a"))  # the store open, its tables made
    with _locked(path):
        for n in range(4):  # four writes queued in the owners' thread
            owners.claim([f"resp_{n}"], Owned("key-a"))
        started = time.monotonic()
        await owners.written()
        await asyncio.to_thread(owners.close)
        took = time.monotonic() - started
    # main: 4 x 5 s; now 5 s, then a tenth of it each (and a short try to write the
    # failed ones again): about 7 s, bounded loosely for a loaded machine
    assert _BUSY * 0.9 <= took < _BUSY * 3, took
    # memory kept them: this worker still answers for them
    assert [(await owners.get(f"resp_{n}")) for n in range(4)] == [Owned("key-a")] * 4
