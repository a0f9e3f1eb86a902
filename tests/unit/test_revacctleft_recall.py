"""A read of a done Assistants run (or a background response) looks up what other
workers counted of it (`CountedUsage.recall`, gateway/rereads.py) in the object owners'
one database thread,
where it queues behind their writes; a database another process holds locked keeps each
write there up to SQLite's busy timeout (5 s). The client's answer must not wait for that
queue: past `DATABASE_WAIT` the read is answered, counting nothing (its claim withdrawn:
never written, session 30), and the next read once the database answers counts it, once.
Was: it waited for every queued write to time out; then (session 29) it counted on
memory alone and wrote its claim later, so a read on another worker meanwhile counted
it too.

Real SQLite: another connection holds the write lock, as another worker's or the CLI's
long write would."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson

from azure_openai_proxy.gateway.ownership import ObjectOwners, owned_answer
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.observability.record import RequestRecord

AZURE = {"input_tokens": 50, "output_tokens": 30, "total_tokens": 80}
_QUEUED = 3  # writes queued before the read: 3 x 5 s of busy timeout


def _cut_post(owners: ObjectOwners, response_id: str) -> None:
    """A background stream cut, recorded at an estimate: its note written in the
    background (queued in the owners' thread)."""
    record = RequestRecord("post", "POST")
    record.stream, record.created_id = True, response_id
    record.usage = {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30,
                    "estimated": True}
    owners.counted.answered("POST", "responses", record, None,
                            {"background": True, "stream": True})


def _run_read() -> tuple[RequestRecord, Answer]:
    record = RequestRecord("read", "GET")
    record.usage = dict(AZURE)
    answer = orjson.dumps({"id": "run_r", "object": "thread.run",
                           "status": "completed", "usage": AZURE})
    return record, Answer(200, {}, answer)


def test_a_read_is_answered_while_the_database_is_locked(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"

    async def scenario() -> tuple[bool, object, object]:
        owners = ObjectOwners(database=database)
        await owners.get("warm")  # the store opened (its tables made) before the lock
        holder = sqlite3.connect(database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held
        try:
            for n in range(_QUEUED):
                _cut_post(owners, f"resp_cut{n}")
            queued = set(owners._writes)
            await asyncio.sleep(0)  # each started: its write submitted to the owners' thread
            record, answer = _run_read()
            await owned_answer(owners, "GET", "threads/thread_1/runs/run_r", "key-a",
                               record, answer, None)
            # answered while the writes still wait for the lock (was: after all of them)
            answered_first = not all(write.done() for write in queued)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await owners.written()
        owners.close()
        after = ObjectOwners(database=database)  # the writes queued went through, later
        noted = await after._call(lambda store: store.counted("run_r"))
        later = _run_read()
        await owned_answer(after, "GET", "threads/thread_1/runs/run_r", "key-a",
                           later[0], later[1], None)
        after.close()
        return answered_first, record.usage, (noted, later[0].usage)

    answered_first, usage, (noted, later) = asyncio.run(scenario())
    assert answered_first
    assert usage is None  # counted nothing: its claim could not be made in time
    assert noted is None  # and was withdrawn, never written (was: whole, counted twice)
    assert later == AZURE  # the next read counts it, once
