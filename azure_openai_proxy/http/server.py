"""`FastServer`: a lean HTTP/1.1 server engine for one `interface.Application`.

One `asyncio.Protocol` per client connection feeds llhttp (httptools); each request
becomes a `FastRequest` and is handed to the application. An `Answer` is written as one
head+body `write`; a `ResponseStream` leaves as the application writes it.

Behaviour:

- every connection waiting in the accept queue is taken at each wake-up (`accept.py`:
  libuv takes one per loop iteration, which starved new connections under load);
- keep-alive, and pipelining: one request is served at a time per connection, the
  rest wait in order (reading pauses when `connection._PIPELINE_DEPTH` wait); an
  HTTP/1.0 request kept alive is answered `Connection: keep-alive`; bytes behind a
  request that closes the connection get no answer (RFC 9112 9.6);
- a client that leaves cancels its handler (the gateway then closes the upstream);
- a graceful shutdown (`shutdown`) lets the requests being served finish, their
  bodies read to the end, and closes each connection after its answer; the handlers
  still running when its grace is over are cancelled, and their ends awaited (up to
  `_CANCELLED_WAIT`) before the application's cleanup;
- `Expect: 100-continue` is answered when the handler first reads the body, so a 401
  or 413 goes out before the client uploads anything (a Content-Length over the
  handler's limit is a 413 without "100 Continue", then the connection closes; so
  does any answer to a client still waiting, one that has sent none of its body);
- a body the handler did not read is read and dropped after its answer (up to the
  larger of `max_body_bytes` and 16 MB, for at most 30 s: `answer.py`; past that the
  connection closes), so keep-alive survives an early error answer, and on a connection that
  closes after it (`Connection: close`, HTTP/1.0) the close waits for the body's end:
  closed on an upload, the kernel resets it and the client may never read the answer;
- requests the engine refuses itself are answered with the application's `refusal`,
  once, then the connection closes: 400 malformed HTTP or framing (`head.py` has the
  RFC 9112 rules), 405 CONNECT, 501 a transfer coding other than chunked, 505 an HTTP
  version other than 1.0/1.1, 414/431 over-long request line or headers, 408 a head or
  body not received in time, 413 a body over the handler's limit, 500 an unexpected
  exception (logged, never in the reply), 503 a connection over `max_connections`;
- `Upgrade` is not performed (h2c): the request is served as HTTP/1.1, body and all,
  except a WebSocket the application's `websocket` hook takes (`websocket.py`);
- a refusal, the connection's last answer, is followed by a lingering close
  (`closing.py`), so that a client still sending reads it rather than a reset;
- timeouts are deadlines (`ServerLimits`), checked by one sweep over all connections
  (no timer per request; once a second, more often only when a timeout is under 4 s):
  a head is due `head_timeout` after its first byte (a new connection's first head,
  after the accept), however it trickles in; a body `body_timeout` after its head (or
  after "100 Continue"); the next request `keepalive_timeout` after an answer; a client
  that reads nothing of an answer for `send_timeout` is cut off. Time during which the
  server itself paused reading (pipelining, a full body buffer) does not count.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from azure_openai_proxy.http.accept import Listener, listening_sockets
from azure_openai_proxy.http.closing import OverCapacity
from azure_openai_proxy.http.connection import _HttpConnection
from azure_openai_proxy.http.interface import (
    Answer,
    Application,
    HttpRequest,
    WebSocketApplication,
    WebSocketHandler,
)
from azure_openai_proxy.http.wire import DateHeader, answer_head

if TYPE_CHECKING:
    from azure_openai_proxy.http.websocket import _WebSocketConnection

__all__ = ["FastServer", "ServerLimits", "serve_fast"]

_CANCELLED_WAIT = 2.0  # seconds, for the handlers a shutdown cancels to end

log = logging.getLogger("azure_openai_proxy")


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Timeouts (seconds) and the connection cap of one worker's server."""

    head_timeout: float = 30.0  # the whole head, from its first byte
    body_timeout: float = 300.0  # the whole body, from the end of its head
    keepalive_timeout: float = 75.0  # idle between two requests
    send_timeout: float = 60.0  # a client reading nothing of an answer
    max_connections: int = 10_000  # past it a new connection gets a 503 and is closed

    def __post_init__(self) -> None:
        for name in ("head_timeout", "body_timeout", "keepalive_timeout", "send_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")

    @property
    def sweep_seconds(self) -> float:
        """Once a second; more often when a timeout is short (tests), so that a deadline
        fires at most a quarter late."""
        shortest = min(self.head_timeout, self.body_timeout, self.keepalive_timeout,
                       self.send_timeout)
        return max(0.01, min(1.0, shortest / 4))

    def ticks(self, seconds: float) -> int:
        """Sweeps from now until `seconds` have surely passed (the current sweep
        period has already begun: one more)."""
        return math.ceil(seconds / self.sweep_seconds) + 1


