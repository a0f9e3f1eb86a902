"""An object's owner whose write failed when the object was made (the governance
database locked by another process past the busy timeout, or failing) stayed in the
memory of the worker that made it alone: another worker (another `ObjectOwners` on the
same file, as `--workers 2` has), or this one after a restart, refused the key its own
object (a restricted key's 404). Now the owners' writer keeps it and writes it again,
by a call of its own soon after (`OwnerDatabase`), and at a stop (`written`).

The lock is held by a real process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from azure_openai_proxy.gateway.ownership import ObjectNotFound, ObjectOwners, Owned
from tests.unit.test_storeleft2_lock_waits import _locked


async def _knows(owners: ObjectOwners, object_id: str, key_id: str) -> bool:
    try:
        await owners.check([object_id], key_id, restricted=True)
    except ObjectNotFound:
        return False
    return True


async def test_another_worker_knows_an_owner_whose_write_failed_once_it_can(
        tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    made, other = ObjectOwners(database=path), ObjectOwners(database=path)
    try:
        await made.remember("file-before", Owned("key-a"))
        assert await _knows(other, "file-before", "key-a")
        with _locked(path):
            await made.remember("file-1", Owned("key-a"))  # its write fails (busy)
            assert await _knows(made, "file-1", "key-a")  # memory has it
        assert not await _knows(other, "file-1", "key-a")  # not yet written
        deadline = time.monotonic() + 10
        while not await _knows(other, "file-1", "key-a"):  # main: never
            assert time.monotonic() < deadline, "the owner was never written"
            await asyncio.sleep(0.1)
        with pytest.raises(ObjectNotFound):  # and it is key-a's, not anyone's
            await other.check(["file-1"], "key-b", restricted=False)
    finally:
        await made.written()
        await asyncio.to_thread(made.close)
        await asyncio.to_thread(other.close)


async def test_a_stop_writes_the_owners_whose_write_failed(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    made = ObjectOwners(database=path)
    await made.remember("file-before", Owned("key-a"))
    with _locked(path):
        made.claim(["resp_1", "msg_1"], Owned("key-a"))  # a stream's ids, in the background
        await made.written()  # their write failed (busy)
    await made.written()  # the stop, at once: main had nothing left to write
    await asyncio.to_thread(made.close)
    restarted = ObjectOwners(database=path)
    try:
        assert await _knows(restarted, "resp_1", "key-a")
        assert await _knows(restarted, "msg_1", "key-a")
    finally:
        await asyncio.to_thread(restarted.close)
