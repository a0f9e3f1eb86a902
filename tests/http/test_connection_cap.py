"""`max_connections`: past it a new connection is told 503 in OpenAI's shape and closed
(never left hanging); the connections already open keep being served."""

from __future__ import annotations

import orjson

from tests.http.engine import engine, read_reply, rest, until

GET = b"GET /echo?q=%d HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_a_connection_over_the_cap_gets_a_503_and_the_others_are_served() -> None:
    async with engine(max_connections=2) as e:
        open_ = [await e.connect() for _ in range(2)]
        for n, (reader, writer) in enumerate(open_):
            writer.write(GET % n)
            assert (await read_reply(reader))[0] == 200
        reader, writer = await e.connect()
        writer.write(GET % 9)
        status, headers, body = await read_reply(reader)
        assert (status, headers["connection"], headers["retry-after"]) == (503, "close", "1")
        error = orjson.loads(body)["error"]
        assert error["code"] == "server_overloaded" and error["message"]
        assert await rest(reader) == b""
        writer.close()
        for n, (reader, writer) in enumerate(open_):  # still served
            writer.write(GET % (10 + n))
            assert (await read_reply(reader))[1]["x-query"] == str(10 + n)
        open_[0][1].close()
        await until(lambda: len(e.server.connections) == 1)
        reader, writer = await e.connect()  # room again
        writer.write(GET % 20)
        assert (await read_reply(reader))[0] == 200
        writer.close()
        open_[1][1].close()


async def test_a_refused_connection_that_sends_nothing_still_gets_its_503() -> None:
    async with engine(max_connections=1) as e:
        first = await e.connect()
        await until(lambda: len(e.server.connections) == 1)
        reader, writer = await e.connect()
        status, _, _ = await read_reply(reader)
        assert status == 503 and await rest(reader) == b""
        await until(lambda: not e.server.refusing)
        writer.close()
        first[1].close()
