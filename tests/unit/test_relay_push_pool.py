"""The pushed stream relay never returns a paused connection to the pool (found by
review: a stream ending without [DONE] to a slow client left it paused).

They reuse the harness of test_relay_push.py: the real `_Connection` (llhttp behind it)
fed its reads directly, the real FastResponse, FastStream and relay()."""

from __future__ import annotations

import asyncio

from azure_openai_proxy.normalize.stream import StreamPolicy
from tests.unit.test_relay_push import Exchange, wire
from tests.unit.test_stream_steady import long_stream


async def test_a_stream_ended_without_done_to_a_slow_client_is_never_pooled_paused() -> None:
    # Azure's body ends whole (the chunked terminator) without `data: [DONE]`, and the
    # read that ends it finds the client behind: `_StreamPush.end()` flushes, `send()`
    # says the client is not reading, and the sink pauses Azure's socket on a connection
    # that is already complete. The normalizer then finishes the stream (done), so
    # relay() calls `finish_in_background()`, which releases the complete connection to
    # the pool without `read_on()` (only `close()` has it): the next request on that
    # connection never sees its answer's head.
    frames = long_stream()
    assert frames[-1].startswith(b"data: [DONE]")
    exchange = Exchange(pushed=True, policy=StreamPolicy(client_model="gpt-4o"))
    exchange.start(wire(frames[:3], end=False))
    await exchange.settle()
    for _ in range(3):
        await asyncio.sleep(0)
    exchange.channel.write_paused = True  # the client's transport is past high water
    exchange.conn.data_received(wire(frames[3:-1], end=True))  # no [DONE], then the end
    exchange.channel.resume_writing()
    assert exchange.task is not None
    await asyncio.wait_for(exchange.task, 10)
    conn = exchange.conn
    assert conn in exchange.pool.idle, "the complete keep-alive connection is pooled"
    assert not conn.reading_paused and not exchange.socket.paused, (
        "a connection went back to the pool with its socket's reading paused")
