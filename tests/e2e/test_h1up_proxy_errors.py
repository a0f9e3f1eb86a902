"""An upstream proxy that fails (a 407 for wrong credentials, a 403, a close, silence, not
listening) is a clear OpenAI-shaped 502 or 504 naming the proxy and what it said, never
its password; the gateway serves on once the proxy tunnels again. Before, every one was
'the upstream proxy failed (ProxyError)', a 502 whatever happened (a wrong password
could not be told from a dead proxy). The proxy is a small asyncio one on loopback whose
behaviour each case sets; pproxy checks real credentials."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from azure_openai_proxy.errors import UpstreamTimeout, UpstreamUnreachable
from azure_openai_proxy.gateway.app import transport_for
from azure_openai_proxy.settings import Settings, UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.transport import AiohttpTransport, UpstreamRequest
from tests.e2e.conftest import Emulator, gateway_settings
from tests.e2e.test_gateway_edges import AUTH, CHAT, call, error_of
from tests.processes import pproxy, running
from tests.support import ServerThread

PASSWORD = "s3cret-proxy-pw"
_ANSWERS = {
    "407": b"HTTP/1.1 407 Proxy Authentication Required\r\n"
           b"Proxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n",
    "403": b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
}


class FakeProxy:
    """An HTTP CONNECT proxy whose `mode` says what it does: "tunnel" (its job), "407",
    "403" (answers so), "close" (hangs up at once) or "hang" (reads and says nothing)."""

    def __init__(self) -> None:
        self.mode = "tunnel"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> FakeProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def become(self, mode: str) -> None:
        """From now on do `mode`; the tunnels open (pooled by the gateway) are closed."""
        self.mode = mode
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0.01)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self.become("close")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if self.mode == "tunnel":
                await _tunnel(head, reader, writer)
            elif self.mode == "hang":
                await asyncio.sleep(60)
            elif self.mode in _ANSWERS:
                writer.write(_ANSWERS[self.mode])
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


async def _tunnel(head: bytes, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    host, _, port = head.split(b" ")[1].decode().rpartition(":")
    far_reader, far_writer = await asyncio.open_connection(host, int(port))
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    await asyncio.gather(pipe(reader, far_writer), pipe(far_reader, writer))


@pytest.fixture
async def proxy() -> AsyncIterator[FakeProxy]:
    server = await FakeProxy().start()
    yield server
    await server.stop()


async def _chat(gateway: ServerThread) -> tuple[int, dict[str, Any]]:
    status, _, body = await call(gateway.url + "/v1/chat/completions", body=CHAT,
                                 headers={**AUTH, "Content-Type": "application/json"})
    return status, json.loads(body)


async def test_each_proxy_failure_is_a_clear_502_or_504_naming_the_proxy_not_its_password(
    emulator: Emulator, start_gateway: Callable[[Settings], ServerThread],
    proxy: FakeProxy, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = start_gateway(gateway_settings(
        emulator.url, max_attempts=1, circuit_failures=100,
        upstream={"http_proxy": f"http://alice:{PASSWORD}@127.0.0.1:{proxy.port}",
                  "connect_timeout": 1.0}))
    named = f"http://127.0.0.1:{proxy.port}"
    status, body = await _chat(gateway)
    assert status == 200, body  # through the tunnel

    expected = {
        "407": (502, "407 Proxy Authentication Required", "user and password"),
        "403": (502, "403 Forbidden", "did not open a tunnel"),
        "close": (502, "did not open a tunnel", ""),
        "hang": (504, "did not open a connection to Azure OpenAI", "in time"),
    }
    for mode, (want, said, more) in expected.items():
        await proxy.become(mode)
        status, body = await _chat(gateway)
        error = error_of(json.dumps(body).encode())
        assert status == want, (mode, body)
        assert error["code"] == ("upstream_timeout" if want == 504 else "upstream_unreachable")
        assert named in error["message"] and said in error["message"], (mode, error)
        assert more in error["message"], (mode, error)
        assert PASSWORD not in json.dumps(body) and "alice" not in error["message"]

    await proxy.become("tunnel")
    status, body = await _chat(gateway)
    assert status == 200, body  # serving on
    assert PASSWORD not in caplog.text
    out, err = capfd.readouterr()
    assert "upstream_error" in err or "UpstreamUnreachable" in err or "502" in err, err
    assert PASSWORD not in out + err


async def test_a_proxy_not_listening_is_named_as_unreachable(reserve_port: Callable[[], int]
                                                             ) -> None:
    port = reserve_port()
    transport = AiohttpTransport(UpstreamSettings(
        socks_proxy=f"socks5://alice:{PASSWORD}@127.0.0.1:{port}", connect_timeout=2))
    try:
        with pytest.raises(UpstreamUnreachable) as caught:
            await transport.send(UpstreamRequest("POST", "http://127.0.0.1:9/x", {}, b"{}"))
    finally:
        await transport.close()
    message = caught.value.message
    assert f"the upstream proxy socks5://127.0.0.1:{port} cannot be reached" in message
    assert PASSWORD not in message
    assert caught.value.request_sent is False


@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_wrong_credentials_at_a_real_proxy_are_told_without_the_password(
    scheme: str, reserve_port: Callable[[], int],
) -> None:
    port = reserve_port()
    key = "socks_proxy" if scheme == "socks5" else "http_proxy"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    azure = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{azure.sockets[0].getsockname()[1]}/x"
    # pproxy lets an address in for a while once it authenticated: the wrong one first.
    with running(pproxy(f"{scheme}://127.0.0.1:{port}#alice:{PASSWORD}"), port=port):
        for password, works in (("wrong-pw", False), (PASSWORD, True)):
            transport = transport_for(UpstreamSettings(
                connect_timeout=5, **{key: f"{scheme}://alice:{password}@127.0.0.1:{port}"}))
            try:
                if works:
                    response = await transport.send(UpstreamRequest("GET", url, {}))
                    assert await response.read(10) == b"ok"
                    response.close()
                    continue
                with pytest.raises((UpstreamUnreachable, UpstreamTimeout)) as caught:
                    await transport.send(UpstreamRequest("GET", url, {}))
            finally:
                await transport.close()
            message = caught.value.message
            assert f"the upstream proxy {scheme}://127.0.0.1:{port} did not open" in message
            assert password not in message and PASSWORD not in message
            if scheme == "http":
                assert "407 Proxy Authentication Required" in message
                assert "user and password in the proxy URL" in message
    azure.close()


@pytest.mark.parametrize(("user", "sent"), [
    ("TOKEN", b"TOKEN:"), ("TOKEN:", b"TOKEN:"), ("alice:pw%40x", b"alice:pw@x"),
])
async def test_a_proxy_user_without_a_password_is_sent_as_go_sends_it(
        user: str, sent: bytes) -> None:
    """`http://TOKEN@proxy` authenticates with TOKEN and an empty password, as Go's
    net/http does (the Go tool's users have such URLs); it was sent no credentials."""
    heads: list[bytes] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(_ANSWERS["407"])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = FastTransport(UpstreamSettings(http_proxy=f"http://{user}@127.0.0.1:{port}"))
    try:
        with pytest.raises(UpstreamUnreachable):
            await transport.send(UpstreamRequest("GET", "http://azure.invalid/x", {}))
    finally:
        await transport.close()
        server.close()
    [head] = heads
    assert b"Proxy-Authorization: Basic " + base64.b64encode(sent) + b"\r\n" in head
