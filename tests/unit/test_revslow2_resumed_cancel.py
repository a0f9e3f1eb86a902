"""A background response's stream resumed (`GET responses/{id}?stream=true`) that its
client leaves before anything was relayed records no usage: the POST's record estimated
the prompt and what its stream relayed, and a zero-token record flagged `estimated` is
a record of nothing (relay.py's CancelledError branch wrote one whether the relay task
had run or not). A response's POST stream left so is still estimated (its prompt). One
that relayed a picture (the image tool's) and no text is estimated, flagged so.

The relay driven with test_relay_task's answer whose body never comes, or one that
sends a few events and ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping

import orjson
import pytest

from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.rereads import CountedUsage
from azure_openai_proxy.governance.toolusage import IMAGE_GEN
from azure_openai_proxy.observability.record import RequestRecord
from tests.unit.test_relay_task import _Answer, _Request
from tests.unit.test_revsurf_rereads import USAGE, _reread

_PROMPT = {"model": "gpt-4o", "input": "Hi there", "stream": True, "background": True}


async def _left(method: str, operation: str, turns: int) -> RequestRecord:
    """The record of a Responses stream whose client left after `turns` of the loop."""
    answer, request = _Answer(), _Request()
    record = RequestRecord("req-1", method)
    body = RequestBody(_PROMPT) if method == "POST" else None
    handler = asyncio.get_running_loop().create_task(relay(
        request, operation, answer, None, None, True, record,  # type: ignore[arg-type]
        body=body))
    for _ in range(turns):
        await asyncio.sleep(0)  # one turn of the loop: no clock involved
    handler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await handler
    assert handler.cancelled() and answer.closed >= 1
    assert request.started == (turns > 1)  # 1: the relay task had not run
    return record


@pytest.mark.parametrize("turns", [1, 3], ids=["before the relay ran", "while relaying"])
async def test_a_resumed_stream_left_with_nothing_relayed_records_nothing(turns: int) -> None:
    record = await _left("GET", "responses/resp_1", turns)
    assert record.stream
    assert record.usage is None  # main: a zero-token usage flagged estimated


@pytest.mark.parametrize("turns", [1, 3], ids=["before the relay ran", "while relaying"])
async def test_a_responses_post_left_so_is_still_estimated(turns: int) -> None:
    record = await _left("POST", "responses", turns)
    assert record.usage is not None and record.usage["estimated"] is True
    assert record.usage["prompt_tokens"] > 0 and record.usage["completion_tokens"] == 0


class _Ended:
    """An upstream stream that sends `events` and ends (broken off: no final event)."""

    status = 200

    def __init__(self, events: list[dict[str, object]]) -> None:
        self.headers = {"content-type": "text/event-stream"}
        self._chunks = [b"event: %s\ndata: %s\n\n" % (str(e["type"]).encode(), orjson.dumps(e))
                        for e in events]

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        for chunk in self._chunks:
            yield chunk

    def close(self) -> None:
        pass


class _Client:
    """The client's side of the stream: what was written, and its end."""

    def __init__(self) -> None:
        self.headers: Mapping[str, str] = {}
        self.written: list[bytes] = []

    def stream(self, status: int, headers: Mapping[str, str]) -> _Client:
        return self

    async def write(self, data: bytes) -> None:
        self.written.append(data)

    async def end(self, tail: bytes = b"") -> None:
        self.written.append(tail)


_PICTURE = {"type": "response.output_item.done", "sequence_number": 4, "output_index": 0,
            "item": {"id": "ig_1", "type": "image_generation_call", "status": "completed",
                     "quality": "low", "size": "1024x1024", "result": "aGk="}}


async def test_a_resumed_stream_broken_off_after_a_picture_is_estimated() -> None:
    # A picture relayed and no text: the tool's part is estimated, and the record says
    # so; without the flag `restreamed` took it for Azure's usage and marked the
    # response counted, so the read after it dropped the response's whole usage.
    client, record = _Client(), RequestRecord("req-1", "GET")
    await relay(client, "responses/resp_1", _Ended([_PICTURE]), None, None, True,  # type: ignore[arg-type]
                record)
    assert any(_PICTURE["item"]["id"].encode() in data for data in client.written)  # type: ignore[index]
    usage = record.usage
    assert usage is not None and usage[IMAGE_GEN]["output_tokens"] > 0  # the picture
    assert usage.get("estimated") is True  # main: no flag
    counted = CountedUsage()
    counted.restreamed("responses/resp_1", record)
    assert _reread(counted, "responses/resp_1") == USAGE  # a later read still counts it
