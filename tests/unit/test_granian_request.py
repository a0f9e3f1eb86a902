"""The RSGI adapter (`bench/granian_request.py`) under a real granian, in this test's
event loop (granian's embedded server), on a Unix socket: the bytes a client sends, the
bytes it gets back. The application is `tests.http_app.EngineTestApp` with a few more
routes."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.importorskip("granian", reason="granian is not installed: pip install -e '.[bench]'")

from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server

from azure_openai_proxy.http.interface import Answer, HttpRequest, Reply
from bench.granian_engine import RsgiGateway
from bench.granian_request import BodyLimits
from tests.http_app import EngineTestApp, Events

Wire = tuple[int, dict[str, str], bytes]


class _App(EngineTestApp):
    """EngineTestApp plus `/framing` (framing headers of its own), `/extra` (extra
    headers on an answer and on a stream) and `/wait` (waits for `events.release`)."""

    def __init__(self, events: Events) -> None:
        super().__init__(events)
        self.routes[("GET", "/framing")] = self.framing
        self.routes[("GET", "/extra")] = self.extra
        self.routes[("GET", "/extra-stream")] = self.extra_stream
        self.routes[("GET", "/wait")] = self.wait
        self.waiting = asyncio.Event()

    async def framing(self, request: HttpRequest) -> Reply:
        return Answer(200, {"content-length": "999", "Connection": "close",
                            "transfer-encoding": "chunked", "x-a": "1"}, b"hi")

    async def extra(self, request: HttpRequest) -> Reply:
        request.extra_headers = {"x-extra": "yes"}
        return Answer(200, {"content-type": "text/plain"}, b"ok")

    async def extra_stream(self, request: HttpRequest) -> Reply:
        request.extra_headers = {"x-extra": "yes"}
        out = request.stream(200, {"content-type": "text/event-stream"})
        await out.end(b"data: only\n\n")
        return out

    async def wait(self, request: HttpRequest) -> Reply:
        self.waiting.set()
        try:
            await self.events.release.wait()
        except asyncio.CancelledError:
            self.events.cancelled.set()
            raise
        return Answer(200, {}, b"released")


@pytest.fixture
async def engine() -> AsyncIterator[tuple[Path, Events, _App]]:
    events = Events()
    with tempfile.TemporaryDirectory(prefix="gr-") as tmp:  # a short path: AF_UNIX allows 108 bytes
        path = Path(tmp) / "s"
        served = _App(events)
        listening = asyncio.Event()  # set once the application started and granian serves
        app = RsgiGateway(served, BodyLimits(stall_seconds=0.3), on_ready=listening.set)
        server = Server(app, uds=path, interface=Interfaces.RSGI, http=HTTPModes.http1,
                        websockets=False, log_enabled=False)
        task = asyncio.create_task(server.serve())
        await listening.wait()
        try:
            yield path, events, served
        finally:
            server.stop()
            await asyncio.wait_for(task, 10)


async def connect(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(path))


async def read_reply(reader: asyncio.StreamReader) -> Wire:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).strip(), 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(p[:-2] for p in parts)
    else:
        body = await asyncio.wait_for(reader.read(), 5)
    return status, headers, body


async def exchange(path: Path, wire: bytes) -> Wire:
    reader, writer = await connect(path)
    writer.write(wire)
    try:
        return await read_reply(reader)
    finally:
        writer.close()


def get(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def post(target: str, body: bytes) -> bytes:
    return f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def error_of(body: bytes) -> Any:
    return orjson.loads(body)["error"]


async def test_keep_alive_serves_several_requests_with_their_bodies_and_queries(engine: Any) -> None:
    path, events, _ = engine
    reader, writer = await connect(path)
    for n in range(3):
        writer.write(post(f"/echo?q={n}", b"hello %d" % n))
        status, headers, body = await read_reply(reader)
        assert (status, body, headers["x-query"], headers["x-path"]) == (200, b"hello %d" % n, str(n), "/echo")
    writer.close()
    assert [target for _, target, _ in events.requests] == ["/echo?q=0", "/echo?q=1", "/echo?q=2"]


async def test_a_decoded_path_is_encoded_again_so_it_stays_one_path(engine: Any) -> None:
    """granian decodes the path; a decoded "?" must not end it early, nor "%" start an
    escape that was not sent."""
    path, _, _ = engine
    status, _, body = await exchange(path, get("/a%3Fb%20c%25d?q=1"))
    assert status == 404
    assert error_of(body)["message"] == "Unknown request URL: /a%3Fb%20c%25d"


async def test_the_applications_framing_headers_are_dropped(engine: Any) -> None:
    """granian would send a content-length it is given whatever the body's length."""
    path, _, _ = engine
    reader, writer = await connect(path)
    writer.write(get("/framing"))
    status, headers, body = await read_reply(reader)
    assert (status, body, headers["content-length"], headers["x-a"]) == (200, b"hi", "2", "1")
    assert "transfer-encoding" not in headers and "connection" not in headers
    writer.write(post("/echo", b"next"))  # the connection still serves
    assert (await read_reply(reader))[2] == b"next"
    writer.close()


