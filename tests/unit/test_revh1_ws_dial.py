"""The realtime WebSocket toward Azure races a host's addresses as FastTransport and the
HTTP/2 client do (fast/dial.py, RFC 8305): websockets tried them one after the other,
so an address dropping packets (an IPv6 route to nowhere) took the whole connect_timeout
and the next was never tried (a 504 on every realtime session). No attempt leaves a
socket open: a win beside a silent address, all refusing, the client leaving mid-race,
connect_timeout ending it; on asyncio and uvloop. Loopback: full accept queues on
127.0.0.1 and 127.0.0.3, the server on 127.0.0.2."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from azure_openai_proxy.errors import UpstreamTimeout, UpstreamUnreachable
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.websocket import open_socket
from tests.unit.test_fasttransport import _self_signed
from tests.unit.test_revh1_dial import ON_BOTH_LOOPS, _descriptors, beside_silent


async def _echo(connection: ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


async def _open(port: int, addresses: list[str], timeout: float) -> str:
    async def resolver(host: str, port: int) -> list[tuple[int, str]]:
        return [(socket.AF_INET, address) for address in addresses]

    started = time.monotonic()
    upstream = await open_socket(f"ws://azure.example:{port}/openai/realtime", {},
                                 UpstreamSettings(connect_timeout=timeout), resolver=resolver)
    took = time.monotonic() - started
    await upstream.send("hello")
    echoed = await upstream.receive()
    await upstream.close()
    return f"{echoed!r} in {'<' if took < 1 else '>'}1 s"


async def _race(port: int) -> list[str]:
    """What each case did, and how many descriptors it left open."""
    outcomes: list[str] = []

    async def case(addresses: list[str], timeout: float = 3.0, cancel_after: float = 0.0
                   ) -> None:
        before = _descriptors()
        opening = asyncio.ensure_future(_open(port, addresses, timeout))
        if cancel_after:
            await asyncio.sleep(cancel_after)
            opening.cancel()
        try:
            outcome = await opening
        except (UpstreamUnreachable, UpstreamTimeout) as exc:
            outcome = f"{type(exc).__name__} {exc.message}"
        except asyncio.CancelledError:
            outcome = "cancelled"
        for _ in range(5):  # closed transports let go of their sockets a turn later
            await asyncio.sleep(0.01)
        outcomes.append(f"{outcome} left {_descriptors() - before}")

    async with serve(_echo, "127.0.0.2", port):
        await case(["127.0.0.1", "127.0.0.2"])  # the first silent: the second wins
        await case(["127.0.0.4", "127.0.0.5"])  # both refuse
        await case(["127.0.0.1", "127.0.0.3"], cancel_after=0.4)  # the client left
        await case(["127.0.0.1", "127.0.0.3"], timeout=0.5)  # connect_timeout ends it
    return outcomes


@ON_BOTH_LOOPS
def test_a_silent_address_is_passed_for_the_next_and_no_attempt_leaves_a_socket(
        run: Callable[..., list[str]], reserve_port: Callable[[], int]) -> None:
    assert beside_silent(run, reserve_port(), _race) == [
        "'hello' in <1 s left 0",  # on main: UpstreamTimeout after 3 s
        "UpstreamUnreachable Could not open a WebSocket to Azure OpenAI at azure.example: "
        "127.0.0.4: Connection refused; 127.0.0.5: Connection refused. left 0",
        "cancelled left 0",
        "UpstreamTimeout Azure OpenAI did not accept the WebSocket in time. left 0",
    ]


def sni_recording_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                          ) -> tuple[ssl.SSLContext, list[str | None]]:
    """A TLS server context for `localhost` that the default client context trusts
    (`SSL_CERT_FILE`), and the list of server names its clients send (SNI)."""
    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _, name, __: names.append(name)
    return context, names


async def test_tls_is_checked_against_the_host_name_on_the_winner(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """wss://: TLS and SNI on the raced socket name the host (the certificate is for
    localhost, the address that answers is 127.0.0.2, which it does not name)."""
    context, names = sni_recording_context(tmp_path, monkeypatch)

    async def resolver(host: str, port: int) -> list[tuple[int, str]]:
        assert host == "localhost"
        return [(socket.AF_INET, "127.0.0.4"), (socket.AF_INET, "127.0.0.2")]  # refused, then

    async with serve(_echo, "127.0.0.2", 0, ssl=context) as server:
        port = server.sockets[0].getsockname()[1]
        upstream = await open_socket(f"wss://localhost:{port}/openai/realtime", {},
                                     UpstreamSettings(connect_timeout=3), resolver=resolver)
        await upstream.send("hello")
        assert await upstream.receive() == "hello"
        await upstream.close()
    assert names == ["localhost"]
