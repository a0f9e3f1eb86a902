"""A scripted HTTP/2 server on loopback, built on the `h2` package's state machine (a
reference implementation, not ours): for what nginx will not do on demand (GOAWAY,
PING, REFUSED_STREAM, a stalled answer, a body larger than the windows).

Paths: `/ok` answers "hello"; `/big` 1 MiB as flow control allows; `/stall` a head and
then nothing; `/ping` a PING before answering once it is acknowledged; `/goaway` and
`/refuse` turn away their first request (GOAWAY below it, REFUSED_STREAM) and answer
the next; `/echo` answers the request body's length once it has all arrived (`/ok`
answers at once, before the body); `/headless` ends its stream without a head; `/die`
sends a head and a piece of body and closes the connection. `requests` lists
(connection number, path) as they come."""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from azure_openai_proxy.upstream.h2.frames import STREAM_WINDOW

__all__ = ["BIG", "ScriptedH2Server"]

# larger than a stream's window: a reader that stops reading stops the server
BIG = 3 * STREAM_WINDOW


class ScriptedH2Server:
    def __init__(self, max_streams: int = 100, ack_delay: float = 0.0) -> None:
        self.max_streams = max_streams
        self.ack_delay = ack_delay  # request body bytes are credited back this late
        self.requests: list[tuple[int, str]] = []
        self.pings_acked = 0
        self.resets: list[tuple[int, int]] = []  # (stream, code) the client reset
        self.turned_away: set[str] = set()
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.url = ""
        self.protocols: list[_Protocol] = []
        self.bodies: list[bytes] = []  # request bodies, as they ended

    async def start(self, ssl_context: Any = None) -> str:
        """Listen (with `ssl_context`: TLS, its ALPN as the context says); the URL."""
        self.server = await asyncio.get_running_loop().create_server(
            lambda: _Protocol(self), "127.0.0.1", 0, ssl=ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        return self.url

    def pending_bytes(self) -> int:
        """Body bytes the server holds back for want of window, over its connections."""
        return sum(len(body) for protocol in self.protocols for body in protocol.pending.values())

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


class _Protocol(asyncio.Protocol):
    def __init__(self, script: ScriptedH2Server) -> None:
        self.script = script
        script.connections += 1
        script.protocols.append(self)
        self.number = script.connections
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transport: Any = None
        self.pending: dict[int, bytes] = {}  # stream -> body still to send
        self.after_ping: list[int] = []
        self.received: dict[int, bytearray] = {}
        self.echoes: set[int] = set()  # `/echo` streams, answered at the body's end

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.script.max_streams})
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except Exception:
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers: dict[Any, Any] = dict(event.headers or [])  # str: header_encoding
                self.request(event.stream_id, str(headers[":path"]))
            elif isinstance(event, h2.events.DataReceived):
                self.received.setdefault(event.stream_id, bytearray()).extend(event.data or b"")
                if self.script.ack_delay:
                    asyncio.get_running_loop().call_later(
                        self.script.ack_delay, self.ack, event.flow_controlled_length,
                        event.stream_id)
                else:
                    self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                        event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                body = bytes(self.received.pop(event.stream_id, b""))
                self.script.bodies.append(body)
                if event.stream_id in self.echoes:
                    self.echoes.discard(event.stream_id)
                    self.answer(event.stream_id, str(len(body)).encode())
            elif isinstance(event, h2.events.WindowUpdated):
                self.send_pending()
            elif isinstance(event, h2.events.PingAckReceived):
                self.script.pings_acked += 1
                for stream in self.after_ping:
                    self.answer(stream, b"pong")
                self.after_ping.clear()
            elif isinstance(event, h2.events.StreamReset):
                self.script.resets.append((event.stream_id, event.error_code))
                self.pending.pop(event.stream_id, None)
        self.flush()

    def ack(self, size: int, stream: int) -> None:
        try:
            self.conn.acknowledge_received_data(size, stream)
        except h2.exceptions.H2Error:
            return  # the stream ended meanwhile
        self.flush()

    def request(self, stream: int, path: str) -> None:
        self.script.requests.append((self.number, path))
        if path in ("/goaway", "/refuse") and path not in self.script.turned_away:
            self.script.turned_away.add(path)
            if path == "/goaway":
                self.conn.close_connection(last_stream_id=max(stream - 2, 0))
            else:
                self.conn.reset_stream(stream, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        if path == "/die":  # a head, a piece of body, and the connection is gone
            self.conn.send_headers(stream, [(":status", "200")])
            self.conn.send_data(stream, b"part")
            self.flush()
            self.transport.close()
            return
        if path == "/headless":  # END_STREAM with no head: not an answer
            self.conn.send_data(stream, b"", end_stream=True)
            return
        if path == "/stall":
            self.conn.send_headers(stream, [(":status", "200")])
        elif path == "/ping":
            self.conn.ping(b"12345678")
            self.after_ping.append(stream)
        elif path == "/echo":
            self.echoes.add(stream)
        elif path == "/big":
            self.conn.send_headers(stream, [(":status", "200")])
            self.pending[stream] = bytes(range(256)) * (BIG // 256)
            self.send_pending()
        else:
            self.answer(stream, b"hello")

    def answer(self, stream: int, body: bytes) -> None:
        self.conn.send_headers(stream, [(":status", "200"), ("content-type", "text/plain"),
                                        ("content-length", str(len(body)))])
        self.conn.send_data(stream, body, end_stream=True)

    def send_pending(self) -> None:
        for stream, body in list(self.pending.items()):
            size = min(self.conn.local_flow_control_window(stream), len(body),
                       self.conn.max_outbound_frame_size)
            while size > 0:
                self.conn.send_data(stream, body[:size], end_stream=size == len(body))
                body = body[size:]
                size = min(self.conn.local_flow_control_window(stream), len(body),
                           self.conn.max_outbound_frame_size) if body else 0
            if body:
                self.pending[stream] = body
            else:
                del self.pending[stream]
