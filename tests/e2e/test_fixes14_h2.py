"""Session 14's review of the HTTP/2 client's answer heads: a `content-length` that is
not 1*DIGIT (RFC 9110 §8.6: `-5`, `+5`, ` 5`, `1_0`, a Latin-1 superscript digit) and a
`:status` after a regular field (RFC 9113 §8.3: pseudo-header fields come first) are
malformed answers: that stream fails (502 through the gateway), the connection's other
streams go on. Raw frames from a loopback server (tests/e2e/h2raw.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.h2 import H2Transport
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.e2e.conftest import CLIENT_KEY, gateway_settings
from tests.e2e.h2raw import RawH2Server, frame, head_block
from tests.support import ServerThread

Fields = list[tuple[bytes, bytes]]

MALFORMED: list[Fields] = [
    *([(b":status", b"200"), (b"content-length", value)]
      for value in (b"-5", b"+5", b" 5", b"5 ", b"1_0", b"0x5", b"", b"\xb2", b"\xb9")),
    [(b":status", b"200"), (b"content-length", b"2"), (b"content-length", b"3")],
    [(b"x-request-id", b"a"), (b":status", b"200")],  # a pseudo-header after a field
    [(b"content-type", b"application/json"), (b":status", b"200"), (b"content-length", b"2")],
]


def _block(fields: Fields) -> bytes:
    return head_block(*fields)  # type: ignore[arg-type]  # hpack takes bytes too


def _script(fields: Fields, bad: list[bool]) -> Any:
    """Stream 1 (and any while `bad[0]`) gets `fields` and a body of two bytes; the
    others a healthy answer."""
    def script(sid: int) -> bytes:
        if sid == 1 or bad[0]:
            return frame(1, 4, sid, _block(fields)) + frame(0, 1, sid, b"{}")
        return (frame(1, 4, sid, _block([(b":status", b"200"), (b"content-length", b"2")]))
                + frame(0, 1, sid, b"{}"))
    return script


@pytest.mark.parametrize("fields", MALFORMED)
async def test_a_malformed_head_fails_its_stream_only(fields: Fields) -> None:
    server = RawH2Server(_script(fields, [False]))
    url = await server.start()
    transport = H2Transport(UpstreamSettings(http2=True, read_timeout=2.0,
                                             connect_timeout=2.0, pool_timeout=1.0))
    try:
        with pytest.raises(Exception) as failed:
            response = await transport.send(UpstreamRequest("GET", url + "/x", {}, None))
            await response.read(100)  # a head let through: its body must not be
        assert getattr(failed.value, "status", None) == 502, repr(failed.value)
        response = await transport.send(UpstreamRequest("GET", url + "/x", {}, None))
        assert await response.read(100) == b"{}"
        assert server.connections == 1 and not server.frames(7)  # no GOAWAY
        assert [sid for _, _, sid, _ in server.frames(3)] == [1]  # RST_STREAM of its own
    finally:
        await transport.close()
        await server.stop()


def test_no_rule_refuses_a_well_formed_head() -> None:
    """What stays allowed: a plain length, one repeated with the same value, a zero."""
    async def run() -> list[bytes]:
        got = []
        for fields in ([(b":status", b"200"), (b"content-length", b"2")],
                       [(b":status", b"200"), (b"content-length", b"2"),
                        (b"content-length", b"2")],
                       [(b":status", b"200"), (b"content-length", b"02")]):
            server = RawH2Server(lambda sid, fields=fields: frame(  # type: ignore[misc]
                1, 4, sid, _block(fields)) + frame(0, 1, sid, b"ok"))
            url = await server.start()
            transport = H2Transport(UpstreamSettings(http2=True, read_timeout=2.0))
            response = await transport.send(UpstreamRequest("GET", url + "/x", {}, None))
            got.append(await response.read(100))
            await transport.close()
            await server.stop()
        return got
    assert asyncio.run(run()) == [b"ok"] * 3


@pytest.fixture
def raw_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.mark.parametrize("fields", [MALFORMED[0], MALFORMED[-2]])
def test_the_client_gets_a_502_and_the_gateway_serves_on(
        raw_loop: asyncio.AbstractEventLoop, fields: Fields) -> None:
    bad = [True]
    server = RawH2Server(_script(fields, bad))
    url = asyncio.run_coroutine_threadsafe(server.start(), raw_loop).result(5)
    gateway = ServerThread(lambda: create_app(gateway_settings(
        url, upstream={"http2": True}, retry_budget_seconds=1))).start()
    try:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        answer = httpx.post(gateway.url + "/v1/chat/completions", json=body,
                            headers=headers, timeout=10)
        assert answer.status_code == 502
        error = answer.json()["error"]
        assert error["code"] == "upstream_unreachable" and "malformed" in error["message"]
        bad[0] = False
        answer = httpx.post(gateway.url + "/v1/chat/completions", json=body,
                            headers=headers, timeout=10)
        assert answer.status_code == 200 and answer.content == b"{}"
        assert server.connections == 1  # the same connection served on
    finally:
        gateway.stop()
        asyncio.run_coroutine_threadsafe(server.stop(), raw_loop).result(5)
