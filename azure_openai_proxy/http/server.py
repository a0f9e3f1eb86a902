"""`FastServer`: a lean HTTP/1.1 server engine for the gateway's aiohttp application.

One `asyncio.Protocol` per client connection feeds llhttp (httptools); each request
becomes a `FastRequest` (the slice of `web.Request` the gateway uses) and is handed to
the handler the app's router resolves, with the app's middlewares, exactly as aiohttp
would. A returned `web.Response` with a bytes body is written as one head+body `write`;
anything else (a `web.StreamResponse` the relay prepared) goes through aiohttp's own
`prepare`/`write`/`write_eof` onto our `PayloadWriter`, so streams leave as they come.

Behaviour, as aiohttp's server with `handler_cancellation=True`:

- keep-alive, and pipelining: one request is served at a time per connection, the
  rest wait in order (reading pauses when `fastserver_connection._PIPELINE_DEPTH` wait);
- a client that leaves cancels its handler (the gateway then closes the upstream);
- `Expect: 100-continue` is answered when the handler first reads the body, so a 401
  or 413 goes out before the client uploads anything;
- a body the handler did not read is discarded (up to `client_max_size`, else the
  connection closes) so keep-alive survives an early error answer;
- errors outside the handler are answered in OpenAI's shape: 400 malformed HTTP,
  414/431 over-long request line or headers, 408 a stalled request, 404/405/413 from
  routing or reading, 500 an unexpected exception (logged, never in the reply);
- timeouts are checked by one sweep a second over all connections (no timer per
  request): an idle keep-alive connection closes after `keepalive_timeout`, a
  request whose head or body stalls for `request_timeout` gets a 408.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

from aiohttp import web
from yarl import URL

from azure_openai_proxy.http.connection import _HttpConnection
from azure_openai_proxy.http.request import (
    FastRequest,
)
from azure_openai_proxy.http.wire import (
    _DateHeader,
)

__all__ = ["FastServer", "serve_fast"]

log = logging.getLogger("azure_openai_proxy")

Handler = Callable[[FastRequest], Awaitable[web.StreamResponse]]

_ROUTE_CACHE_SIZE = 4096
_SWEEP_SECONDS = 1.0


class FastServer:
    """The listening socket(s) and every open connection of one worker."""

    def __init__(self, app: web.Application, *, keepalive_timeout: float = 75.0,
                 request_timeout: float = 60.0) -> None:
        self.app = app
        self.connections: set[_HttpConnection] = set()
        self.closing = False
        self.date = _DateHeader()
        self._keepalive_ticks = max(1, round(keepalive_timeout / _SWEEP_SECONDS))
        self._request_ticks = max(1, round(request_timeout / _SWEEP_SECONDS))
        self._routes: dict[tuple[str, str], tuple[Handler, Any]] = {}
        self.urls: dict[str, URL] = {}  # parsed request targets, shared by requests
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._cleaned = False
        self.shutdown_grace = 30.0

    def connection(self) -> _HttpConnection:
        return _HttpConnection(self)

    async def listen(self, host: str | None, port: int, *, reuse_port: bool, backlog: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.connection, host, port, reuse_port=reuse_port or None, backlog=backlog,
        )
        self._sweeper = loop.call_later(_SWEEP_SECONDS, self._sweep)

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    # -- dispatch ----------------------------------------------------------------------

    def dispatch(self, request: FastRequest) -> Awaitable[web.StreamResponse]:
        """The handler's coroutine for `request` (not a coroutine of its own around it:
        one frame less on every request)."""
        key = (request.method, request.raw_target.partition("?")[0])
        found = self._routes.get(key)
        if found is None:
            return self._dispatch_new(request, key)
        handler, request.match_info = found
        return handler(request)

    async def _dispatch_new(
        self, request: FastRequest, key: tuple[str, str]
    ) -> web.StreamResponse:
        found = await self._resolve(request)
        if len(self._routes) >= _ROUTE_CACHE_SIZE:
            self._routes.clear()
        self._routes[key] = found
        handler, request.match_info = found
        return await handler(request)

    async def _resolve(self, request: FastRequest) -> tuple[Handler, Any]:
        """The app's route for the request's method and path, wrapped in its middlewares."""
        app = self.app
        match_info = await app.router.resolve(request)  # type: ignore[arg-type]
        match_info.add_app(app)
        match_info.freeze()
        handler = cast(Handler, match_info.handler)
        for middleware in reversed(app.middlewares):
            handler = cast(Handler, partial(middleware, handler=handler))  # type: ignore[arg-type]
        return handler, match_info

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
        """Until the sockets are closed; then the app's cleanup hooks run (once)."""
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
    app: web.Application, host: str | None, port: int, *, reuse_port: bool = False,
    backlog: int = 2048, shutdown_grace: float = 30.0, keepalive_timeout: float = 75.0,
    request_timeout: float = 60.0,
) -> FastServer:
    """Start `app` (its on_startup hooks) and serve it on `host:port` with `FastServer`.
    `shutdown_grace` is kept for `FastServer.shutdown()`'s default caller."""
    app.freeze()
    await app.startup()
    server = FastServer(app, keepalive_timeout=keepalive_timeout, request_timeout=request_timeout)
    server.shutdown_grace = shutdown_grace
    await server.listen(host, port, reuse_port=reuse_port, backlog=backlog)
    return server
