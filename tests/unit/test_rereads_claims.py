"""The claim of a background response's (or a run's) whole usage in the governance
database (store/ownership.py `claim_counted`, gateway/rereads.py `claimed`): one
transaction, so that of connections claiming one id at once exactly one finds it not
counted; and a read that counted on memory before its claim keeps its count when its
client leaves during the claim (the pipeline's `left` runs after the cancellation).
Real SQLite; the owners' database thread held busy by the test where a claim must wait."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from azure_openai_proxy.gateway.ownership import ObjectOwners, owned_answer
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.store.ownership import OwnerStore

AZURE = {"input_tokens": 50, "output_tokens": 30, "total_tokens": 80}


def test_the_first_claim_alone_finds_it_not_counted(tmp_path: Path) -> None:
    one, two = (OwnerStore.open(tmp_path / "gw.db") for _ in range(2))
    try:
        one.add_counted("resp_1", (False, 20, 10, 12), 1.0)  # a cut stream's estimate
        assert one.claim_counted("resp_1", 2.0) == (False, 20, 10, 12)
        assert two.claim_counted("resp_1", 3.0) == (True, 20, 10, 12)
        assert two.claim_counted("resp_2", 3.0) is None  # nothing noted before
        assert one.claim_counted("resp_2", 4.0) == (True, 0, 0, -1)
        assert one.counted("resp_1") == (True, 20, 10, 12)
    finally:
        one.close()
        two.close()


def test_claims_made_at_once_on_many_connections_count_once(tmp_path: Path) -> None:
    database = tmp_path / "gw.db"
    OwnerStore.open(database).close()
    start, answers = threading.Barrier(6), []
    lock = threading.Lock()

    def claim() -> None:
        store = OwnerStore.open(database)
        try:
            start.wait(10)
            for n in range(20):
                before = store.claim_counted(f"resp_{n}", time.time())
                with lock:
                    answers.append((n, before is None or not before[0]))
        finally:
            store.close()

    claimers = [threading.Thread(target=claim) for _ in range(6)]
    for claimer in claimers:
        claimer.start()
    for claimer in claimers:
        claimer.join(30)
    firsts = sorted(n for n, first in answers if first)
    assert len(answers) == 120 and firsts == list(range(20))  # one first claim an id


def _resumed(usage: dict[str, Any]) -> RequestRecord:
    record = RequestRecord("resumed", "GET")
    record.stream, record.usage = True, dict(usage)
    return record


def _read() -> tuple[RequestRecord, Answer]:
    record = RequestRecord("read", "GET")
    record.usage = dict(AZURE)
    answer = orjson.dumps({"id": "resp_1", "object": "response", "background": True,
                           "status": "completed", "usage": AZURE})
    return record, Answer(200, {}, answer)


def test_a_resumed_stream_left_during_a_claim_unanswered_counts_nothing(tmp_path: Path) -> None:
    """A virtual key's resumed stream that showed Azure's usage: counted on memory, then
    claimed in the database while its thread is busy; a read meanwhile counts nothing;
    its client leaves (the handler cancelled in the claim) and the claim is not answered
    within the rest of its bound: withdrawn, never written, the stream counts nothing
    either (session 29: it kept its count on memory and wrote the claim later, which a
    read on another worker meanwhile could count too); the next read counts it once."""
    owners = ObjectOwners(database=tmp_path / "gateway.db")

    async def run() -> tuple[object, object, object]:
        gate = threading.Event()
        held = asyncio.ensure_future(owners._call(lambda store: gate.wait(10)))
        resumed = _resumed(AZURE)
        stream: Any = object()  # a stream, relayed (not an Answer)

        async def governed() -> None:  # as gateway/pipeline.py `_governed` ends one
            try:
                await owned_answer(owners, "GET", "responses/resp_1", "key-a", resumed,
                                   stream, None)
            except BaseException:
                await owners.counted.gone("GET", "responses/resp_1", resumed, None)
                raise

        answering = asyncio.ensure_future(governed())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not answering.done()  # in its claim, the database busy
        read, answer = _read()
        reading = asyncio.ensure_future(owned_answer(
            owners, "GET", "responses/resp_1", "key-a", read, answer, None))
        for _ in range(5):
            await asyncio.sleep(0)
        answering.cancel()  # its client closed the connection
        await asyncio.wait([answering], timeout=10)
        assert answering.cancelled()
        gate.set()
        await held
        await asyncio.wait_for(reading, 10)
        await owners.written()
        noted = await owners._call(lambda store: store.counted("resp_1"))
        later, answer = _read()
        await owned_answer(owners, "GET", "responses/resp_1", "key-a", later, answer, None)
        return resumed.usage, read.usage, (noted, later.usage)

    resumed, read, (noted, later) = asyncio.run(run())
    owners.close()
    assert resumed is None  # its claim withdrawn: at most once
    assert read is None  # counted by the claim then going on
    assert noted is None  # never written
    assert later == AZURE  # counted once: by the next read


def test_a_claim_waiting_on_another_writer_reads_what_it_wrote(tmp_path: Path) -> None:
    """A claim made while another connection holds the write lock and then notes the id
    whole: the claim reads that note once it has the lock (it takes the lock before it
    reads), and is not the first. A claim that read before taking the lock would hold a
    stale snapshot: SQLite refuses its write (the read then counted on memory alone)."""
    database = tmp_path / "gw.db"
    OwnerStore.open(database).close()
    other = OwnerStore.open(database)
    other.claim_counted("resp_0", 1.0)  # the table made
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    answers: list[object] = []

    def claim() -> None:
        store = OwnerStore.open(database)
        try:
            answers.append(store.claim_counted("resp_1", 2.0))
        except sqlite3.Error as exc:
            answers.append(exc)
        finally:
            store.close()

    claimer = threading.Thread(target=claim)
    claimer.start()
    time.sleep(0.3)  # its claim waits on the lock
    holder.execute("INSERT INTO counted_usage VALUES ('resp_1', 1, 0, 0, -1, 1.5)")
    holder.execute("COMMIT")
    holder.close()
    claimer.join(30)
    other.close()
    assert answers == [(True, 0, 0, -1)]
