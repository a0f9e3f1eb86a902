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
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from azure_openai_proxy.gateway.ownership import ObjectOwners, Owned

_LOCKER = """
import sqlite3, sys
held = sqlite3.connect(sys.argv[1], isolation_level=None)
held.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
"""
_BUSY = 5.0  # store/sqlite.py's busy timeout


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    locker = subprocess.Popen([sys.executable, "-c", _LOCKER, str(path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
        yield
    finally:
        locker.communicate("go\n", timeout=30)


async def test_a_stop_with_the_owners_database_locked_waits_one_busy_timeout(
        tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    owners = ObjectOwners(database=path)
    await owners.remember("file-before", Owned("key-a"))  # the store open, its tables made
    with _locked(path):
        for n in range(3):  # three writes queued in the owners' thread
            owners.claim([f"resp_{n}"], Owned("key-a"))
        started = time.monotonic()
        await owners.written()
        await asyncio.to_thread(owners.close)
        took = time.monotonic() - started
    # main: 3 x 5 s; now 5 s, then a tenth of it each
    assert _BUSY * 0.9 <= took < _BUSY * 1.6, took
    # memory kept them: this worker still answers for them
    assert [(await owners.get(f"resp_{n}")) for n in range(3)] == [Owned("key-a")] * 3
