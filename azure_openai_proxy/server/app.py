"""`create_app(settings)`: the aiohttp application, its middlewares and its routes.

Middlewares, outermost first:
- `errors`: renders any `GatewayError` (and aiohttp's own HTTP errors) in OpenAI's
  error shape; an unexpected exception becomes a 500 without a traceback in the reply.
- `cors`: with `--cors`, answers preflights and adds `Access-Control-Allow-Origin`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from azure_openai_proxy import __version__
from azure_openai_proxy.errors import (
    BodyTooLarge,
    GatewayError,
    MethodNotAllowed,
    RouteNotFound,
    error_body,
)
from azure_openai_proxy.server.accesslog import RECORD, RequestRecord
from azure_openai_proxy.server.balancer import Balancer
from azure_openai_proxy.server.pipeline import Gateway
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.transport import AiohttpTransport, Transport

__all__ = ["GATEWAY", "RUNNER_OPTIONS", "create_app", "reload_app"]

# How the gateway must be served (aiohttp AppRunner options). Handler cancellation is
# how a client that leaves mid-stream closes the upstream request at once, even while
# the upstream is silent (a reasoning model thinking).
RUNNER_OPTIONS: dict[str, object] = {"handler_cancellation": True, "access_log": None}

log = logging.getLogger("azure_openai_proxy")

class GatewayHolder:
    """The app's current `Gateway`. A reload swaps it; a request in flight keeps the
    one it started with, so it finishes on the routing it began on."""

    __slots__ = ("current",)

    def __init__(self, gateway: Gateway) -> None:
        self.current = gateway


GATEWAY = web.AppKey("gateway", GatewayHolder)
_RETIRED = web.AppKey("retired_transports", set)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def _error_response(error: GatewayError) -> web.Response:
    response = web.Response(
        body=error.render(), status=error.http_status, content_type="application/json"
    )
    response.headers.update(error.headers())
    return response


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        response = await handler(request)
    except GatewayError as exc:
        response = _error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        response = _error_response(BodyTooLarge("The request body is too large."))
    except web.HTTPMethodNotAllowed:
        response = _error_response(MethodNotAllowed(f"Method {request.method} is not allowed."))
    except web.HTTPNotFound:
        response = _error_response(RouteNotFound(f"Unknown request URL: {request.method} {request.path}"))
    except web.HTTPException as exc:
        body = error_body(exc.reason, "invalid_request_error")
        response = web.Response(body=orjson.dumps(body), status=exc.status,
                                content_type="application/json")
    except Exception:
        # The reply never carries a traceback; the log gets one (it holds no keys: we
        # never put a key into an exception message).
        log.exception("unexpected error on %s %s", request.method, request.path)
        body = error_body("The gateway hit an unexpected error.", "server_error", "internal_error")
        response = web.Response(body=orjson.dumps(body), status=500,
                                content_type="application/json")
    record: RequestRecord | None = request.get(RECORD)
    if record is not None:
        if not record.status or response.status >= 400:
            record.status = response.status
        record.total_ms = (time.perf_counter() - started) * 1000
        record.emit()
    return response


def _cors(settings: Settings) -> Middleware:
    origins = frozenset(settings.cors_origins)
    any_origin = "*" in origins

    def allowed(origin: str | None) -> str | None:
        if any_origin:
            return "*"
        return origin if origin in origins else None

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = allowed(request.headers.get("Origin"))
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            headers = {
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": request.headers.get(
                    "Access-Control-Request-Headers", "Authorization, Content-Type"
                ),
                "Access-Control-Max-Age": "86400",
            }
            if origin:
                headers["Access-Control-Allow-Origin"] = origin
                if origin != "*":
                    headers["Vary"] = "Origin"
            return web.Response(status=204, headers=headers)
        response = await handler(request)
        if origin and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = origin
            if origin != "*":
                response.headers["Vary"] = "Origin"
        return response

    return cors


async def _health(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def _root(request: web.Request) -> web.Response:
    body = {"service": "azure-openai-proxy", "version": __version__, "status": "ok"}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def create_app(settings: Settings, transport: Transport | None = None) -> web.Application:
    """The gateway as an aiohttp application. One per worker process."""
    middlewares: list[Middleware] = []
    if settings.cors:
        middlewares.append(_cors(settings))
    middlewares.insert(0, errors)
    app = web.Application(
        middlewares=middlewares,  # type: ignore[arg-type]  # aiohttp's Middleware is narrower
        client_max_size=settings.max_body_bytes,
    )
    app[_RETIRED] = set()
    holder = GatewayHolder(_gateway(settings, transport or AiohttpTransport(settings.upstream)))
    app[GATEWAY] = holder

    async def dispatch(request: web.Request) -> web.StreamResponse:
        return await holder.current.handle(request)

    async def close_transport(app: web.Application) -> None:
        await app[GATEWAY].current.transport.close()

    app.on_cleanup.append(close_transport)
    app.router.add_get("/health", _health)
    app.router.add_route("HEAD", "/", _root)
    app.router.add_route("GET", "/", _root)
    app.router.add_route("*", "/{tail:.+}", dispatch)
    return app


def _gateway(settings: Settings, transport: Transport) -> Gateway:
    return Gateway(settings, transport, Balancer(settings.max_attempts))


def reload_app(app: web.Application, settings: Settings) -> None:
    """Serve new requests with `settings`. The upstream connection pool is kept when the
    upstream settings did not change (no reconnects, no dropped keep-alives)."""
    holder = app[GATEWAY]
    old = holder.current
    if settings.upstream == old.settings.upstream:
        holder.current = _gateway(settings, old.transport)
        return
    holder.current = _gateway(settings, AiohttpTransport(settings.upstream))
    grace = old.settings.shutdown_grace_seconds + old.settings.upstream.read_timeout

    async def close_later() -> None:
        # Requests that started on the old transport may still be streaming.
        await asyncio.sleep(grace)
        await old.transport.close()

    app[_RETIRED].add(asyncio.get_running_loop().create_task(close_later()))
