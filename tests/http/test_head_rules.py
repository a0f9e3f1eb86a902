"""RFC 9112's rules for a request head and a chunked body: each refusal is one
OpenAI-shaped answer with the right status, then the connection closes; nothing is
logged as an error."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
import pytest

from tests.http.engine import chunked, engine, read_reply, rest

H = b"Host: x\r\n"


@pytest.mark.parametrize(("wire", "status"), [
    # Transfer codings: chunked must be last and once; others are not implemented.
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    # Framing that two parsers could read two ways.
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello", 400),
    # Host: exactly one in HTTP/1.1, and a host.
    (b"GET /echo HTTP/1.1\r\n\r\n", 400),
    (b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET /echo HTTP/1.1\r\nHost: a, b\r\n\r\n", 400),
    (b"GET /echo HTTP/1.0\r\nHost: a b\r\n\r\n", 400),
    # Targets: a path only (origin-form).
    (b"GET http://x/echo HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # asterisk-form is OPTIONS's only
    (b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 405),
    # Versions.
    (b"GET /echo HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET /echo HTTP/0.9\r\nHost: x\r\n\r\n", 505),
    (b"GET /echo HTTP/1.2\r\nHost: x\r\n\r\n", 505),
    (b"GET /echo HTTP/3.0\r\nHost: x\r\n\r\n", 505),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
])
async def test_a_head_against_the_rules_is_refused_once(wire: bytes, status: int,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with engine() as e:
        reader, writer = await e.connect()
        writer.write(wire + b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        got, headers, body = await read_reply(reader)
        assert (got, headers["connection"]) == (status, "close")
        assert orjson.loads(body)["error"]["message"]
        assert await rest(reader) == b""  # one answer, nothing for what followed
        assert e.events.requests == []  # the handler never saw it
        writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_http_1_0_without_host_is_served() -> None:
    async with engine() as e:
        reader, writer = await e.connect()
        writer.write(b"GET /echo?q=old HTTP/1.0\r\n\r\n")
        status, headers, _ = await read_reply(reader)
        assert (status, headers["x-query"]) == (200, "old")
        writer.close()


BAD_BODIES = {
    "zz size": b"zz\r\nhello\r\n0\r\n\r\n",
    "size overflow": b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "negative size": b"-5\r\nhello\r\n0\r\n\r\n",
    "LF-only lines": b"5\nhello\n0\n\n",
    "LF after data": b"5\r\nhello\n0\r\n\r\n",
    "100 KB trailer": b"5\r\nhello\r\n0\r\nX-Trailer: " + b"t" * 100_000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("split", ["one packet", "body after the handler started"])
@pytest.mark.parametrize("name", list(BAD_BODIES))
async def test_a_malformed_chunked_body_gets_exactly_one_400(
        name: str, split: str, caplog: pytest.LogCaptureFixture) -> None:
    """Whole, or after the handler (`/chunks`) has read the body's first piece."""
    caplog.set_level(logging.INFO)
    async with engine() as e:
        reader, writer = await e.connect()
        head = chunked("/chunks", b"")
        if split == "one packet":
            writer.write(head + BAD_BODIES[name])
        else:
            writer.write(head + b"3\r\nabc\r\n")
            await writer.drain()
            await asyncio.wait_for(e.events.body_read.wait(), 5)  # the handler is reading
            writer.write(BAD_BODIES[name])
        received = await rest(reader)
        assert received.count(b"HTTP/1.1 ") == 1, received[:300]
        assert received.startswith(b"HTTP/1.1 400 ")
        body = received.partition(b"\r\n\r\n")[2]
        assert orjson.loads(body)["error"]["type"] == "invalid_request_error"
        writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_trailer_line_that_never_ends_is_refused_without_waiting_for_it() -> None:
    """httptools holds a header line in memory until it ends: a trailer line that does
    not end is cut past the trailer limit (64 KB, give or take one read of the socket),
    not at the body deadline."""
    async with engine(body_timeout=30) as e:
        reader, writer = await e.connect()
        writer.write(chunked("/echo", b"5\r\nhello\r\n0\r\nX-Trailer: "))
        with contextlib.suppress(ConnectionError):
            for _ in range(16):  # 1 MB of one header line, in pieces
                writer.write(b"t" * 65536)
                await writer.drain()
        received = await rest(reader, wait=5)
        assert received.startswith(b"HTTP/1.1 400 ") and received.count(b"HTTP/1.1 ") == 1
        writer.close()


async def test_a_trailer_is_judged_alone_not_with_its_head() -> None:
    """A trailer's fields count against the trailer's limits (128 fields, 64 KB), not
    the head's: a head of 100 fields (40 KB) with a trailer of 30 (30 KB), each within
    its own limits, was refused as a trailer too large. 129 trailer fields still are."""
    fields = b"".join(b"X-H%d: %b\r\n" % (i, b"h" * 400) for i in range(100))
    trailer = b"".join(b"X-T%d: %b\r\n" % (i, b"t" * 1000) for i in range(30))
    async with engine() as e:
        reader, writer = await e.connect()
        writer.write(chunked("/echo", b"5\r\nhello\r\n0\r\n" + trailer + b"\r\n",
                             fields.decode()))
        assert (await read_reply(reader))[::2] == (200, b"hello")
        many = b"".join(b"X-T%d: t\r\n" % i for i in range(129))
        writer.write(chunked("/echo", b"5\r\nhello\r\n0\r\n" + many + b"\r\n"))
        assert (await rest(reader)).startswith(b"HTTP/1.1 400 ")
        writer.close()
