"""`H2Transport` against servers that misbehave (issue 15's review of the HTTP/2
transport): each a reproduction of a finding, turned into a test. One stream's failure
fails that stream only; a protocol violation ends the connection with an Upstream
error, never a hang; nothing the server does grows a buffer or a loop without bound."""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import pytest

from azure_openai_proxy.errors import UpstreamHeadTooLarge, UpstreamPoolTimeout, UpstreamUnreachable
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.h2 import H2Response, H2Transport
from azure_openai_proxy.upstream.h2.frames import headers_frames
from azure_openai_proxy.upstream.transport import UpstreamRequest, UpstreamStreamBroken
from tests.e2e.h2raw import RawH2Server, frame, head_block
from tests.e2e.h2server import ScriptedH2Server


def _transport(**settings: Any) -> H2Transport:
    settings = {"read_timeout": 2.0, "connect_timeout": 2.0, "pool_timeout": 1.0, **settings}
    return H2Transport(UpstreamSettings(http2=True, **settings))


def _get(url: str, body: Any = None, method: str = "GET") -> UpstreamRequest:
    return UpstreamRequest(method, url, {}, body)


# -- 1: a server that takes no stream on a new connection --------------------------------

async def test_a_server_allowing_no_streams_is_not_reconnected_to_without_end() -> None:
    server = ScriptedH2Server(max_streams=0)
    url = await server.start()
    transport = _transport()
    with pytest.raises(UpstreamUnreachable):
        await asyncio.wait_for(transport.send(_get(url + "/ok")), 5)
    assert server.connections <= 4
    await transport.close()
    await server.stop()


@pytest.mark.parametrize("pool_size", [0, 2])
async def test_a_goaway_at_once_is_not_reconnected_to_without_end(pool_size: int) -> None:
    def goaway(transport: asyncio.Transport) -> None:
        transport.write(frame(7, 0, 0, struct.pack(">II", 0, 0)))
    server = RawH2Server(lambda sid: b"", goaway)
    url = await server.start()
    transport = _transport(pool_size=pool_size)
    with pytest.raises(UpstreamUnreachable):
        await asyncio.wait_for(transport.send(_get(url + "/x")), 5)
    assert server.connections <= 4
    await transport.close()
    await server.stop()


# -- 2: an exception in one stream's frames --------------------------------------------

async def test_a_bad_gzip_body_fails_its_stream_only() -> None:
    def script(sid: int) -> bytes:
        if sid != 3:  # a healthy stream, still streaming
            return frame(1, 4, sid, head_block((":status", "200"))) + frame(0, 0, sid, b"data: 1")
        return (frame(1, 4, sid, head_block((":status", "200"), ("content-encoding", "gzip")))
                + frame(0, 1, sid, b"this is not gzip"))
    server = RawH2Server(script)
    url = await server.start()
    transport = _transport()
    healthy = await transport.send(_get(url + "/healthy"))
    chunks = healthy.chunks()
    assert await chunks.__anext__() == b"data: 1"
    bad = await transport.send(_get(url + "/bad"))
    with pytest.raises(UpstreamStreamBroken):
        await bad.read(1000)
    third = await transport.send(_get(url + "/healthy"))  # the connection serves on
    assert await anext(third.chunks()) == b"data: 1"
    assert server.connections == 1
    assert [sid for _, _, sid, payload in server.frames(3)] == [3]  # RST_STREAM
    healthy.close()
    third.close()
    await transport.close()
    await server.stop()


# -- 3: an answer before the whole request body ----------------------------------------

async def test_an_early_answer_to_an_upload_closes_the_stream_on_the_server() -> None:
    server = ScriptedH2Server(max_streams=2)  # `/ok` answers before the body is in
    url = await server.start()
    transport = _transport()
    for _ in range(4):  # on one connection: no stream left half-open on the server
        response = await transport.send(_get(url + "/ok", b"x" * (200 * 1024), "POST"))
        assert await response.read(1000) == b"hello"
        response.close()
    for _ in range(100):  # the last reset on its way
        if len(server.resets) == 4:
            break
        await asyncio.sleep(0.02)
    assert server.connections == 1
    assert [stream for stream, _ in server.resets] == [1, 3, 5, 7]
    assert all(not protocol.conn.open_inbound_streams for protocol in server.protocols)
    await transport.close()
    await server.stop()


