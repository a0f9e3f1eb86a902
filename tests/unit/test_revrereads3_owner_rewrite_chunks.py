"""Owners whose write failed (the governance database locked by another process) are
written again by the owners' one thread (gateway/ownerdatabase.py). All of them were
written by one call, one transaction per row: thousands of them (a lock held for a
minute while streams claim their ids) held that thread for seconds, and every look-up
queued behind it (a restricted key's read, its bound `DATABASE_WAIT`) answered "not
known" (a 503). Now a call writes a chunk of them, in one transaction, and the next
chunk queues behind the look-ups that came meanwhile; a stop still writes them all.

The lock is held by a real process."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from azure_openai_proxy.gateway.ownership import ObjectOwners, Owned
from tests.unit.test_storeleft2_lock_waits import _locked

_MANY = 5000


def _written(path: Path) -> int:
    with sqlite3.connect(path, timeout=5) as db:
        return int(db.execute("SELECT count(*) FROM object_owners WHERE id LIKE 'msg_%'"
                              ).fetchone()[0])


async def test_a_look_up_waits_a_chunk_of_the_owners_written_again_not_all(
        tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    owners, other = ObjectOwners(database=path), ObjectOwners(database=path)
    try:
        await owners.remember("file-before", Owned("key-a"))  # its tables made
        await other.remember("file-elsewhere", Owned("key-b"))  # another worker's
        with _locked(path):
            owners.claim([f"msg_{n}" for n in range(_MANY)], Owned("key-a"))  # a stream's
            await owners.written()  # their write failed (busy): kept, written again later
        assert await asyncio.to_thread(_written, path) == 0
        deadline = time.monotonic() + 20
        while await asyncio.to_thread(_written, path) == 0:  # the rewrite has begun
            assert time.monotonic() < deadline, "the owners were never written again"
            await asyncio.sleep(0.002)
        # a look-up, queued now, answered (rereads3: past DATABASE_WAIT, "not known")
        assert await owners.get("file-elsewhere") == Owned("key-b")
        # and answered before all of them were written (rereads3: one call wrote them all)
        assert await asyncio.to_thread(_written, path) < _MANY
        await owners.written()  # a stop: every one of them written
        assert await asyncio.to_thread(_written, path) == _MANY
    finally:
        await owners.written()
        await asyncio.to_thread(owners.close)
        await asyncio.to_thread(other.close)
    restarted = ObjectOwners(database=path)
    try:
        assert await restarted.get(f"msg_{_MANY - 1}") == Owned("key-a")
    finally:
        await asyncio.to_thread(restarted.close)


def _owners_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate()
            if thread.name.startswith("object-owners")}


async def test_no_rewrite_outlives_the_close(tmp_path: Path) -> None:
    """A rewrite due after the close (its timer set by a failed write) opens no thread
    and no database again: the owners' resources end with `close` (nothing tested it)."""
    path = tmp_path / "gateway.db"
    before = _owners_threads()
    owners = ObjectOwners(database=path)
    await owners.remember("file-before", Owned("key-a"))
    with _locked(path):
        await owners.remember("file-1", Owned("key-a"))  # its write fails: rewritten in 1 s
    await asyncio.to_thread(owners.close)  # (no `written`: a stop cut short)
    await asyncio.sleep(1.5)  # past the rewrite's time
    assert _owners_threads() - before == set()
