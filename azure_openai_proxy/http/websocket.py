"""WebSocket connections (for the Realtime API): the handshake and the framing are the
`websockets` library's sans-I/O `ServerProtocol`; this module only moves its bytes and
gives the application's handler a small `interface.WebSocket`.

A request with `Upgrade: websocket` is offered to the application's `websocket(request)`
hook (see `interface.WebSocketApplication`); None declines and the request is served as
plain HTTP. An accepted connection leaves HTTP for good: the transport's protocol becomes
a `_WebSocketConnection`, and the HTTP connection keeps only its bookkeeping (its task
runs the handler; its deadlines are off; a client that stops reading is still cut off
after `send_timeout`).

What the client sends is bounded: a message past `_MAX_MESSAGE` closes the connection
(1009, the protocol's own check), a text message that is not UTF-8 too (1007), and once
`_UNREAD_MESSAGES` messages (or `_UNREAD_SIZE` bytes) wait for the handler, reading pauses
until it has taken half of them. Reading pauses too while the client is not reading
what is written (the transport's `pause_writing`): each ping it sends adds a pong to
write, so a client that sends pings and never reads would otherwise grow what waits
to be written without bound.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from websockets.exceptions import InvalidState
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from azure_openai_proxy.http.interface import WebSocketClosed, WebSocketHandler

if TYPE_CHECKING:
    from azure_openai_proxy.http.connection import _HttpConnection
    from azure_openai_proxy.http.request import FastRequest

__all__ = ["run_websocket"]

_MAX_MESSAGE = 16 * 1024 * 1024
# The protocol's max_size counts payload bytes only: empty continuation frames would
# otherwise go on forever. A message of more frames than this is closed with 1009.
_MAX_FRAMES = 65_536
_UNREAD_MESSAGES = 16
_UNREAD_SIZE = 1024 * 1024  # bytes, or characters of text


class _WebSocketConnection(asyncio.Protocol):
    """The transport's protocol once the handshake is done; also the handler's
    `interface.WebSocket`."""

    def __init__(self, conn: _HttpConnection, protocol: ServerProtocol) -> None:
        self._conn = conn
        self._protocol = protocol
        self._messages: deque[str | bytes] = deque()
        self._unread_size = 0  # of the messages waiting: bytes, or characters of text
        self._paused = False  # reading paused: the handler has not taken its messages
        self._write_paused = False  # and while the client does not read what is written
        self._parts = bytearray()
        self._frames = 0
        self._text = False
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    # -- asyncio's callbacks, from the transport ----------------------------------------

    def data_received(self, data: bytes) -> None:
        self._protocol.receive_data(data)
        self._take_events()

    def eof_received(self) -> bool | None:
        self._protocol.receive_eof()
        self._take_events()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake()
        self._conn.connection_lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._reading()
        self._conn.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._reading()
        self._conn.resume_writing()

    def _take_events(self) -> None:
        try:
            for event in self._protocol.events_received():
                if isinstance(event, Frame):
                    self._frame(event)
        except UnicodeDecodeError:
            # (The protocol does not check UTF-8 itself.) Nothing after it is read.
            self._protocol.fail(CloseCode.INVALID_DATA, "A text message is not UTF-8.")
        self._flush()  # pongs and the closing handshake
        self._wake()

    def _frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self._text = frame.opcode is Opcode.TEXT
            self._parts = bytearray(frame.data)
            self._frames = 1
        elif frame.opcode is Opcode.CONT:
            self._frames += 1
            if self._frames > _MAX_FRAMES:
                self._parts = bytearray()
                self._protocol.fail(CloseCode.MESSAGE_TOO_BIG, "A message of too many frames.")
                return
            self._parts += frame.data
        else:
            return  # ping, pong, close: the protocol answers them itself
        if frame.fin:
            data = bytes(self._parts)
            self._parts = bytearray()
            message = data.decode() if self._text else data
            self._messages.append(message)
            self._unread_size += len(message)
            if (len(self._messages) >= _UNREAD_MESSAGES
                    or self._unread_size >= _UNREAD_SIZE) and not self._paused:
                self._pause_reading()

    def _pause_reading(self) -> None:
        self._paused = True
        self._reading()

    def _resume_if_drained(self) -> None:
        """Reading resumes once the handler has taken half of what was waiting."""
        if (len(self._messages) <= _UNREAD_MESSAGES // 2
                and self._unread_size <= _UNREAD_SIZE // 2):
            self._paused = False
            self._reading()

    def _reading(self) -> None:
        """Read the client while neither its messages wait nor it leaves ours unread."""
        transport = self._conn.transport
        if transport is None or transport.is_closing():
            return
        if self._paused or self._write_paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _flush(self) -> None:
        transport = self._conn.transport
        for data in self._protocol.data_to_send():
            if transport is None or transport.is_closing():
                return
            if data:
                transport.write(data)
            else:  # the protocol is done: close the TCP connection
                self._conn.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- interface.WebSocket -------------------------------------------------------------

    @property
    def close_code(self) -> int | None:
        return self._protocol.close_code

    async def receive(self) -> str | bytes:
        while not self._messages:
            if self._closed or self._protocol.state in (State.CLOSING, State.CLOSED):
                raise self._closed_error()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._messages.popleft()
        self._unread_size -= len(message)
        if self._paused:
            self._resume_if_drained()
        return message

    async def send(self, data: str | bytes) -> None:
        if self._closed or self._protocol.state is not State.OPEN:
            raise self._closed_error()
        if isinstance(data, str):
            self._protocol.send_text(data.encode())
        else:
            self._protocol.send_binary(data)
        self._flush()
        await self._conn.drain()

    def _closed_error(self) -> WebSocketClosed:
        # The peer's close frame as soon as it came (the protocol's `close_code` waits for
        # the TCP connection's end, and says 1006 when it ended without one).
        received = self._protocol.close_rcvd
        if received is not None:
            return WebSocketClosed(received.code, received.reason)
        return WebSocketClosed(self._protocol.close_code, self._protocol.close_reason or "")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if code in (1005, 1006, 1015):  # reserved: never sent in a close frame
            code, reason = 1000, ""
        self.send_close(code, reason)

    def going_away(self) -> None:
        """The server closes (its shutdown's grace is over): the client gets a 1001 close
        frame (RFC 6455 7.4.1, "a server going down") before its socket closes, not a
        bare TCP close it would read as an abnormal 1006."""
        self.send_close(CloseCode.GOING_AWAY, "server shutting down")

    def send_close(self, code: int, reason: str) -> None:
        """Start the closing handshake (nothing once it has started)."""
        if self._closed or self._protocol.state is not State.OPEN:
            return
        try:
            self._protocol.send_close(code, reason)
        except InvalidState:
            return
        self._flush()


async def run_websocket(conn: _HttpConnection, request: FastRequest,
                        handler: WebSocketHandler, rest: bytes) -> None:
    """Answer the handshake of `request` and, if it succeeds, run `handler` on the
    connection until it returns; `rest` is what the client sent after the head."""
    # A handler may name the subprotocols it speaks (`interface.WebSocketHandler`): the
    # first of them the client offers is chosen; none offered, none is.
    speaks: tuple[str, ...] = getattr(handler, "subprotocols", ())
    protocol = ServerProtocol(max_size=_MAX_MESSAGE, select_subprotocol=(
        lambda _, offered: next((Subprotocol(p) for p in speaks if p in offered), None)))
    # The protocol reads the handshake itself: it gets the head llhttp already checked.
    head = "".join([f"GET {request.target} HTTP/1.1\r\n",
                    *(f"{name}: {value}\r\n" for name, value in request.headers.items()), "\r\n"])
    protocol.receive_data(head.encode("latin-1"))
    handshake = next((e for e in protocol.events_received() if isinstance(e, WsRequest)), None)
    if handshake is None:  # (llhttp accepted it, so this does not happen)
        conn.close()
        return
    response = protocol.accept(handshake)
    protocol.send_response(response)
    transport = conn.transport
    if transport is None or conn.closed:
        return
    for data in protocol.data_to_send():
        transport.write(data)
    if response.status_code != 101:  # a bad handshake: the protocol's own 4xx, then close
        conn.close()
        return
    socket = _WebSocketConnection(conn, protocol)
    transport.set_protocol(socket)
    conn.server.websockets.add(socket)
    conn.resume_reading()  # (before `rest`, whose messages may pause reading again)
    if rest:
        socket.data_received(rest)
    code = 1011  # the handler failed (its exception goes on to the connection's log)
    try:
        await handler(socket)
        code = 1000
    finally:
        conn.server.websockets.discard(socket)
        await socket.close(code)
