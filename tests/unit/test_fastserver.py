"""FastServer on loopback, driven with raw sockets: the bytes a client sends, the bytes
it gets back. The application is `tests.http_app.EngineTestApp`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azure_openai_proxy.http.request import FastRequest
from azure_openai_proxy.http.server import FastServer, ServerLimits, serve_fast
from tests.http_app import EngineTestApp, Events
from tests.support import bound_socket
from tests.waiting import until_async

Reply = tuple[int, dict[str, str], bytes]


@pytest.fixture
async def server() -> AsyncIterator[tuple[FastServer, Events, int]]:
    events = Events()
    sock = bound_socket()
    port = sock.getsockname()[1]
    limits = ServerLimits(head_timeout=1.0, body_timeout=1.0, keepalive_timeout=2.0)
    fast = await serve_fast(EngineTestApp(events), None, 0, limits=limits, sock=sock)
    yield fast, events, port
    fast.close()
    await fast.wait_closed()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(p[:-2] for p in parts)
    else:
        body = await reader.read()
    return status, headers, body


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


async def closed(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), 5) == b""


async def test_keep_alive_serves_several_requests_on_one_connection(server: Any) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    for n in range(3):
        writer.write(post(f"/echo?q={n}", b"hello %d" % n))
        status, headers, body = await read_reply(reader)
        assert (status, body, headers["x-query"]) == (200, b"hello %d" % n, str(n))
        assert "connection" not in headers and "date" in headers
    writer.close()


async def test_one_task_serves_a_keep_alive_connection_and_ends_with_it(server: Any) -> None:
    """The connection's task waits between requests rather than one being made per
    request; the client leaving ends it."""
    fast, _, port = server
    reader, writer = await connect(port)
    tasks = []
    for n in range(3):
        writer.write(post("/echo", b"%d" % n))
        assert (await read_reply(reader))[0] == 200
        (conn,) = fast.connections
        tasks.append(conn.task)
        assert not conn.serving
    assert tasks[0] is not None and tasks.count(tasks[0]) == 3
    writer.close()
    await asyncio.wait_for(asyncio.gather(tasks[0], return_exceptions=True), 5)
    assert tasks[0].done() and not fast.connections


async def test_an_idle_connection_keeps_no_request(server: Any) -> None:
    """Between requests the serving task holds neither the first request nor the last
    (their headers and bodies would live as long as the connection)."""
    fast, _, port = server
    reader, writer = await connect(port)
    for n in range(2):
        writer.write(post("/echo", b"%d" % n))
        assert (await read_reply(reader))[0] == 200
    (conn,) = fast.connections
    assert conn.task is not None
    held = [v for v in conn.task.get_coro().cr_frame.f_locals.values() if v is not conn]
    assert not any(isinstance(v, FastRequest) for v in held), held
    writer.close()


async def test_garbage_behind_a_busy_request_gets_its_400_after_that_answer(server: Any) -> None:
    fast, events, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE \x01\r\n\r\n")
    # The garbage is parsed while the stream is being served: its 400 waits in line.
    await until_async(lambda: any(isinstance(p, bytes) for c in fast.connections for p in c.pending))
    events.release.set()
    status, _, body = await read_reply(reader)
    assert status == 200 and body == b"data: first\n\ndata: second\n\n"
    assert (await read_reply(reader))[0] == 400
    assert await closed(reader)
    writer.close()


async def test_two_pipelined_requests_in_one_packet_answer_in_order(server: Any) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    writer.write(post("/echo", b"one") + b"GET /echo?q=two HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_reply(reader))[2] == b"one"
    status, headers, body = await read_reply(reader)
    assert (status, headers["x-query"], body) == (200, "two", b"")
    writer.close()


async def test_the_raw_path_stays_percent_encoded(server: Any) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /echo?q=a%20b HTTP/1.1\r\nHost: x\r\n\r\n")
    _, headers, _ = await read_reply(reader)
    assert headers["x-query"] == "a b" and headers["x-path"] == "/echo"
    writer.close()


async def test_chunked_body_split_at_odd_boundaries(server: Any) -> None:
    _, _events, port = server
    reader, writer = await connect(port)
    wire = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n")
    for start in range(0, len(wire), 7):
        writer.write(wire[start : start + 7])
        await writer.drain()
        await asyncio.sleep(0.001)
    status, _, body = await read_reply(reader)
    assert (status, body) == (200, b"hello world")
    writer.close()


async def test_body_chunks_give_the_body_as_it_arrives(server: Any) -> None:
    _, events, port = server
    reader, writer = await connect(port)
    writer.write(b"POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    await writer.drain()
    await until_async(lambda: events.reads)  # the handler has the first piece
    writer.write(b"5\r\ndefgh\r\n0\r\n\r\n")
    _, _, body = await read_reply(reader)
    assert orjson.loads(body) == [3, 5]
    writer.close()


async def test_expect_100_continue_is_answered_when_the_body_is_read(server: Any) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"data")
    assert (await read_reply(reader))[2] == b"data"
    writer.close()


async def test_expect_100_continue_refused_without_upload_then_closed(server: Any) -> None:
    _, _events, port = server
    reader, writer = await connect(port)
    writer.write(b"POST /reject HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    status, headers, _ = await read_reply(reader)
    assert status == 401 and headers["connection"] == "close"
    assert await closed(reader)


async def test_oversize_body_is_413_in_openai_shape(server: Any) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n")
    status, _, body = await read_reply(reader)
    assert status == 413
    assert orjson.loads(body)["error"]["message"]
    writer.close()


async def test_an_unread_body_is_discarded_and_keep_alive_survives(server: Any) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    writer.write(post("/reject", b"y" * 900) + post("/echo", b"after"))
    assert (await read_reply(reader))[0] == 401
    assert (await read_reply(reader))[2] == b"after"
    writer.close()


@pytest.mark.parametrize("wire", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
])
async def test_malformed_request_is_400_in_openai_shape(server: Any, wire: bytes) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    writer.write(wire)
    status, headers, body = await read_reply(reader)
    assert status == 400 and headers["connection"] == "close"
    assert orjson.loads(body)["error"]["type"] == "invalid_request_error"
    assert await closed(reader)


async def test_oversize_headers_are_431(server: Any) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n")
    status, _, body = await read_reply(reader)
    assert status == 431 and "error" in orjson.loads(body)


async def test_unknown_path_is_404_and_wrong_method_405_in_openai_shape(server: Any) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await read_reply(reader)
    assert status == 404 and orjson.loads(body)["error"]["code"] == "unknown_url"
    writer.write(b"DELETE /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await read_reply(reader)
    assert status == 405 and "error" in orjson.loads(body)
    writer.close()


async def test_an_unexpected_error_is_500_without_the_detail(server: Any) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /crash HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await read_reply(reader)
    assert status == 500 and b"secret" not in body
    writer.close()


async def test_a_slow_client_sending_byte_by_byte_is_served(server: Any) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    for byte in post("/echo", b"slow"):
        writer.write(bytes([byte]))
        await writer.drain()
    assert (await read_reply(reader))[2] == b"slow"
    writer.close()


async def test_a_stalled_request_head_gets_408(server: Any) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /echo HTTP/1.1\r\nHo")
    status, _, body = await read_reply(reader)
    assert status == 408 and "error" in orjson.loads(body)


async def test_an_idle_keep_alive_connection_is_closed(server: Any) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_reply(reader)
    assert await closed(reader)  # keepalive_timeout is 2 s here


async def test_stream_frames_leave_as_written(server: Any) -> None:
    _, events, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"Transfer-Encoding: chunked" in head
    first = await asyncio.wait_for(reader.readuntil(b"first\n\n\r\n"), 5)
    assert first.endswith(b"data: first\n\n\r\n")
    events.release.set()
    rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
    assert b"data: second" in rest
    writer.close()


async def test_client_leaving_mid_stream_cancels_the_handler(server: Any) -> None:
    _, events, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"first"), 5)
    writer.close()
    await asyncio.wait_for(events.cancelled.wait(), 5)


async def test_graceful_shutdown_lets_a_stream_finish() -> None:
    events = Events()
    sock = bound_socket()
    port = sock.getsockname()[1]
    fast = await serve_fast(EngineTestApp(events), None, 0, sock=sock)
    reader, writer = await connect(port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"first"), 5)
    stopping = asyncio.create_task(fast.shutdown(5))
    await until_async(lambda: sock.fileno() == -1)  # the listening socket is closed
    with pytest.raises(OSError):
        await connect(port)  # no longer accepting
    events.release.set()
    rest = await asyncio.wait_for(reader.read(), 5)
    assert b"data: second" in rest and rest.endswith(b"0\r\n\r\n")
    await asyncio.wait_for(stopping, 5)
    assert not events.cancelled.is_set()


async def test_shutdown_cancels_what_outlives_the_grace() -> None:
    events = Events()
    sock = bound_socket()
    port = sock.getsockname()[1]
    fast = await serve_fast(EngineTestApp(events), None, 0, sock=sock)
    reader, writer = await connect(port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"first"), 5)
    await asyncio.wait_for(fast.shutdown(0.2), 5)
    assert events.cancelled.is_set()
    writer.close()


async def test_startup_shutdown_and_cleanup_hooks_run() -> None:
    events = Events()
    fast = await serve_fast(EngineTestApp(events), "127.0.0.1", 0)
    assert events.calls == ["startup"]
    await fast.shutdown(0)
    assert events.calls == ["startup", "shutdown", "cleanup"]


_METHODS = st.sampled_from([b"GET", b"POST", b"PUT", b"\x00", b""])
_HEADS = st.builds(
    lambda method, path, lines, tail: method + b" " + path + b" HTTP/1.1\r\n" + b"".join(lines) + tail,
    _METHODS, st.binary(max_size=20),
    st.lists(st.binary(max_size=30).map(lambda b: b + b"\r\n"), max_size=5),
    st.sampled_from([b"\r\n", b"", b"\r\n0\r\n\r\n"]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.one_of(st.binary(max_size=300), _HEADS))
async def test_random_bytes_never_break_the_server(garbage: bytes) -> None:
    events = Events()
    sock = bound_socket()
    port = sock.getsockname()[1]
    fast = await serve_fast(EngineTestApp(events), None, 0, sock=sock,
                            limits=ServerLimits(head_timeout=1.0, body_timeout=1.0))
    try:
        reader, writer = await connect(port)
        writer.write(garbage)
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.write_eof()
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await asyncio.wait_for(reader.read(), 5)
        writer.close()
        reader, writer = await connect(port)  # still serving
        writer.write(post("/echo", b"fine"))
        assert (await read_reply(reader))[2] == b"fine"
        writer.close()
    finally:
        fast.close()
        await fast.wait_closed()


async def test_a_double_slash_target_is_a_path_not_a_host(server: Any) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET //evil/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await read_reply(reader)
    assert status == 404 and orjson.loads(body)["error"]["code"] == "unknown_url"
    writer.close()


class RecordingChannel:
    """A `Channel` whose transport records each write: the writer's contract is about
    how bytes are grouped into writes, which a socket would not show."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.transport: Any = self
        self.closing = False
        self.gone = False
        self.write_paused = False
        self.loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False  # asked once, at a stream's end

    def date(self) -> str:
        return "D"

    def get_extra_info(self, name: str) -> Any:
        return None

    def pause_body(self) -> None: ...
    def resume_body(self) -> None: ...
    def send_continue(self) -> None: ...

    async def drain(self) -> None:
        return None


