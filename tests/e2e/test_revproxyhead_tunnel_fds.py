"""The upstream client through an HTTP proxy's tunnel (upstream/tunnelled.py) when Azure's
side of the tunnel never answers TLS: connect_timeout running out is a 504 naming the
proxy with nothing sent (failover may go on), and neither it nor the client leaving
(the request cancelled) keeps a socket, on both loops the gateway runs on. (Review of
branch proxyhead: its tests covered a TLS failure, not these two paths.)"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

from azure_openai_proxy.errors import UpstreamTimeout
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.e2e.piecemeal import piecemeal_proxy
from tests.waiting import until_async

ON_BOTH_LOOPS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run],
                                        ids=["asyncio", "uvloop"])


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _through_silent_tls(cancel: bool) -> list[str]:
    """One request to an https:// Azure that accepts and never speaks, through a proxy
    that opens the tunnel at once: what it raised and whether every socket closed."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        while await reader.read(4096):  # the ClientHello, never answered
            pass
        writer.close()

    azure = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"https://127.0.0.1:{azure.sockets[0].getsockname()[1]}/openai/x"
    seen: list[str] = []
    async with piecemeal_proxy(b"HTTP/1.1 200 Connection established\r\n\r\n") as proxy:
        transport = FastTransport(UpstreamSettings(
            connect_timeout=2.0, http_proxy=f"http://bob:pw@127.0.0.1:{proxy.port}"))
        before = _fds()
        try:
            send = asyncio.ensure_future(transport.send(UpstreamRequest("POST", url, {}, b"{}")))
            if cancel:
                await until_async(lambda: accepted, 10, "the tunnel never reached Azure")
                send.cancel()
            try:
                await send
            except asyncio.CancelledError:
                seen.append("cancelled")
            except UpstreamTimeout as exc:
                seen.append(f"{type(exc).__name__} sent={exc.request_sent} {exc.message}"
                            .replace(str(proxy.port), "PORT"))
            # The proxy's and Azure's ends are this process's too: they close as their
            # handlers see the client's close. A socket the client kept holds it up.
            await until_async(lambda: _fds() <= before, 10, "a socket was left open")
            seen.append("no socket left")
        finally:
            await transport.close()
    azure.close()
    return seen


@ON_BOTH_LOOPS
def test_tls_never_answered_through_the_tunnel_times_out_unsent_and_leaves_no_socket(
        run: Callable[..., Any]) -> None:
    assert run(_through_silent_tls(cancel=False)) == [
        "UpstreamTimeout sent=False The upstream proxy http://127.0.0.1:PORT did not open "
        "a connection to Azure OpenAI at 127.0.0.1 in time.",
        "no socket left",
    ]


@ON_BOTH_LOOPS
def test_a_request_cancelled_during_tls_through_the_tunnel_leaves_no_socket(
        run: Callable[..., Any]) -> None:
    assert run(_through_silent_tls(cancel=True)) == ["cancelled", "no socket left"]
