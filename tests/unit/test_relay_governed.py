"""A governed stream (the request wrapped in `LimitedRequest`, gateway/limitheaders.py)
is pushed as an ungoverned one is (gateway/relay.py, `_StreamPush`, from the handler's
task, with no task of its own), with the key's
limits on its head instead of Azure's. The upstream connection and the client's are
those of test_relay_push.py: the real FastResponse, FastStream and relay()."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.gateway.limitheaders import LimitedRequest
from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.http.interface import ClientDisconnected
from azure_openai_proxy.http.request import FastRequest
from azure_openai_proxy.normalize.stream import StreamPolicy
from azure_openai_proxy.upstream.fast import FastResponse
from tests.unit.test_relay_push import PROMPT, Exchange, Pulled, wire
from tests.unit.test_stream_steady import long_stream

AZURE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
              b"x-ratelimit-remaining-requests: 999\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")


class KeyLimits:
    """A key's admission as the relay sees it (governance/ratelimit.py `Admission`)."""

    head_lines = b"x-ratelimit-limit-requests: 10\r\nx-ratelimit-remaining-requests: 9\r\n"

    @property
    def headers(self) -> dict[str, str]:
        return {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "9"}


class GovernedExchange(Exchange):
    """`Exchange` with the client's request wrapped as the pipeline wraps a governed one."""

    def start(self, first: bytes) -> None:
        self.conn.data_received(self.head + first)
        response = FastResponse(self.owner, self.conn)
        answer: Any = response if self.pushed else Pulled(response)
        request = FastRequest(self.channel, "POST", "/v1/chat/completions",
                              CIMultiDictProxy(CIMultiDict()), True, True, None, None)
        self.task = asyncio.get_running_loop().create_task(relay(
            LimitedRequest(request, KeyLimits.head_lines), "chat/completions", answer, self.policy,
            self.policy.client_model, self.policy.keep_azure_fields, self.record,
            body=RequestBody(PROMPT)))


async def test_a_governed_stream_is_pushed_with_the_keys_limits_on_its_head() -> None:
    policy = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
    frames = long_stream()
    reads = [wire(frames[:3], end=False), wire(frames[3:])]

    exchange = GovernedExchange(pushed=True, policy=policy, head=AZURE_HEAD)
    exchange.start(reads[0])
    await exchange.settle()
    # Pushed: the upstream connection hands its reads to the relay's sink, and relay()
    # awaits the stream in the handler's own task (no task of its own, which costs a
    # task and a wake-up per stream).
    assert exchange.conn.sink is not None
    assert asyncio.all_tasks() - {asyncio.current_task()} == {exchange.task}
    exchange.conn.data_received(reads[1])
    assert exchange.task is not None
    await asyncio.wait_for(exchange.task, 5)
    governed = b"".join(exchange.channel.writes)

    pulled = GovernedExchange(pushed=False, policy=policy, head=AZURE_HEAD)
    assert governed == await pulled.run(reads)  # the same bytes as the pulled path's
    head = governed.split(b"\r\n\r\n", 1)[0].lower()
    assert b"x-ratelimit-limit-requests: 10" in head
    assert b"x-ratelimit-remaining-requests: 9" in head and b"999" not in head
    assert governed.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    usage = exchange.record.usage
    assert usage is not None and not usage.get("estimated")


async def test_a_governed_client_that_leaves_closes_azure_and_usage_is_estimated() -> None:
    # Pushed in the handler's task: a client gone mid-stream still closes Azure's answer
    # and leaves an estimated usage for the pipeline to settle (its `finally` releases
    # the parallel slot: tests/e2e/test_virtual_keys.py, on the pushed path since).
    policy = StreamPolicy(client_model="gpt-4o")
    frames = long_stream()
    exchange = GovernedExchange(pushed=True, policy=policy, head=AZURE_HEAD)
    exchange.start(wire(frames[:3], end=False))
    await exchange.settle()
    assert exchange.conn.sink is not None  # pushed
    exchange.channel.lose()
    exchange.conn.data_received(wire(frames[3:5], end=False))
    assert exchange.task is not None
    with pytest.raises(ClientDisconnected):
        await asyncio.wait_for(exchange.task, 10)
    assert exchange.socket.closed and exchange.conn.sink is None
    usage = exchange.record.usage
    assert usage is not None and usage["estimated"] is True and exchange.record.stream


async def test_a_governed_stream_cancelled_mid_stream_closes_azure_and_estimates() -> None:
    # The server cancels the handler when the client's connection is lost.
    policy = StreamPolicy(client_model="gpt-4o")
    frames = long_stream()
    exchange = GovernedExchange(pushed=True, policy=policy, head=AZURE_HEAD)
    exchange.start(wire(frames[:3], end=False))
    await exchange.settle()
    assert exchange.task is not None and exchange.conn.sink is not None
    exchange.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await exchange.task
    assert exchange.socket.closed and exchange.conn.sink is None
    usage = exchange.record.usage
    assert usage is not None and usage["estimated"] is True and exchange.record.stream
