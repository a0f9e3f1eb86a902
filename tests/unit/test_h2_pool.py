"""upstream/h2/pool.py: a connection whose opening task is done is seen at once, before
the task's done callback runs (a request looking in between once spun forever)."""

from __future__ import annotations

import asyncio

from azure_openai_proxy.upstream.h2.connection import _H2Connection
from azure_openai_proxy.upstream.h2.pool import _OriginPool


async def test_a_connection_just_opened_is_seen_before_its_callback_runs() -> None:
    loop = asyncio.get_running_loop()
    pool = _OriginPool(loop, "h", 0)
    conn = _H2Connection(loop, "h", 60.0)

    async def connecting() -> _H2Connection:
        return conn

    task = pool.open(connecting())
    await asyncio.sleep(0)  # the task has run to its end; its done callback has not
    assert task.done() and pool.conns == []
    pool.settle()
    assert pool.room() is conn and pool.opening is None and not pool.openings
    await asyncio.sleep(0)  # the callback, later, changes nothing
    assert pool.conns == [conn]


async def test_every_connection_opened_is_kept_when_a_newer_one_is_opening() -> None:
    loop = asyncio.get_running_loop()
    pool = _OriginPool(loop, "h", 2)
    first, second = _H2Connection(loop, "h", 60.0), _H2Connection(loop, "h", 60.0)
    gate = loop.create_future()

    async def opened(conn: _H2Connection) -> _H2Connection:
        await gate
        return conn

    pool.open(opened(first))
    pool.open(opened(second))  # the newer takes the claims; the first still counts
    assert pool.full()
    gate.set_result(None)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert pool.conns == [first, second] and pool.full()