async def test_a_callable_body_is_read_no_more_once_answered() -> None:
    server = ScriptedH2Server()
    url = await server.start()
    transport = _transport()
    pieces_read = 0

    async def pieces() -> Any:
        nonlocal pieces_read
        for _ in range(100):
            pieces_read += 1
            yield b"y" * 50_000
            await asyncio.sleep(0.01)
    response = await transport.send(_get(url + "/ok", lambda: pieces(), "POST"))
    assert await response.read(1000) == b"hello"
    assert pieces_read < 10
    await transport.close()
    await server.stop()


# -- 5: DATA before HEADERS ----------------------------------------------------------

async def test_a_body_without_a_head_fails_the_request() -> None:
    server = RawH2Server(lambda sid: frame(0, 1, sid, b"x"))
    url = await server.start()
    transport = _transport(read_timeout=1.0)
    with pytest.raises(UpstreamUnreachable):
        await asyncio.wait_for(transport.send(_get(url + "/x")), 5)
    assert transport.connections_in_use() == 0
    await transport.close()
    await server.stop()


# -- 8: a head too large ---------------------------------------------------------------

@pytest.mark.parametrize("value", [150_000, 65_500])  # past 128 KiB; past 64 KiB decoded
async def test_a_head_too_large_fails_its_stream_only(value: int) -> None:
    def script(sid: int) -> bytes:
        if sid != 3:
            return frame(1, 4, sid, head_block((":status", "200"))) + frame(0, 0, sid, b"data: 1")
        block = head_block((":status", "200"), ("x-big", "a" * value), huffman=False)
        return headers_frames(sid, block, True, 16384)
    server = RawH2Server(script)
    url = await server.start()
    transport = _transport()
    healthy = await transport.send(_get(url + "/healthy"))
    chunks = healthy.chunks()
    assert await chunks.__anext__() == b"data: 1"
    with pytest.raises(UpstreamHeadTooLarge):
        await transport.send(_get(url + "/big-head"))
    third = await transport.send(_get(url + "/healthy"))  # the connection serves on
    assert await anext(third.chunks()) == b"data: 1"
    assert server.connections == 1 and not server.frames(7)  # no GOAWAY
    healthy.close()
    third.close()
    await transport.close()
    await server.stop()


# -- 13: malformed answers -----------------------------------------------------------

@pytest.mark.parametrize("fields", [
    [(":status", "200"), ("x-request-id", "a\r\nset-cookie: x=1")],
    [(":status", "200"), ("x-request-id", "a\x00")],
    [(":status", "200"), ("", "empty name")],
    [(":status", "2000")],
    [(":status", "200"), (":path", "/")],
])
async def test_a_malformed_head_fails_its_stream_only(fields: list[tuple[str, str]]) -> None:
    def script(sid: int) -> bytes:
        if sid == 1:
            return frame(1, 4, sid, head_block(*fields)) + frame(0, 1, sid, b"{}")
        return frame(1, 4, sid, head_block((":status", "200"))) + frame(0, 1, sid, b"ok")
    server = RawH2Server(script)
    url = await server.start()
    transport = _transport()
    with pytest.raises(UpstreamUnreachable):
        await transport.send(_get(url + "/x"))
    response = await transport.send(_get(url + "/x"))
    assert await response.read(100) == b"ok"
    assert server.connections == 1
    await transport.close()
    await server.stop()


# -- 9: an upload paced by the server's window -------------------------------------------

async def test_an_upload_paced_by_the_window_is_not_timed_out_while_it_moves() -> None:
    server = ScriptedH2Server(ack_delay=0.1)  # each frame credited 0.1 s after it came
    url = await server.start()
    transport = _transport(read_timeout=0.5)
    body = b"x" * (400 * 1024)  # ~0.7 s at a 64 KiB window per 0.1 s
    started = time.monotonic()
    response = await transport.send(_get(url + "/echo", body, "POST"))
    assert await response.read(100) == str(len(body)).encode()
    assert time.monotonic() - started > 0.5  # longer than the read timeout
    assert server.bodies == [body]
    await transport.close()
    await server.stop()


