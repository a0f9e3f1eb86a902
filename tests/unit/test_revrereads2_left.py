"""A request whose handler raised after its answer showed Azure's whole usage of a
background response (its client left a background stream after `response.completed`
was read, or a resumed one's end) counts that usage when the governance database is
answering (gateway/rereads.py `left`, `gone`). Was (rereads2): `left` withdrew every
such claim whatever the database did, so the usage was counted by nothing until a read
that may never come: a client leaving at a background stream's end was never billed.

Real SQLite; two `ObjectOwners` on one file are two workers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from azure_openai_proxy.gateway.ownership import ObjectOwners, owned_answer
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.rereads import CountedSend
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.observability.record import RequestRecord

AZURE = {"input_tokens": 50, "output_tokens": 30, "total_tokens": 80}
BACKGROUND = {"model": "gpt-4o", "input": "hi", "background": True, "stream": True}


def _streamed_to_usage() -> RequestRecord:
    """A background `POST responses` stream that showed Azure's usage, then raised."""
    record = RequestRecord("post", "POST")
    record.stream, record.usage, record.created_id = True, dict(AZURE), "resp_1"
    return record


async def _read(owners: ObjectOwners) -> Any:
    record = RequestRecord("read", "GET")
    record.usage = dict(AZURE)
    answer = orjson.dumps({"id": "resp_1", "object": "response", "background": True,
                           "status": "completed", "usage": AZURE})
    await owned_answer(owners, "GET", "responses/resp_1", "key-a", record,
                       Answer(200, {}, answer), None)
    return record.usage


def test_a_background_stream_left_at_its_end_counts_its_usage_once(tmp_path: Path) -> None:
    database = tmp_path / "gw.db"

    async def scenario() -> tuple[Any, Any, Any, Any]:
        one, two = ObjectOwners(database=database), ObjectOwners(database=database)
        await one.get("warm")
        await two.get("warm")
        record = _streamed_to_usage()
        await one.counted.gone("POST", "responses", record, BACKGROUND)  # as the pipeline does
        await one.written()
        noted = await two._call(lambda store: store.counted("resp_1"))
        later = [await _read(two), await _read(one)]
        one.close()
        two.close()
        return record.usage, noted, later[0], later[1]

    left, noted, on_two, on_one = asyncio.run(scenario())
    assert left == AZURE  # rereads2: None, and nothing noted: never billed without a read
    assert noted == (True, 0, 0, -1)
    assert (on_two, on_one) == (None, None)  # counted once


def test_a_static_keys_background_stream_left_at_its_end_counts_its_usage_once(
        tmp_path: Path) -> None:
    """`CountedSend`'s send raising after the stream showed Azure's usage: its claim is
    awaited (`gone`), as a read's is, before the record is written."""
    database = tmp_path / "gw.db"

    async def scenario() -> tuple[Any, Any, Any]:
        one, two = ObjectOwners(database=database), ObjectOwners(database=database)
        await one.get("warm")
        record = _streamed_to_usage()

        async def send(*_: Any) -> Any:
            raise ConnectionResetError("the client left at the stream's end")

        request: Any = type("Request", (), {"method": "POST", "query_string": ""})()
        target: Any = type("Target", (), {"operation": "responses"})()
        body = RequestBody(BACKGROUND, orjson.dumps(BACKGROUND))
        caller: Any = None
        with pytest.raises(ConnectionResetError):
            await CountedSend(send, one.counted).send(request, target, caller, body, record,
                                                      (caller, None))
        noted = await two._call(lambda store: store.counted("resp_1"))
        on_two = await _read(two)
        one.close()
        two.close()
        return record.usage, noted, on_two

    left, noted, on_two = asyncio.run(scenario())
    assert left == AZURE
    assert noted == (True, 0, 0, -1)
    assert on_two is None