async def test_extra_headers_go_out_on_answers_and_streams(engine: Any) -> None:
    path, _, _ = engine
    status, headers, _ = await exchange(path, get("/extra"))
    assert (status, headers["x-extra"]) == (200, "yes")
    status, headers, body = await exchange(path, get("/extra-stream"))
    assert (status, headers["x-extra"], body) == (200, "yes", b"data: only\n\n")


async def test_an_oversize_body_is_413_in_openai_shape(engine: Any) -> None:
    path, events, _ = engine
    status, _, body = await exchange(path, post("/echo", b"x" * 1001))
    assert status == 413 and "1000 bytes" in error_of(body)["message"]
    chunked = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"258\r\n" + b"y" * 600 + b"\r\n" + b"258\r\n" + b"y" * 600 + b"\r\n0\r\n\r\n")
    status, _, body = await exchange(path, chunked)
    assert status == 413 and "1000 bytes" in error_of(body)["message"]
    assert events.reads == []


async def test_a_chunked_body_is_read_in_pieces(engine: Any) -> None:
    path, _, _ = engine
    chunked = (b"POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    status, _, body = await exchange(path, chunked)
    assert status == 200 and sum(orjson.loads(body)) == 7


async def test_a_stalled_body_is_408_in_openai_shape(engine: Any) -> None:
    path, events, _ = engine
    reader, writer = await connect(path)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    status, _, body = await read_reply(reader)
    writer.close()
    assert status == 408 and error_of(body)["code"] == "timeout"
    assert events.reads == []


async def test_stream_frames_leave_as_written_and_the_stream_ends(engine: Any) -> None:
    path, events, _ = engine
    reader, writer = await connect(path)
    writer.write(get("/stream"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    assert b"data: first" in await asyncio.wait_for(reader.readuntil(b"data: first\n\n\r\n"), 5)
    events.release.set()
    rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
    assert b"data: second" in rest
    writer.close()


async def test_a_client_leaving_mid_stream_cancels_the_handler(engine: Any) -> None:
    path, events, _ = engine
    reader, writer = await connect(path)
    writer.write(get("/stream"))
    await asyncio.wait_for(reader.readuntil(b"data: first\n\n"), 5)
    writer.transport.abort()
    await asyncio.wait_for(events.cancelled.wait(), 5)


async def test_a_client_leaving_before_the_answer_cancels_the_handler(engine: Any) -> None:
    """The gateway relies on it to close the upstream request at once."""
    path, events, app = engine
    _, writer = await connect(path)
    writer.write(get("/wait"))
    await asyncio.wait_for(app.waiting.wait(), 5)
    writer.transport.abort()
    await asyncio.wait_for(events.cancelled.wait(), 5)


async def test_an_unexpected_error_is_500_without_the_detail(engine: Any) -> None:
    path, _, _ = engine
    status, _, body = await exchange(path, get("/crash"))
    assert status == 500 and b"secret detail" not in body
    assert error_of(body)["code"] == "internal_error"


async def test_an_error_before_a_streams_first_frame_is_one_clean_answer(engine: Any) -> None:
    path, _, _ = engine
    reader, writer = await connect(path)
    writer.write(get("/prepare-then-fail"))
    status, headers, body = await read_reply(reader)
    assert status == 502 and error_of(body)["message"] == "The upstream failed."
    assert headers.get("content-type") == "application/json"
    writer.write(post("/echo", b"again"))  # keep-alive survives
    assert (await read_reply(reader))[2] == b"again"
    writer.close()


async def test_the_applications_life_cycle_hooks_run() -> None:
    events = Events()
    with tempfile.TemporaryDirectory(prefix="gr-") as tmp:
        listening = asyncio.Event()
        app = RsgiGateway(_App(events), on_ready=listening.set)
        server = Server(app, uds=Path(tmp) / "s", interface=Interfaces.RSGI,
                        http=HTTPModes.http1, websockets=False, log_enabled=False)
        task = asyncio.create_task(server.serve())
        await listening.wait()
        status, _, _ = await exchange(Path(tmp) / "s", post("/echo", b"x"))
        server.stop()
        await asyncio.wait_for(task, 10)
        await asyncio.wait_for(app.hooks_done(), 10)  # embedded, the hooks run in tasks
    assert status == 200
    assert events.calls == ["startup", "shutdown", "cleanup"]
