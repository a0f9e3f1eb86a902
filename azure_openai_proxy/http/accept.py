"""The listening sockets of one `FastServer`, and the accept loop that empties their
queues.

Why not `loop.create_server`: since libuv 1.45 (uvloop 0.18 on) a listening socket is
accepted from once per loop iteration ("unix: don't accept() connections in a loop",
libuv #3696). An iteration of a worker holding thousands of streams lasts tens of
milliseconds or more, so it accepted tens of connections a second while hundreds
arrived; the rest waited in the kernel's accept queue, silent, until their clients gave
up (issue 15: 3,173 of 10,000 streams "stalled" with the worker still serving the ones it
had). Here each wake-up takes the connections waiting, up to `ACCEPT_PER_WAKE`, and hands
each to the loop with `connect_accepted_socket` (public on asyncio's loop and on uvloop's).

An accept that fails for another reason than an empty queue (descriptors running out:
EMFILE, ENFILE; ENOBUFS, ENOMEM) would leave the socket readable and the loop spinning:
accepting pauses for a second instead, as asyncio's own accept loop does.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["ACCEPT_PER_WAKE", "Listener", "listening_sockets"]

log = logging.getLogger("azure_openai_proxy")

# After a failed accept (out of descriptors, say), accepting waits this long.
_RETRY_AFTER_S = 1.0
# At most this many connections are taken per wake-up: each costs the loop a stream's
# set-up (about half a millisecond through the gateway), and a loop turn holding
# thousands of them makes every stream wait that long, the new ones several times over
# (issue 15: at 5,000 streams on a CPU-starved worker, interleaved runs completed 4,578
# and 5,000 streams with 128 a wake-up, 3,355 and 3,028 taking all, 1,480 and 2,623
# taking one per iteration). 128 a turn is still thousands a second.
ACCEPT_PER_WAKE = 128


class _Accepted(socket.socket):
    """An accepted TCP connection whose `family` and `type` are plain class attributes
    (the same `AddressFamily` and `SocketKind` members): socket.py's properties convert
    the number to its enum member on every read, five `enum` calls a connection between
    `socket.accept` and uvloop's `connect_accepted_socket` (issue 15, bench/README.md)."""

    __slots__ = ()
    type = socket.SOCK_STREAM


class _Accepted4(_Accepted):
    __slots__ = ()
    family = socket.AF_INET


class _Accepted6(_Accepted):
    __slots__ = ()
    family = socket.AF_INET6


_ACCEPTED: dict[int, tuple[type[_Accepted], socket.AddressFamily]] = {
    socket.AF_INET: (_Accepted4, socket.AF_INET), socket.AF_INET6: (_Accepted6, socket.AF_INET6)}


def listening_sockets(host: str | None, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Sockets bound on every address of `host` (None or "": all interfaces), as
    `loop.create_server` binds them (SO_REUSEADDR; IPv6 sockets IPv6-only)."""
    infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                               0, socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # a family this host lacks (IPv6 off): skipped, as asyncio does
                continue
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
        if not sockets:
            raise OSError(f"no socket could be made for {host or '*'}:{port}")
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """Accepts from `sockets` and gives each connection a protocol from `factory`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sockets: list[socket.socket],
                 factory: Callable[[], asyncio.Protocol], backlog: int) -> None:
        self.loop = loop
        self.sockets = sockets
        self.factory = factory
        self.backlog = max(1, backlog)
        self.closed = False

    def start(self) -> None:
        for sock in self.sockets:
            sock.listen(self.backlog)
            sock.setblocking(False)
            self._watch(sock)

    def _watch(self, sock: socket.socket) -> None:
        # asyncio's loop sets TCP_NODELAY only on a socket whose protocol is IPPROTO_TCP
        # (`listening_sockets` makes them so); one handed over (`socket.socket()`,
        # protocol 0) has it set on each connection here instead.
        nodelay = (sock.family in (socket.AF_INET, socket.AF_INET6)
                   and sock.proto != socket.IPPROTO_TCP)
        accepted = _ACCEPTED.get(sock.family) if sock.type == socket.SOCK_STREAM else None
        self.loop.add_reader(sock.fileno(), self._accept, sock, nodelay, accepted)

    def _accept(self, sock: socket.socket, nodelay: bool = False,
                accepted: tuple[type[_Accepted], socket.AddressFamily] | None = None) -> None:
        """The socket is readable: take the connections waiting, `ACCEPT_PER_WAKE` at
        most (the rest at the next turn: the socket stays readable). A TCP listener's
        are made `accepted` sockets (what `socket.accept` does, without its look-ups);
        another's (a Unix socket) plain ones."""
        proto = sock.proto
        for _ in range(ACCEPT_PER_WAKE):
            try:
                if accepted is not None:  # all three given: no getsockopt to learn them
                    fd, _ = sock._accept()  # type: ignore[attr-defined]
                    kind, family = accepted
                    conn: socket.socket = kind(family, socket.SOCK_STREAM, proto, fd)
                else:
                    conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._failed(sock, exc)
                return
            if nodelay:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._open(conn)

    def _open(self, conn: socket.socket) -> None:
        # No setblocking(False) or TCP_NODELAY here: connect_accepted_socket does both
        # itself (strace shows uvloop's FIONBIO and setsockopt; asyncio's loop sets
        # TCP_NODELAY on a socket whose protocol is IPPROTO_TCP, as `listening_sockets`
        # makes them), and a second time was two system calls per connection.
        self._step(self.loop.connect_accepted_socket(self.factory, conn))

    def _step(self, opening: Coroutine[Any, Any, object]) -> None:
        """Run `connect_accepted_socket` now, up to its wait for `connection_made`, and
        on from there when that is done: as a task would, without the task's extra loop
        turn before it starts (under load, each turn of a busy loop is long, and a new
        stream already needs several before its first byte) nor its bookkeeping."""
        try:
            waiting = opening.send(None)
        except StopIteration:
            return
        except Exception as exc:  # the connection is closed by it; the listener goes on
            log.debug("an accepted connection could not be opened: %r", exc)
            return
        if isinstance(waiting, asyncio.Future):
            waiting.add_done_callback(lambda _: self._step(opening))
        else:  # a bare yield: go on at the next turn
            self.loop.call_soon(self._step, opening)

    def _failed(self, sock: socket.socket, exc: OSError) -> None:
        # The queue stays readable: without a pause the loop would spin on it.
        log.warning("accept() failed (%s): not accepting for %g s", exc, _RETRY_AFTER_S)
        self.loop.remove_reader(sock.fileno())
        self.loop.call_later(_RETRY_AFTER_S, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        if not self.closed:
            self._watch(sock)

    def close(self) -> None:
        """Stop accepting and close the sockets (connections already open stay)."""
        if self.closed:
            return
        self.closed = True
        for sock in self.sockets:
            if sock.fileno() >= 0:
                self.loop.remove_reader(sock.fileno())
            sock.close()
