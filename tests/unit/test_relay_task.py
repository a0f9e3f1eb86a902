"""A stream is relayed in a task of its own (`gateway/relay.py`): cancelling the handler
(the client left) at any point still releases Azure's answer and leaves usage recorded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.normalize.stream import StreamPolicy
from azure_openai_proxy.observability.record import RequestRecord

PROMPT = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "Hi there"}]}


class _Answer:
    """An upstream answer whose body never comes: the relay waits on it until cancelled."""

    status = 200

    def __init__(self) -> None:
        self.headers: Mapping[str, str] = {"content-type": "text/event-stream"}
        self.closed = 0
        self.forever: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def read(self, limit: int) -> bytes:
        raise AssertionError("a stream is not read whole")

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        await self.forever
        yield b""

    def close(self) -> None:
        self.closed += 1

    def finish_in_background(self) -> None:
        raise AssertionError("the stream did not end")


class _Request:
    """Only what a cancelled relay may touch: the answer's start."""

    def __init__(self) -> None:
        self.started = 0

    def stream(self, status: int, headers: Mapping[str, str]) -> Any:
        self.started += 1
        return self

    async def write(self, data: bytes) -> None:
        raise AssertionError("nothing to write")


async def _cancelled_after(turns: int) -> tuple[_Answer, _Request, RequestRecord]:
    answer, request = _Answer(), _Request()
    record = RequestRecord("req-1", "POST")
    handler = asyncio.get_running_loop().create_task(relay(
        request, "chat/completions", answer, StreamPolicy(client_model="gpt-4o"),  # type: ignore[arg-type]
        "gpt-4o", True, record, body=RequestBody(PROMPT)))
    for _ in range(turns):
        await asyncio.sleep(0)  # one turn of the loop: no clock involved
    handler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await handler
    assert handler.cancelled()
    return answer, request, record


async def test_a_cancel_before_the_relay_task_ran_releases_the_answer() -> None:
    # One turn: the handler has made the relay task, which has not run yet.
    answer, request, record = await _cancelled_after(1)
    assert request.started == 0
    assert answer.closed >= 1
    assert record.stream and record.usage is not None and record.usage["estimated"] is True


async def test_a_cancel_while_relaying_releases_the_answer_once_relayed() -> None:
    answer, request, record = await _cancelled_after(3)
    assert request.started == 1
    assert answer.closed >= 1
    assert record.usage is not None and record.usage["completion_tokens"] == 0
