"""A background response's stream resumed (`GET responses/{id}?stream=true`) that its
client leaves before anything was relayed records no usage: the POST's record estimated
the prompt and what its stream relayed, and a zero-token record flagged `estimated` is
a record of nothing (relay.py's CancelledError branch wrote one whether the relay task
had run or not). A response's POST stream left so is still estimated (its prompt).

The relay driven with test_relay_task's answer whose body never comes."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.observability.record import RequestRecord
from tests.unit.test_relay_task import _Answer, _Request

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
