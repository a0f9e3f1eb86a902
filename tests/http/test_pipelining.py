"""Requests pipelined behind a slow one are answered in order; one that cannot be
parsed gets its 400 after the answers before it, then the connection closes."""

from __future__ import annotations

from tests.http.engine import chunked, engine, pending, post, read_reply, rest, until

SLOW = b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_requests_behind_a_slow_one_are_answered_in_order() -> None:
    async with engine() as e:
        reader, writer = await e.connect()
        writer.write(SLOW + post("/echo", b"one") + b"GET /echo?q=two HTTP/1.1\r\nHost: x\r\n\r\n"
                     + chunked("/echo", b"5\r\nthree\r\n0\r\n\r\n"))
        await until(lambda: pending(e) == 3)  # parsed while the stream is being served
        e.events.release.set()
        status, _, body = await read_reply(reader)
        assert (status, body) == (200, b"data: first\n\ndata: second\n\n")
        assert (await read_reply(reader))[2] == b"one"
        assert (await read_reply(reader))[1]["x-query"] == "two"
        assert (await read_reply(reader))[2] == b"three"
        writer.close()


async def test_a_malformed_request_in_the_middle_gets_its_400_after_the_earlier_answers() -> None:
    async with engine() as e:
        reader, writer = await e.connect()
        writer.write(SLOW + post("/echo", b"one") + b"GARBAGE \x01\r\n\r\n" + post("/echo", b"never"))
        await until(lambda: pending(e) == 2)  # the request before it, and its 400
        e.events.release.set()
        assert (await read_reply(reader))[0] == 200
        assert (await read_reply(reader))[2] == b"one"
        assert (await read_reply(reader))[0] == 400
        assert await rest(reader) == b""
        assert [r[2] for r in e.events.requests] == [b"one"]
        writer.close()


async def test_a_malformed_chunked_body_in_the_middle_gets_its_400_in_turn() -> None:
    async with engine() as e:
        reader, writer = await e.connect()
        writer.write(SLOW + post("/echo", b"one") + chunked("/echo", b"zz\r\nbad\r\n0\r\n\r\n")
                     + post("/echo", b"never"))
        await until(lambda: pending(e) == 2)  # the request before it, and its 400
        e.events.release.set()
        assert (await read_reply(reader))[0] == 200
        assert (await read_reply(reader))[2] == b"one"
        assert (await read_reply(reader))[0] == 400
        assert await rest(reader) == b""
        assert [r[2] for r in e.events.requests] == [b"one"]
        writer.close()


async def test_a_deep_pipeline_is_answered_whole_and_in_order() -> None:
    """More requests than the pipeline holds: reading pauses and resumes."""
    async with engine() as e:
        reader, writer = await e.connect()
        writer.write(b"".join(post(f"/echo?q={n}", b"%d" % n) for n in range(50)))
        for n in range(50):
            status, headers, body = await read_reply(reader)
            assert (status, headers["x-query"], body) == (200, str(n), b"%d" % n)
        writer.close()