class FastServer:
    """The listening socket(s) and every open connection of one worker."""

    def __init__(self, app: Application, *, limits: ServerLimits | None = None,
                 max_body_bytes: int = 64 * 1024 * 1024) -> None:
        self.app = app
        # The application's WebSocket hook, if it has one (see websocket.py).
        self.websocket_hook: Callable[[HttpRequest], Awaitable[WebSocketHandler | None]] | None = (
            app.websocket if isinstance(app, WebSocketApplication) else None)
        self.limits = limits = limits or ServerLimits()
        self.connections: set[_HttpConnection] = set()
        self.refusing: set[OverCapacity] = set()
        self.websockets: set[_WebSocketConnection] = set()  # the open ones (websocket.py)
        self.closing = False
        self.date = DateHeader()
        self.max_body_bytes = max_body_bytes
        # Deadlines count sweeps: `tick` is the number of sweeps so far.
        self.tick = 0
        self.head_ticks = limits.ticks(limits.head_timeout)
        self.body_ticks = limits.ticks(limits.body_timeout)
        self.keepalive_ticks = limits.ticks(limits.keepalive_timeout)
        self.send_ticks = limits.ticks(limits.send_timeout)
        # The deadline of a head, body or idle wait starting now (kept by the sweep, so
        # that a request pays one attribute read for each).
        self.head_due = self.body_due = self.idle_due = 0
        self._advance(1)
        self._listener: Listener | None = None
        # The loop it serves on, looked up once (`listen`, or the first connection's).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._cleaned = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, kept: `asyncio.get_running_loop()` is a getpid() system call
        on Python 3.11, and a connection and its streams need it."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def connection(self) -> asyncio.Protocol:
        """The protocol for a new connection: served, or refused past the cap."""
        if len(self.connections) >= self.limits.max_connections:
            return OverCapacity(self)
        return _HttpConnection(self)

    async def listen(self, host: str | None, port: int, *, reuse_port: bool = False,
                     backlog: int = 2048, sock: socket.socket | None = None) -> None:
        """Listen on `host:port`, or on `sock`, a socket already bound (tests hand one
        over rather than guess a free port). Every connection waiting is accepted at each
        wake-up (`accept.py` says why this is not `loop.create_server`)."""
        self._loop = loop = asyncio.get_running_loop()
        sockets = [sock] if sock is not None else listening_sockets(host, port,
                                                                     reuse_port=reuse_port)
        self._listener = Listener(loop, sockets, self.connection, backlog)
        self._listener.start()
        self._sweeper = loop.call_later(self.limits.sweep_seconds, self._sweep)

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(self._listener.sockets) if self._listener is not None else ()

    def refusal(self, status: int, message: str, code: str | None = None,
                headers: dict[str, str] | None = None) -> bytes:
        """A complete answer, in the application's words, that closes the connection."""
        try:
            answer = self.app.refusal(status, message, code)
        except Exception:  # the application's own bug must not leave the client hanging
            log.exception("refusal() failed for %d", status)
            answer = Answer(status, {"content-type": "application/json"},
                            orjson.dumps({"error": {"message": message}}))
        return answer_head(answer, "GET", False, self.date(), headers) + answer.body

    # -- shutting down ---------------------------------------------------------------

    def _advance(self, tick: int) -> None:
        self.tick = tick
        self.head_due = tick + self.head_ticks
        self.body_due = tick + self.body_ticks
        self.idle_due = tick + self.keepalive_ticks

    def _sweep(self) -> None:
        tick = self.tick + 1
        self._advance(tick)
        for conn in list(self.connections):
            conn.sweep(tick)
        for refused in list(self.refusing):
            refused.sweep(tick)
        if not self.closing:
            self._sweeper = asyncio.get_running_loop().call_later(self.limits.sweep_seconds,
                                                                  self._sweep)

    def close(self) -> None:
        """Stop accepting and close every connection now (handlers are cancelled)."""
        self._stop_listening()
        for websocket in list(self.websockets):
            websocket.going_away()  # its client told (1001) before its connection closes
        for conn in list(self.connections):
            conn.close()
        for refused in list(self.refusing):
            refused.close()

    async def wait_closed(self) -> None:
        """Until the sockets are closed (at once: `close` closes them); then the
        application's cleanup runs (once)."""
        if not self._cleaned:
            self._cleaned = True
            await self.app.cleanup()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting; let in-flight requests and streams finish for up to `grace`
        seconds (idle keep-alive connections close at once); then cancel the rest."""
        self._stop_listening()
        await self.app.shutdown()
        for conn in list(self.connections):
            conn.closing = True
            if not conn.serving:
                conn.close()
        deadline = asyncio.get_running_loop().time() + grace
        while any(c.serving for c in self.connections):
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.05)
        # The handlers still running are cancelled: their `finally` (a cut stream's or
        # Realtime response's usage record) runs before the application's cleanup
        # closes the ledger, for up to `_CANCELLED_WAIT` seconds. (Here, not by the
        # connection's end: a transport closed with unsent data, its client reading
        # nothing, never ends.)
        cancelled = [c.task for c in self.connections if c.task is not None and c.serving]
        self.close()
        for task in cancelled:
            task.cancel()
        await asyncio.sleep(0)
        if cancelled:
            await asyncio.wait(cancelled, timeout=_CANCELLED_WAIT)
        await self.wait_closed()

    def _stop_listening(self) -> None:
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._listener is not None:
            self._listener.close()


async def serve_fast(
    app: Application, host: str | None, port: int, *, reuse_port: bool = False,
    backlog: int = 2048, limits: ServerLimits | None = None,
    max_body_bytes: int = 64 * 1024 * 1024, sock: socket.socket | None = None,
) -> FastServer:
    """Start `app` and serve it on `host:port` (or the bound `sock`) with `FastServer`."""
    await app.startup()
    server = FastServer(app, limits=limits, max_body_bytes=max_body_bytes)
    await server.listen(host, port, reuse_port=reuse_port, backlog=backlog, sock=sock)
    return server