async def test_a_streams_head_leaves_with_its_first_frame_or_alone_at_the_end_of_the_turn() -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    from azure_openai_proxy.http.request import FastRequest

    def request(channel: RecordingChannel) -> FastRequest:
        return FastRequest(channel, "GET", "/", CIMultiDictProxy(CIMultiDict()), True, True,
                           None, None)

    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nDate: D\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    channel = RecordingChannel()
    out = request(channel).stream(200, {"content-type": "text/event-stream"})
    await out.write(b"data: 1\n\n")  # in the same turn of the loop
    assert channel.writes == [head + b"9\r\ndata: 1\n\n\r\n"]
    await asyncio.sleep(0)  # the scheduled flush finds nothing left to send
    await out.end(b"data: [DONE]\n\n")  # the last frame and the end: one write
    assert channel.writes[1:] == [b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"]

    idle = RecordingChannel()
    request(idle).stream(200, {"content-type": "text/event-stream"})
    assert idle.writes == []
    await asyncio.sleep(0)  # no frame yet: the head is not held back past this turn
    assert idle.writes == [head]


async def test_an_error_after_prepare_is_one_clean_response_and_keep_alive_survives(server: Any) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /prepare-then-fail HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await read_reply(reader)
    assert status == 502 and "content-length" in headers
    assert b'"error"' in body  # the OpenAI-shaped error, whole
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection
    status, _, _ = await read_reply(reader)
    assert status == 200
    writer.close()


async def test_an_error_after_a_frame_left_closes_the_connection(server: Any) -> None:
    _, _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /prepare-then-fail?after=frame HTTP/1.1\r\nHost: x\r\n\r\n")
    received = await asyncio.wait_for(reader.read(), 5)  # read to EOF: the server closes
    assert received.startswith(b"HTTP/1.1 200 OK")
    assert b"data: first" in received
    assert received.count(b"HTTP/1.1") == 1  # no second response after the stream's start
    writer.close()
