"""An accepted connection costs no `enum` conversions (issue 15, session 27): socket.py's
`socket.accept` and its `family` and `type` properties turned the numbers into enum
members five times a connection (`socket._intenum_converter`, `EnumType.__call__`,
`Enum.__new__`: three Python calls each) between the accept and uvloop's
`connect_accepted_socket`. The listener now makes the accepted socket itself, of a
`socket.socket` subclass whose `family` and `type` are the same members as plain class
attributes; what the connection is (its family, kind, protocol, peer) stays the same."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

import pytest
import uvloop

from azure_openai_proxy.http.server import serve_fast
from tests.http_app import EngineTestApp, Events

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
_LOOPS: dict[str, Runner] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


async def _serve_one(host: str) -> tuple[int, dict[str, object]]:
    """One request over a fresh connection: (the enum conversions run in this thread from
    the connect until the answer was read, what the server's accepted socket says)."""
    fast = await serve_fast(EngineTestApp(Events()), host, 0)
    (listening,) = fast.sockets
    seen: dict[str, object] = {}
    opened = fast._listener._open if fast._listener is not None else None
    assert opened is not None

    def probe(conn: socket.socket) -> None:  # records what the listener made, then opens it
        seen.update(family=conn.family, type=conn.type, proto=conn.proto,
                    peer=conn.getpeername()[:2], is_socket=isinstance(conn, socket.socket))
        opened(conn)

    fast._listener._open = probe  # type: ignore[method-assign, union-attr]
    conversions = 0

    def count(frame: FrameType, event: str, _arg: object) -> None:
        nonlocal conversions
        if event == "call" and frame.f_code is socket._intenum_converter.__code__:  # type: ignore[attr-defined]
            conversions += 1

    def client() -> tuple[bytes, object]:  # in another thread: its calls are not counted
        with socket.create_connection(listening.getsockname()[:2]) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            return answer, sock.getsockname()[:2]

    try:
        sys.setprofile(count)  # this thread's: the loop's
        answer, seen["client"] = await asyncio.to_thread(client)
        sys.setprofile(None)
        assert answer.startswith(b"HTTP/1.1 404 "), answer[:100]  # the test app knows no /
        return conversions, seen
    finally:
        sys.setprofile(None)
        fast.close()
        await fast.wait_closed()


@pytest.mark.parametrize("loop_name", sorted(_LOOPS))
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_an_accepted_connection_costs_no_enum_conversions(loop_name: str, host: str) -> None:
    if host == "::1" and not _ipv6():
        pytest.skip("no IPv6 loopback here")
    conversions, seen = _LOOPS[loop_name](_serve_one(host))
    assert conversions == 0  # 7 before (socket.accept and the loops' checks), on both loops
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    assert seen["is_socket"] is True
    assert seen["family"] is family  # the enum member itself, as socket.py's property gives
    assert seen["type"] is socket.SOCK_STREAM
    assert seen["proto"] == socket.IPPROTO_TCP  # the listener's, as socket.accept gives
    assert seen["peer"] == seen["client"]
