"""A read's claim (gateway/rereads.py `claimed`, `_decided`): withdrawn at once when its
wait is over, so the read is answered within `DATABASE_WAIT`, not when a database
locked by another process gives its busy timeout up (5 s); and a read cancelled while
its claim commits keeps what the commit decides and still ends cancelled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from azure_openai_proxy.gateway.ownership import ObjectOwners, owned_answer
from azure_openai_proxy.gateway.rereads import CountedUsage, _Claim
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.store.ownership import ClaimVerdict
from tests.unit.test_rereads2_withdrawn import _opened, _read, locked_by_another_process

AZURE = {"input_tokens": 50, "output_tokens": 30, "total_tokens": 80}


def test_a_read_whose_claim_waits_on_a_lock_is_answered_within_the_bound(
        tmp_path: Path) -> None:
    database = tmp_path / "gw.db"

    async def scenario() -> tuple[Any, float]:
        owners = await _opened(database)
        with locked_by_another_process(database):
            started = time.monotonic()
            usage = await _read(owners)
            took = time.monotonic() - started
            await asyncio.sleep(0)
        await owners.written()
        owners.close()
        return usage, took

    usage, took = asyncio.run(scenario())
    assert usage is None
    assert took < 3.5  # 1 s and moments (waiting out the 5 s busy timeout: 5 s or more)


def test_a_read_cancelled_while_its_claim_commits_keeps_the_commits_count() -> None:
    async def scenario() -> tuple[bool, Any]:
        counted = CountedUsage()
        record = RequestRecord("read", "GET")
        record.usage = dict(AZURE)
        claim = _Claim("run_1", record, dict(AZURE), (0, 0, -1))
        verdict = ClaimVerdict()
        assert verdict.commit()  # the owners' thread about to COMMIT
        committing: asyncio.Future[tuple[Any] | None] = (
            asyncio.get_running_loop().create_future())
        task: Any = asyncio.ensure_future(committing)
        deciding = asyncio.ensure_future(counted._decided(claim, task, verdict))
        await asyncio.sleep(0)
        deciding.cancel()  # its client left (or a stop) during the COMMIT
        await asyncio.sleep(0.05)
        waited = not deciding.done()  # the commit is waited for, not abandoned
        committing.set_result(((True, 0, 0, -1),))  # another worker had counted it
        await asyncio.wait([deciding], timeout=5)
        assert deciding.cancelled()  # and the cancellation still ends it
        return waited, record.usage

    waited, usage = asyncio.run(scenario())
    assert waited
    assert usage is None  # the commit's answer applied: counted already elsewhere


async def _run_read(owners: ObjectOwners, n: int) -> Any:
    record = RequestRecord("read", "GET")
    record.usage = dict(AZURE)
    answer = orjson.dumps({"id": f"run_{n}", "object": "thread.run", "status": "completed",
                           "usage": AZURE})
    await owned_answer(owners, "GET", f"threads/thread_1/runs/run_{n}", "key-a", record,
                       Answer(200, {}, answer), None)
    return record.usage


def test_claims_withdrawn_before_they_start_leave_the_owners_thread_at_once(
        tmp_path: Path) -> None:
    """Three reads while another process holds the write lock: each claim is withdrawn
    at 1 s, the first already waiting on the lock (its busy timeout, 5 s), the others
    queued behind it in the owners' one thread. Those not begun are dropped when their
    turn comes, not each made to wait 5 s more for a lock only to roll back: the owners'
    thread (every owner look-up, 1 s bound each, queues there) is free again after the
    first. Was (rereads2): 5 s a withdrawn claim, 15 s here."""
    database = tmp_path / "gw.db"

    async def scenario() -> tuple[list[Any], float]:
        owners = await _opened(database)
        with locked_by_another_process(database):
            usages = list(await asyncio.gather(*(_run_read(owners, n) for n in range(3))))
            started = time.monotonic()
            await owners.written()
            took = time.monotonic() - started
        owners.close()
        return usages, took

    usages, took = asyncio.run(scenario())
    assert usages == [None, None, None]
    assert took < 8.0  # the first claim's busy timeout left (about 4 s); was about 14 s