@pytest.mark.parametrize(("frames", "whole"), [
    ([frame(0, 1, 1, b'{"trunc')], False),  # shorter than its content-length
    ([frame(0, 0, 1, b"x" * 10), frame(0, 1, 1, b"y")], False),  # longer
    ([frame(0, 0, 1, b"x" * 5), frame(0, 1, 1, b"y" * 5)], True),
    ([frame(0, 0x9, 1, b"\x03" + b"x" * 10 + b"pad")], True),  # padded: padding not counted
])
async def test_a_body_not_as_long_as_its_content_length_is_broken(
        frames: list[bytes], whole: bool) -> None:
    head = head_block((":status", "200"), ("content-length", "10"))
    server = RawH2Server(lambda sid: frame(1, 4, sid, head) + b"".join(frames))
    url = await server.start()
    transport = _transport()
    response = await transport.send(_get(url + "/x"))
    if whole:
        assert len(await response.read(100)) == 10
    else:
        with pytest.raises(UpstreamStreamBroken):
            await response.read(100)
    await transport.close()
    await server.stop()


# -- 14: requests waiting for room, at pool_size connections all full --------------------

async def test_a_request_waiting_for_room_is_served_before_a_later_one() -> None:
    server = ScriptedH2Server(max_streams=1)
    url = await server.start()
    transport = _transport(pool_size=1, pool_timeout=5.0)
    held = await transport.send(_get(url + "/stall"))  # the one stream there is
    first = asyncio.create_task(transport.send(_get(url + "/first")))
    await asyncio.sleep(0.05)  # waiting for room
    later = asyncio.create_task(transport.send(_get(url + "/later")))  # runs before...
    held.close()  # ...the waiter wakes to the room this frees
    for task in (first, later):
        response = await asyncio.wait_for(task, 5)
        assert await response.read(100) == b"hello"
        response.close()
    assert [path for _, path in server.requests] == ["/stall", "/first", "/later"]
    await transport.close()
    await server.stop()


async def test_a_waiter_keeps_its_deadline_while_others_take_the_room() -> None:
    server = ScriptedH2Server(max_streams=1)
    url = await server.start()
    transport = _transport(pool_size=1, pool_timeout=0.5)
    held = await transport.send(_get(url + "/stall"))
    waiter = asyncio.create_task(transport.send(_get(url + "/waiting")))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(UpstreamPoolTimeout):  # not served: at 0.5 s, whatever happened
        await asyncio.wait_for(waiter, 5)
    assert time.monotonic() - started < 1.0
    held.close()
    await transport.close()
    await server.stop()


async def test_a_sink_that_raises_fails_its_stream_only() -> None:
    def script(sid: int) -> bytes:
        return frame(1, 4, sid, head_block((":status", "200"))) + frame(0, 0, sid, b"data: 1")
    server = RawH2Server(script)
    url = await server.start()
    transport = _transport()
    first = await transport.send(_get(url + "/x"))
    second = await transport.send(_get(url + "/x"))

    class Raising:
        def feed(self, data: bytes) -> None:
            if data == b"more":
                raise RuntimeError("a sink's bug")

        def flush(self) -> None: ...

        def end(self) -> None: ...

        def fail(self, error: Exception) -> None:
            raise RuntimeError("and again")
    assert isinstance(first, H2Response)
    first.relay(Raising())  # type: ignore[arg-type]
    server_frames = len(server.log)
    # Two frames at once: the first stream's (its sink raises), the second's after it.
    writer = server.writers[0]
    writer.write(frame(0, 0, 1, b"more") + frame(0, 1, 3, b" and the end"))
    assert await asyncio.wait_for(second.read(100), 5) == b"data: 1 and the end"
    assert server.connections == 1 and len(server.log) > server_frames  # RST_STREAM 1
    assert (3, 0, 1) in [(kind, flags, sid) for kind, flags, sid, _ in server.log]
    await transport.close()
    await server.stop()
