"""A background response's usage counted once across workers and restarts: each
worker's `CountedUsage` notes what it counted in the governance database
(`counted_usage`, store/ownership.py) and a read it has not counted looks there first
(`recall`). Two `ObjectOwners` on one database are two workers (`--workers 2`); a third,
opened after the first two closed, is the gateway after a restart. Real SQLite."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from azure_openai_proxy.gateway.ownership import ObjectOwners, owned_answer
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.observability.record import RequestRecord

AZURE = {"input_tokens": 50, "output_tokens": 30, "total_tokens": 80}


async def _read(owners: ObjectOwners, response_id: str) -> object:
    """A read of the done background response through `owned_answer`: the usage its
    record keeps (None: counted already)."""
    record = RequestRecord("read", "GET")
    record.usage = dict(AZURE)
    answer = orjson.dumps({"id": response_id, "object": "response", "background": True,
                           "status": "completed", "output": [], "usage": AZURE})
    await owned_answer(owners, "GET", f"responses/{response_id}", "key-a", record,
                       Answer(200, {}, answer), None)
    await owners.written()
    return record.usage


async def _cut_post(owners: ObjectOwners, response_id: str) -> None:
    """A background stream cut after its 12th event, recorded at an estimate."""
    record = RequestRecord("post", "POST")
    record.stream, record.created_id, record.sequence = True, response_id, 12
    record.usage = {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30,
                    "estimated": True}
    owners.counted.answered("POST", "responses", record, None,
                            {"background": True, "stream": True})
    await owners.written()


def test_a_read_counts_once_across_workers_and_a_restart(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"

    async def scenario() -> list[object]:
        one, two = ObjectOwners(database=database), ObjectOwners(database=database)
        seen = [await _read(one, "resp_1"), await _read(two, "resp_1"),
                await _read(one, "resp_1")]
        one.close()
        two.close()
        restarted = ObjectOwners(database=database)
        seen.append(await _read(restarted, "resp_1"))
        restarted.close()
        return seen

    # main: [AZURE, AZURE, None, AZURE] (the second worker's and the restart's again)
    assert asyncio.run(scenario()) == [AZURE, None, None, None]


def test_an_estimate_on_one_worker_is_taken_off_on_another_and_after_a_restart(
        tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"

    async def scenario() -> list[object]:
        one, two = ObjectOwners(database=database), ObjectOwners(database=database)
        await _cut_post(one, "resp_2")  # estimated on one, read on two: less it
        seen = [await _read(two, "resp_2"), await _read(one, "resp_2")]
        await _cut_post(one, "resp_3")
        one.close()
        two.close()
        restarted = ObjectOwners(database=database)
        seen += [await _read(restarted, "resp_2"), await _read(restarted, "resp_3")]
        restarted.close()
        return seen

    rest = {"input_tokens": 30, "output_tokens": 20, "total_tokens": 50}
    assert asyncio.run(scenario()) == [rest, None, None, rest]


def test_without_a_database_each_worker_counts_once(tmp_path: Path) -> None:
    async def scenario() -> list[object]:
        one, two = ObjectOwners(), ObjectOwners()
        return [await _read(one, "resp_1"), await _read(one, "resp_1"),
                await _read(two, "resp_1")]

    assert asyncio.run(scenario()) == [AZURE, None, AZURE]  # as documented (rereads.py)


def test_a_runs_usage_counts_once_across_workers(tmp_path: Path) -> None:
    """An Assistants run (its answer has no `background` field: always counted at a
    read) likewise; a foreground response's reads count nothing anywhere."""
    database = tmp_path / "gateway.db"

    async def read(owners: ObjectOwners, operation: str, answer: dict[str, object]) -> object:
        record = RequestRecord("read", "GET")
        record.usage = dict(AZURE)
        await owned_answer(owners, "GET", operation, "key-a", record,
                           Answer(200, {}, orjson.dumps(answer)), None)
        await owners.written()
        return record.usage

    async def scenario() -> list[object]:
        one, two = ObjectOwners(database=database), ObjectOwners(database=database)
        run = {"id": "run_1", "object": "thread.run", "status": "completed", "usage": AZURE}
        fore = {"id": "resp_9", "object": "response", "background": False, "usage": AZURE}
        seen = [await read(one, "threads/thread_1/runs/run_1", run),
                await read(two, "threads/thread_1/runs/run_1", run),
                await read(one, "responses/resp_9", fore),
                await read(two, "responses/resp_9", fore)]
        one.close()
        two.close()
        return seen

    assert asyncio.run(scenario()) == [AZURE, None, None, None]
