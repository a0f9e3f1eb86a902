"""An accepted connection costs no `enum` conversions (issue 15, session 27): socket.py's
`socket.accept` and its `family` and `type` properties turned the numbers into enum
members seven times a connection (twice in `socket.accept`, five times in the loops'
`connect_accepted_socket`; `socket._intenum_converter`, `EnumType.__call__`,
`Enum.__new__`: three Python calls each). The listener now makes the accepted socket itself, of a
`socket.socket` subclass whose `family` and `type` are the same members as plain class
attributes; what the connection is (its family, kind, protocol, peer) stays the same."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import FrameType
from typing import Any, cast

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


# What converts a socket's numbers to enum members: socket.py's `family` and `type`
# properties (`socket.accept` reads both of the listener). Public names, unlike the
# module's private helper they call.
_CONVERTING = frozenset(vars(socket.socket)[name].fget.__code__ for name in ("family", "type"))


async def _serve_one(host: str, handed: socket.socket | None = None,
                     client_family: int = socket.AF_UNSPEC) -> tuple[int, dict[str, object]]:
    """One request over a fresh connection to `host` (or on the `handed` socket, reached
    over `client_family`): (the enum conversions run in this thread from the connect
    until the answer was read, what the server's accepted socket says)."""
    fast = await serve_fast(EngineTestApp(Events()), host, 0, sock=handed)
    (listening,) = fast.sockets
    address = listening.getsockname()
    if client_family == socket.AF_INET:
        address = ("127.0.0.1", address[1])
    seen: dict[str, object] = {}
    opened = fast._listener._open if fast._listener is not None else None
    assert opened is not None

    def probe(conn: socket.socket) -> None:  # records what the listener made, then opens it
        peer = conn.getpeername()
        seen.update(family=conn.family, type=conn.type, proto=conn.proto,
                    peer=peer[:2] if isinstance(peer, tuple) else peer,
                    is_socket=isinstance(conn, socket.socket))
        opened(conn)

    fast._listener._open = probe  # type: ignore[method-assign, union-attr]
    conversions = 0

    def count(frame: FrameType, event: str, _arg: object) -> None:
        nonlocal conversions
        if event == "call" and frame.f_code in _CONVERTING:
            conversions += 1

    def client() -> tuple[bytes, object]:  # in another thread: its calls are not counted
        family = client_family or listening.family
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.connect(address if family == socket.AF_UNIX else address[:2])
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            name = sock.getsockname()
            return answer, name[:2] if isinstance(name, tuple) else name

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


def _dual_stack() -> socket.socket:
    """An IPv6 socket taking IPv4 too (IPV6_V6ONLY off), as a socket handed over might."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0))
    return sock


@pytest.mark.parametrize("loop_name", sorted(_LOOPS))
def test_an_ipv4_client_of_a_handed_dual_stack_socket_is_an_ipv6_connection(
        loop_name: str) -> None:
    if not _ipv6():
        pytest.skip("no IPv6 here")
    conversions, seen = _LOOPS[loop_name](_serve_one("", _dual_stack(), socket.AF_INET))
    assert conversions == 0
    assert seen["family"] is socket.AF_INET6  # what the kernel made: an IPv4-mapped peer
    assert seen["type"] is socket.SOCK_STREAM
    assert seen["proto"] == 0  # the handed socket's, as socket.accept gives
    client_host, client_port = cast(tuple[str, int], seen["client"])
    assert seen["peer"] == (f"::ffff:{client_host}", client_port)


@pytest.mark.parametrize("loop_name", sorted(_LOOPS))
def test_a_handed_unix_socket_is_accepted_as_socket_accept_makes_it(
        loop_name: str, tmp_path: Path) -> None:
    """Not a TCP listener: its connections are `socket.accept`'s, unchanged."""
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(tmp_path / "s"))
    _, seen = _LOOPS[loop_name](_serve_one("", unix))
    assert seen["family"] is socket.AF_UNIX
    assert seen["type"] is socket.SOCK_STREAM
    assert seen["is_socket"] is True
