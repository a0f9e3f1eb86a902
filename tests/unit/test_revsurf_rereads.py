"""Review of the surfaces branch: which `POST responses` a stream counted
(`CountedUsage.counted_by_stream`, gateway/ownership.py `owned_answer`)."""

from __future__ import annotations

import asyncio

import orjson

from azure_openai_proxy.gateway.ownership import ObjectOwners, owned_answer
from azure_openai_proxy.gateway.rereads import CountedUsage
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.observability.record import RequestRecord

USAGE = {"input_tokens": 5, "output_tokens": 7}


def _response(response_id: str, background: bool) -> bytes:
    return orjson.dumps({"id": response_id, "object": "response", "background": background,
                         "status": "completed", "output": [], "usage": USAGE})


async def _post(owners: ObjectOwners, response_id: str, background: bool) -> None:
    record = RequestRecord(response_id, "POST")
    record.stream, record.usage, record.created_id = True, dict(USAGE), response_id
    await owned_answer(owners, "POST", "responses", "key-a", record,
                       Answer(200, {}, b""), None, {"model": "gpt-4o", "stream": True,
                                                    "background": background})


async def _read(owners: ObjectOwners, response_id: str) -> object:
    record = RequestRecord("read", "GET")
    record.usage = dict(USAGE)
    await owned_answer(owners, "GET", f"responses/{response_id}", "key-a", record,
                       Answer(200, {}, _response(response_id, True)), None)
    return record.usage


def test_foreground_streams_do_not_push_a_background_responses_count_out() -> None:
    """A background response's first read counted its usage; foreground streamed
    responses (the common kind, never read as background) must not fill the bounded
    table of counted ones, else the next read of the background one counts it again."""
    async def scenario() -> tuple[object, object]:
        owners = ObjectOwners()
        owners.counted = CountedUsage(capacity=4)
        first = await _read(owners, "resp_bg")  # done: counted by this read
        for n in range(8):
            await _post(owners, f"resp_fg{n}", background=False)
        return first, await _read(owners, "resp_bg")

    first, again = asyncio.run(scenario())
    assert first == USAGE
    assert again is None  # main: USAGE, counted a second time


def test_a_streamed_background_response_is_counted_by_its_stream() -> None:
    async def scenario() -> object:
        owners = ObjectOwners()
        await _post(owners, "resp_bs", background=True)
        return await _read(owners, "resp_bs")

    assert asyncio.run(scenario()) is None


def _reread(counted: CountedUsage, operation: str, background: bool = True) -> object:
    record = RequestRecord("r", "POST" if operation.endswith("/cancel") else "GET")
    record.usage = dict(USAGE)
    counted.reread(operation, record, _response("x", background))
    return record.usage


def test_a_cancel_answering_a_done_object_is_a_read_of_it() -> None:
    """A cancel answers the response or run as it is, its usage too when it was done:
    counted once, by the cancel or the read that showed it first (main: by each)."""
    counted = CountedUsage()
    assert _reread(counted, "responses/resp_1") == USAGE
    assert _reread(counted, "responses/resp_1/cancel") is None
    assert _reread(counted, "responses/resp_2/cancel") == USAGE  # done, never read
    assert _reread(counted, "responses/resp_2") is None
    assert _reread(counted, "threads/t/runs/run_1/cancel") == USAGE
    assert _reread(counted, "threads/t/runs/run_1") is None
    assert _reread(counted, "responses/resp_3/cancel", background=False) is None
    assert _reread(counted, "batches/batch_1/cancel") == USAGE  # not a generation's
