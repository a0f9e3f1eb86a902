"""Azure's addresses failing in different ways for a realtime WebSocket: the client is
told the most telling failure first, with its address and host. fast/dial.py raises the
last failure, so 'Could not open a WebSocket to Azure OpenAI (OSError).' followed a
refusal when the next address had no route; connect_timeout ending the race hid a
refusal behind another address's silence ('did not accept the WebSocket in time.');
and TLS refused by the address that accepted was '(SSLCertVerificationError)'. Loopback:
127.0.0.1 silent (a full accept queue), 127.0.0.4 refusing, 255.255.255.255 no route
(ENETUNREACH at once)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve

from azure_openai_proxy.errors import UpstreamTimeout, UpstreamUnreachable
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.websocket import open_socket
from tests.unit.test_fasttransport import _self_signed
from tests.unit.test_revh1_dial import ON_BOTH_LOOPS, beside_silent

_FAILED = "UpstreamUnreachable Could not open a WebSocket to Azure OpenAI at azure.example: "


async def _open(url: str, addresses: list[str], timeout: float = 3.0) -> str:
    async def resolver(host: str, port: int) -> list[tuple[int, str]]:
        return [(socket.AF_INET, address) for address in addresses]

    try:
        upstream = await open_socket(url, {}, UpstreamSettings(connect_timeout=timeout),
                                     resolver=resolver)
    except (UpstreamUnreachable, UpstreamTimeout) as exc:
        assert exc.request_sent is False or isinstance(exc, UpstreamTimeout)
        return f"{type(exc).__name__} {exc.message}"
    await upstream.close()
    return "opened"


async def _cases(port: int) -> list[str]:
    url = f"ws://azure.example:{port}/openai/realtime"
    return [  # 1.2 s: the refusal comes at once, or 250 ms on, even on a loaded machine
        await _open(url, ["127.0.0.4", "127.0.0.1"], timeout=1.2),
        await _open(url, ["127.0.0.1", "127.0.0.4"], timeout=1.2),
        await _open(url, ["127.0.0.4", "255.255.255.255"]),
        await _open(url, ["255.255.255.255", "127.0.0.4"]),
        await _open(url, ["127.0.0.1"], timeout=0.5),  # silence alone: a timeout
    ]


@ON_BOTH_LOOPS
def test_the_most_telling_failure_is_named_first(
        run: Callable[..., list[str]], reserve_port: Callable[[], int]) -> None:
    port = reserve_port()
    refused = "127.0.0.4: Connection refused"
    assert beside_silent(run, port, _cases) == [
        _FAILED + f"{refused}; no other address answered in time.",  # on main: a 504
        _FAILED + f"{refused}; no other address answered in time.",  # 'in time.'
        _FAILED + f"{refused}; 255.255.255.255: Network is unreachable.",  # '(OSError).'
        _FAILED + f"{refused}; 255.255.255.255: Network is unreachable.",
        "UpstreamTimeout Azure OpenAI did not accept the WebSocket in time.",
    ]


async def _echo(connection: ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


def test_tls_refused_on_the_address_that_accepted_is_told_over_a_silent_one(
        tmp_path: Path, reserve_port: Callable[[], int]) -> None:
    """127.0.0.1 silent, 127.0.0.2 accepting with a certificate nothing trusts: the race
    is 127.0.0.2's, and its TLS failure is the client's answer, said as TLS."""
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    port = reserve_port()

    async def race(port: int) -> list[str]:
        async with serve(_echo, "127.0.0.2", port, ssl=context):
            return [await _open(f"wss://localhost:{port}/openai/realtime",
                                ["127.0.0.1", "127.0.0.2"])]

    assert beside_silent(asyncio.run, port, race) == [
        "UpstreamUnreachable Could not open a WebSocket to Azure OpenAI at localhost: TLS "
        "failed (CERTIFICATE_VERIFY_FAILED)."]  # on main: '(SSLCertVerificationError).'
