"""`FastServer`: a lean HTTP/1.1 server engine for one `interface.Application`.

One `asyncio.Protocol` per client connection feeds llhttp (httptools); each request
becomes a `FastRequest` and is handed to the application. An `Answer` is written as one
head+body `write`; a `ResponseStream` leaves as the application writes it.

Behaviour:

- keep-alive, and pipelining: one request is served at a time per connection, the
  rest wait in order (reading pauses when `connection._PIPELINE_DEPTH` wait);
- a client that leaves cancels its handler (the gateway then closes the upstream);
- `Expect: 100-continue` is answered when the handler first reads the body, so a 401
  or 413 goes out before the client uploads anything;
- a body the handler did not read is discarded (up to `max_body_bytes`, else the
  connection closes) so keep-alive survives an early error answer;
- requests the engine refuses itself are answered with the application's `refusal`:
  400 malformed HTTP, 414/431 over-long request line or headers, 408 a stalled request,
  413 a body over the handler's limit, 500 an unexpected exception (logged, never in
  the reply);
- timeouts are checked by one sweep a second over all connections (no timer per
  request): an idle keep-alive connection closes after `keepalive_timeout`, a
  request whose head or body stalls for `request_timeout` gets a 408.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import orjson

from azure_openai_proxy.http.connection import _HttpConnection
from azure_openai_proxy.http.interface import Answer, Application
from azure_openai_proxy.http.wire import DateHeader, answer_head

__all__ = ["FastServer", "serve_fast"]

log = logging.getLogger("azure_openai_proxy")

_SWEEP_SECONDS = 1.0


class FastServer:
    """The listening socket(s) and every open connection of one worker."""

    def __init__(self, app: Application, *, keepalive_timeout: float = 75.0,
                 request_timeout: float = 60.0, max_body_bytes: int = 64 * 1024 * 1024) -> None:
        self.app = app
        self.connections: set[_HttpConnection] = set()
        self.closing = False
        self.date = DateHeader()
        self.max_body_bytes = max_body_bytes
        self._keepalive_ticks = max(1, round(keepalive_timeout / _SWEEP_SECONDS))
        self._request_ticks = max(1, round(request_timeout / _SWEEP_SECONDS))
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._cleaned = False

    def connection(self) -> _HttpConnection:
        return _HttpConnection(self)

    async def listen(self, host: str | None, port: int, *, reuse_port: bool = False,
                     backlog: int = 2048, sock: socket.socket | None = None) -> None:
        """Listen on `host:port`, or on `sock`, a socket already bound (tests hand one
        over rather than guess a free port)."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(self.connection, sock=sock, backlog=backlog)
        else:
            self._server = await loop.create_server(
                self.connection, host, port, reuse_port=reuse_port or None, backlog=backlog,
            )
        self._sweeper = loop.call_later(_SWEEP_SECONDS, self._sweep)

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    def refusal(self, status: int, message: str, code: str | None = None) -> bytes:
        """A complete answer, in the application's words, that closes the connection."""
        try:
            answer = self.app.refusal(status, message, code)
        except Exception:  # the application's own bug must not leave the client hanging
            log.exception("refusal() failed for %d", status)
            answer = Answer(status, {"content-type": "application/json"},
                            orjson.dumps({"error": {"message": message}}))
        return answer_head(answer, "GET", False, self.date()) + answer.body

    # -- shutting down ---------------------------------------------------------------

    def _sweep(self) -> None:
        for conn in list(self.connections):
            conn.sweep(self._keepalive_ticks, self._request_ticks)
        if not self.closing:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_SECONDS, self._sweep)

    def close(self) -> None:
        """Stop accepting and close every connection now (handlers are cancelled)."""
        self._stop_listening()
        for conn in list(self.connections):
            conn.close()

    async def wait_closed(self) -> None:
        """Until the sockets are closed; then the application's cleanup runs (once)."""
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
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
        self.close()
        await asyncio.sleep(0)
        await self.wait_closed()

    def _stop_listening(self) -> None:
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()


async def serve_fast(
    app: Application, host: str | None, port: int, *, reuse_port: bool = False,
    backlog: int = 2048, keepalive_timeout: float = 75.0, request_timeout: float = 60.0,
    max_body_bytes: int = 64 * 1024 * 1024, sock: socket.socket | None = None,
) -> FastServer:
    """Start `app` and serve it on `host:port` (or the bound `sock`) with `FastServer`."""
    await app.startup()
    server = FastServer(app, keepalive_timeout=keepalive_timeout, request_timeout=request_timeout,
                        max_body_bytes=max_body_bytes)
    await server.listen(host, port, reuse_port=reuse_port, backlog=backlog, sock=sock)
    return server
