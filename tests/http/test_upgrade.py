"""`Upgrade` (h2c from `curl --http2`, or any other) is not performed: the request is
an ordinary HTTP/1.1 request, body intact, and the connection goes on serving."""

from __future__ import annotations

from tests.http.engine import engine, read_reply

H2C = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"


async def test_an_h2c_upgrade_request_keeps_its_body() -> None:
    async with engine() as e:
        reader, writer = await e.connect()
        body = b'{"model":"gpt-4o","messages":[]}'
        writer.write(f"POST /echo HTTP/1.1\r\nHost: x\r\n{H2C}Content-Length: {len(body)}\r\n\r\n"
                     .encode() + body)
        status, headers, got = await read_reply(reader)
        assert (status, got) == (200, body)
        assert "upgrade" not in headers and headers.get("connection") != "upgrade"
        writer.write(b"GET /echo?q=next HTTP/1.1\r\nHost: x\r\n\r\n")  # still HTTP/1.1
        assert (await read_reply(reader))[1]["x-query"] == "next"
        writer.close()


async def test_an_upgrade_request_with_a_chunked_body_and_one_pipelined_behind_it() -> None:
    async with engine() as e:
        reader, writer = await e.connect()
        writer.write(f"POST /echo HTTP/1.1\r\nHost: x\r\n{H2C}Transfer-Encoding: chunked\r\n\r\n"
                     .encode() + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                     + b"GET /echo?q=after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_reply(reader))[2] == b"hello world"
        assert (await read_reply(reader))[1]["x-query"] == "after"
        writer.close()


async def test_an_upgrade_request_whose_body_comes_later() -> None:
    async with engine() as e:
        reader, writer = await e.connect()
        writer.write(f"POST /echo HTTP/1.1\r\nHost: x\r\n{H2C}Content-Length: 5\r\n\r\n".encode())
        await writer.drain()
        writer.write(b"he")
        await writer.drain()
        writer.write(b"llo")
        assert (await read_reply(reader))[2] == b"hello"
        writer.close()


async def test_an_upgrade_request_without_a_body_then_the_next() -> None:
    async with engine() as e:
        reader, writer = await e.connect()
        writer.write(f"GET /echo?q=1 HTTP/1.1\r\nHost: x\r\n{H2C}\r\n".encode()
                     + b"GET /echo?q=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_reply(reader))[1]["x-query"] == "1"
        assert (await read_reply(reader))[1]["x-query"] == "2"
        writer.close()
