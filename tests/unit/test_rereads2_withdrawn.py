"""A read's claim of a stored object's whole usage that the governance database does not
commit in time is withdrawn (gateway/rereads.py `claimed`, store/ownership.py
`ClaimVerdict`): never written, and the read counts nothing; the next read the
database answers counts it. So two workers reading one object count it at most once
whatever the database does: slow or locked by another process past `DATABASE_WAIT`,
failing, or a read cancelled twice during its claim. Was (session 29): each such read
counted Azure's usage on its worker's memory alone and wrote its claim later, so both
workers counted it.

Real SQLite: another process (a Python child) holds the write lock, as another worker's,
the CLI's or a backup's long write would; two `ObjectOwners` on one file are two workers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from azure_openai_proxy.gateway.ownership import ObjectOwners, owned_answer
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.store.ownership import OwnerStore

AZURE = {"input_tokens": 50, "output_tokens": 30, "total_tokens": 80}
RUN = "threads/thread_1/runs/run_1"

_LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


@contextmanager
def locked_by_another_process(database: Path) -> Iterator[None]:
    """The database's write lock held by a child process until the block ends."""
    child = subprocess.Popen([sys.executable, "-c", _LOCKER, str(database)], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        yield
    finally:
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(30)


def _run_read() -> tuple[RequestRecord, Answer]:
    """A read of a done run, Azure's usage in its answer."""
    record = RequestRecord("read", "GET")
    record.usage = dict(AZURE)
    answer = orjson.dumps({"id": "run_1", "object": "thread.run", "status": "completed",
                           "usage": AZURE})
    return record, Answer(200, {}, answer)


async def _read(owners: ObjectOwners) -> Any:
    record, answer = _run_read()
    await owned_answer(owners, "GET", RUN, "key-a", record, answer, None)
    return record.usage


async def _opened(database: Path) -> ObjectOwners:
    owners = ObjectOwners(database=database)
    await owners.get("warm")  # its store opened before any lock
    return owners


def _counts(usages: list[Any]) -> int:
    return sum(1 for usage in usages if usage is not None)


def test_two_workers_reading_while_another_process_holds_the_lock_count_once(
        tmp_path: Path) -> None:
    database = tmp_path / "gw.db"

    async def scenario() -> tuple[list[Any], Any, Any]:
        one, two = await _opened(database), await _opened(database)
        with locked_by_another_process(database):
            during = list(await asyncio.gather(_read(one), _read(two)))  # past 1 s each
        await one.written()
        await two.written()
        noted = await one._call(lambda store: store.counted("run_1"))
        later = [await _read(two), await _read(one)]
        one.close()
        two.close()
        return during, noted, later

    during, noted, later = asyncio.run(scenario())
    # session 29: [AZURE, AZURE] (each on its memory), then [None, None]: counted twice
    assert during == [None, None]
    assert noted is None  # neither claim written
    assert later == [AZURE, None]  # the next read counts it; the one after drops it


def test_a_failing_database_counts_nothing_until_it_answers(tmp_path: Path) -> None:
    """The database cannot be opened (a plain file where its folder should be): the
    reads on both workers count nothing; once it can, the next read counts Azure's
    usage, once."""
    folder = tmp_path / "folder"
    folder.write_text("not a folder")
    database = folder / "gw.db"

    async def scenario() -> tuple[list[Any], list[Any]]:
        one, two = ObjectOwners(database=database), ObjectOwners(database=database)
        during = [await _read(one), await _read(two)]
        folder.unlink()
        folder.mkdir()
        OwnerStore.open(database).close()
        later = [await _read(two), await _read(one), await _read(two)]
        one.close()
        two.close()
        return during, later

    during, later = asyncio.run(scenario())
    # session 29: [AZURE, AZURE], then [None, None, None]: counted twice
    assert during == [None, None]
    assert later == [AZURE, None, None]


def test_a_read_cancelled_twice_during_its_claim_counts_nothing(tmp_path: Path) -> None:
    """Worker one's read: its client leaves during the claim (the database locked by
    another process), then it is cancelled again; worker two reads meanwhile. Neither
    counts; the claim is never written; the next read counts it once."""
    database = tmp_path / "gw.db"

    async def scenario() -> tuple[Any, Any, Any]:
        one, two = await _opened(database), await _opened(database)
        record, answer = _run_read()
        with locked_by_another_process(database):
            reading = asyncio.ensure_future(
                owned_answer(one, "GET", RUN, "key-a", record, answer, None))
            for _ in range(20):
                await asyncio.sleep(0)
            reading.cancel()  # its client left
            await asyncio.sleep(0.1)
            reading.cancel()  # and again (a stop)
            await asyncio.wait([reading], timeout=10)
            assert reading.cancelled()
            await one.counted.gone("GET", RUN, record, None)  # as the pipeline does then
            meanwhile = await _read(two)
        await one.written()
        await two.written()
        later = await _read(two)
        one.close()
        two.close()
        return record.usage, meanwhile, later

    cancelled, meanwhile, later = asyncio.run(scenario())
    # session 29: AZURE (memory's count stood, its claim written later) and AZURE
    assert (cancelled, meanwhile) == (None, None)
    assert later == AZURE


def test_a_withdrawn_verdict_rolls_the_claim_back(tmp_path: Path) -> None:
    from azure_openai_proxy.store.ownership import ClaimVerdict, ClaimWithdrawn  # (new)

    store = OwnerStore.open(tmp_path / "gw.db")
    try:
        verdict = ClaimVerdict()
        assert verdict.withdraw()
        try:
            store.claim_counted("run_1", 1.0, verdict)
        except ClaimWithdrawn:
            pass
        else:
            raise AssertionError("a withdrawn claim committed")
        assert store.counted("run_1") is None
        committing = ClaimVerdict()
        assert store.claim_counted("run_1", 2.0, committing) is None
        assert not committing.withdraw()  # its commit had begun: too late to withdraw
        assert store.counted("run_1") == (True, 0, 0, -1)
    finally:
        store.close()
