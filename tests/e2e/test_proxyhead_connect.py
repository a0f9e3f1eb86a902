"""An HTTP upstream proxy's answer to CONNECT is read to its blank line however its TCP
writes split it (upstream/tunnelled.py: tunnel.py's CONNECT for FastTransport too).
python-socks, under aiohttp-socks, read it in one read: a 200 whose headers came after
its status line had them read as Azure's answer (a 502 'ClientResponseError' for an SDK
call that the proxy tunnelled), and a status line cut in two was taken for all of it
('did not open a tunnel to it: 20.', a 407 cut so '... 4.', without the credentials
hint). A refusal in pieces (407, 502) is a clear 502 naming the proxy, never its
password; TLS that fails through the tunnel is told as such, the request not sent (it
was taken for sent: no failover), and leaves no socket."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from azure_openai_proxy.errors import UpstreamUnreachable
from azure_openai_proxy.settings import Settings, UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.e2e.conftest import CLIENT_KEY, Emulator, gateway_settings
from tests.e2e.piecemeal import ESTABLISHED, PiecemealProxy, piecemeal_proxy
from tests.e2e.test_gateway_edges import AUTH, CHAT, call, error_of
from tests.processes import ROOT
from tests.support import ServerThread
from tests.unit.test_fasttransport import _self_signed
from tests.waiting import until_async

PASSWORD = "s3cret-proxy-pw"
_CUT_STATUS = (b"HTTP/1.1 20", b"0 Connection established\r\n\r\n")
# Lines ended by LF alone, which HTTP/1.1 lets a client take (RFC 9112 2.2), as Go's
# net/http and python-socks did.
_BARE_LF = (b"HTTP/1.0 200 Connection established\n", b"Proxy-Agent: lf\n\n")


def _through(emulator: Emulator, proxy: PiecemealProxy) -> Settings:
    return gateway_settings(
        emulator.url, max_attempts=1, circuit_failures=100,
        upstream={"http_proxy": f"http://alice:{PASSWORD}@127.0.0.1:{proxy.port}",
                  "connect_timeout": 5.0})


@pytest.mark.parametrize("pieces", [ESTABLISHED, _CUT_STATUS, _BARE_LF],
                         ids=["head-in-3", "cut-status", "bare-lf"])
async def test_an_answer_head_in_pieces_opens_the_tunnel_for_an_sdk_call(
    pieces: tuple[bytes, ...], emulator: Emulator,
    start_gateway: Callable[[Settings], ServerThread],
) -> None:
    async with piecemeal_proxy(*pieces) as proxy:
        gateway = start_gateway(_through(emulator, proxy))
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY,
                                    max_retries=0)
        try:
            answer = await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "through the proxy"}])
        finally:
            await client.close()
    assert answer.choices[0].message.content
    [head] = proxy.heads  # through the proxy, on one tunnel
    assert head.startswith(f"CONNECT 127.0.0.1:{emulator.server.port} HTTP/1.1\r\n".encode())
    assert b"\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0LXByb3h5LXB3\r\n" in head


@pytest.mark.parametrize(("pieces", "said"), [
    ((b"HTTP/1.1 4", b"07 Proxy Authentication Required\r\n",
      b"Proxy-Authenticate: Basic realm=\"corp\"\r\n", b"Content-Length: 0\r\n\r\n"),
     "407 Proxy Authentication Required (the user and password in the proxy URL are "
     "missing or wrong)"),
    ((b"HTTP/1.1 502 Bad Gateway\r\n", b"Content-Type: text/plain\r\nContent-Length: 9\r\n",
      b"\r\nno route!"), "502 Bad Gateway"),
], ids=["407", "502"])
async def test_a_refusal_in_pieces_is_a_clear_502_naming_the_proxy(
    pieces: tuple[bytes, ...], said: str, emulator: Emulator,
    start_gateway: Callable[[Settings], ServerThread],
) -> None:
    async with piecemeal_proxy(*pieces) as proxy:
        gateway = start_gateway(_through(emulator, proxy))
        status, _, body = await call(gateway.url + "/v1/chat/completions", body=CHAT,
                                     headers={**AUTH, "Content-Type": "application/json"})
    error = error_of(body)
    assert status == 502, body
    assert error["code"] == "upstream_unreachable"
    assert error["message"] == (
        f"Cannot reach Azure OpenAI at 127.0.0.1: the upstream proxy http://127.0.0.1:"
        f"{proxy.port} did not open a tunnel to it: {said}.")
    assert PASSWORD not in body.decode() and "alice" not in body.decode()


async def test_tls_failing_through_the_tunnel_is_told_as_not_sent_and_leaves_no_socket(
) -> None:
    """Azure's side of the tunnel speaks no TLS (a plain HTTP server behind an https://
    URL): the TLS failure names the proxy's tunnel and sends nothing, so failover may
    try the next deployment (it was 'SSLError' with request_sent True)."""

    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    azure = await asyncio.start_server(plain, "127.0.0.1", 0)
    url = f"https://127.0.0.1:{azure.sockets[0].getsockname()[1]}/openai/x"
    async with piecemeal_proxy(*ESTABLISHED[:1], b"\r\n") as proxy:
        transport = FastTransport(UpstreamSettings(
            connect_timeout=5, http_proxy=f"http://alice:{PASSWORD}@127.0.0.1:{proxy.port}"))
        before = len(os.listdir("/proc/self/fd"))
        try:
            for _ in range(3):
                with pytest.raises(UpstreamUnreachable) as caught:
                    await transport.send(UpstreamRequest("POST", url, {}, b"{}"))
                assert caught.value.request_sent is False
                message = caught.value.message
                assert message.startswith(
                    f"Cannot reach Azure OpenAI at 127.0.0.1: TLS through the upstream proxy "
                    f"http://127.0.0.1:{proxy.port}'s tunnel failed ("), message
                assert PASSWORD not in message and "alice" not in message
            # The proxy's and the plain server's ends, in this process too, close as their
            # handlers finish; a socket the client kept would hold the count up for good.
            await until_async(lambda: len(os.listdir("/proc/self/fd")) <= before, 10,
                              "a socket was left open")
        finally:
            await transport.close()
    azure.close()
    assert len(proxy.heads) == 3  # each through the proxy


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_tls_to_azure_through_a_tunnel_opened_in_pieces(loop: str, tmp_path: Path) -> None:
    """Azure's https:// through the tunnel: TLS verified against the host's name (SNI
    without a trailing dot), the proxy's head in pieces; on each loop the gateway may
    run on."""
    cert, key = _self_signed(tmp_path)
    child = (f"import {loop}; from tests.e2e.piecemeal import tls_through; "
             f"{loop}.run(tls_through({str(cert)!r}, {str(key)!r}))")
    done = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "SSL_CERT_FILE": str(cert)})
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines() == [
        "200 ok", "200 ok",
        "SNI ['localhost', 'localhost'] CONNECT ['localhost:PORT', 'localhost.:PORT']".replace(
            "PORT", done.stdout.split("localhost:")[-1].split("'")[0]),
    ], done.stdout
