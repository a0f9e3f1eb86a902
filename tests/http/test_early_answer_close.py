"""An answer given before the request's body was read (a 401 for a bad key, a 413, a
429) on a connection that closes after it (`Connection: close`, HTTP/1.0 without
keep-alive: what nginx sends an upstream by default) reaches a client still uploading:
the rest of the body is read and dropped, then the connection closes. Closing at once
with the upload unread makes the kernel reset it: the client's next send fails with a
broken pipe, and a proxy in front turns that into a 502."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from tests.http.engine import Engine, engine, until

_BODY = 4 * 1024 * 1024  # well past what the socket buffers hold on loopback


@contextlib.asynccontextmanager
async def _client(e: Engine, head: bytes) -> AsyncIterator[tuple[socket.socket, bytes]]:
    """A raw client that sent `head` and read the answer that came back at once."""
    loop = asyncio.get_running_loop()
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    try:
        await loop.sock_connect(client, ("127.0.0.1", e.port))
        await loop.sock_sendall(client, head)
        yield client, await asyncio.wait_for(loop.sock_recv(client, 65536), 10)
    finally:
        client.close()


@pytest.mark.parametrize("head", [
    b"POST /reject HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n",
    b"POST /reject HTTP/1.0\r\nContent-Length: %d\r\n\r\n",
], ids=["connection-close", "http10"])
async def test_an_upload_answered_early_is_read_to_its_end_then_closed(head: bytes) -> None:
    loop = asyncio.get_running_loop()
    async with engine() as e:
        # The answer comes before any of the body: the handler does not read it.
        async with _client(e, head % _BODY) as (client, answer):
            assert answer.startswith(b"HTTP/1.1 401 ")
            assert b"Connection: close\r\n" in answer
            # The client uploads its body all the same (it had started to): no reset.
            await asyncio.wait_for(loop.sock_sendall(client, b"a" * _BODY), 20)
            while data := await asyncio.wait_for(loop.sock_recv(client, 65536), 10):
                answer += data
            assert answer.endswith(b'{"error":{}}')  # then the server closed, cleanly
        assert e.server.connections == set()


async def test_an_upload_sent_without_waiting_for_100_continue_is_read_after_an_early_answer(
) -> None:
    """`Expect: 100-continue`, yet the body comes at once (a client's wait for "100
    Continue" is short: curl's is a second, .NET's 350 ms): the client is not waiting,
    so an early answer is not the connection's last. Only a client that has sent none of
    its body is taken to wait, and its connection closes after the answer."""
    loop = asyncio.get_running_loop()
    head = (b"POST /reject HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % _BODY)
    async with engine() as e, _client(e, head + b"a" * 1024) as (client, answer):
        assert answer.startswith(b"HTTP/1.1 401 ") and b"Connection: close" not in answer
        await asyncio.wait_for(loop.sock_sendall(client, b"a" * (_BODY - 1024)), 20)
        await loop.sock_sendall(client, b"GET /echo?q=next HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = await asyncio.wait_for(loop.sock_recv(client, 65536), 10)
        assert reply.startswith(b"HTTP/1.1 200 ") and b"x-query: next\r\n" in reply


@pytest.mark.parametrize("expect", [b"Expect: 100-continue\r\n", b""], ids=["expect", "plain"])
async def test_the_rest_of_an_early_answered_body_is_dropped_for_a_while_only(
        expect: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """The body's rest is read for at most the linger time after the answer (nginx's
    `lingering_time`, 30 s; 0.3 s here) or the body's own deadline if sooner: a client
    that sent a byte of its body and then nothing held the connection, and its place
    under `max_connections`, forever when it had sent `Expect: 100-continue` (its body
    has no deadline before "100 Continue"), else for all of `body_timeout` (300 s)."""
    monkeypatch.setattr("azure_openai_proxy.http.answer._LINGER_SECONDS", 0.3,
                        raising=False)
    loop = asyncio.get_running_loop()
    head = b"POST /reject HTTP/1.1\r\nHost: x\r\n%bContent-Length: %d\r\n\r\na" % (expect, _BODY)
    async with engine(body_timeout=60, keepalive_timeout=0.4) as e, \
            _client(e, head) as (client, answer):  # (sweeps every 0.1 s)
        assert answer.startswith(b"HTTP/1.1 401 ")
        # The server closes (an end, or a reset of the unread upload) without more bytes.
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(loop.sock_recv(client, 65536), 5) == b""
        await until(lambda: not e.server.connections)
