"""`create_app(settings)`: the aiohttp application and its routes.

Every route is wrapped by `_serve`, which renders any `GatewayError` (and aiohttp's own
HTTP errors) in OpenAI's error shape (an unexpected exception becomes a 500 without a
traceback in the reply), and counts and logs the request. The one middleware is `cors`,
present only with `--cors`: it answers preflights and adds `Access-Control-Allow-Origin`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from azure_openai_proxy import __version__
from azure_openai_proxy.balancing import PoolState
from azure_openai_proxy.errors import (
    BodyTooLarge,
    GatewayError,
    MethodNotAllowed,
    RouteNotFound,
    error_body,
)
from azure_openai_proxy.gateway.balancer import Balancer, rules_of
from azure_openai_proxy.gateway.pipeline import Gateway
from azure_openai_proxy.observability.accesslog import RECORD, AccessLog, RequestRecord
from azure_openai_proxy.observability.metrics import Metrics, metrics_for
from azure_openai_proxy.settings import Settings, UpstreamSettings
from azure_openai_proxy.upstream.entra import EntraTokens, TokenCredential
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.transport import AiohttpTransport, Transport

__all__ = ["GATEWAY", "METRICS", "RUNNER_OPTIONS", "create_app", "reload_app"]

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

    def __call__(self, request: web.Request) -> Awaitable[web.StreamResponse]:
        """The current gateway's handling of `request` (its coroutine, not wrapped in one
        more: `_serve` awaits it directly)."""
        return self.current.handle(request)


GATEWAY = web.AppKey("gateway", GatewayHolder)
METRICS = web.AppKey("metrics", Metrics)
_TOKENS = web.AppKey("entra_tokens", EntraTokens)
_RETIRED = web.AppKey("retired_transports", set)
ACCESS_LOG = web.AppKey("access_log", AccessLog)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def _error_response(error: GatewayError) -> web.Response:
    response = web.Response(
        body=error.render(), status=error.http_status, content_type="application/json"
    )
    response.headers.update(error.headers())
    return response


def _accounted(handler: Handler) -> Handler:
    """`handler`, with errors rendered in OpenAI's shape and the request counted and
    logged. A wrapper rather than a middleware: aiohttp rebuilds its middleware chain on
    every request, which the hot path cannot afford."""

    async def serve(request: web.Request) -> web.StreamResponse:
        return await _serve(request, handler)

    return serve


async def _serve(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    metrics = request.app[METRICS]
    metrics.request_started()
    status = 499  # what the metrics say if the client leaves (the handler is cancelled)
    try:
        try:
            response = await handler(request)
        except Exception as exc:  # every failure becomes an OpenAI-shaped answer
            response = _answer_for(request, exc)
        status = response.status
        return response
    finally:
        record: RequestRecord | None = request.get(RECORD)
        if record is None:
            record = RequestRecord("", request.method, route=_local_route(request))
        if not record.status or status >= 400:
            record.status = status
        record.total_ms = (time.perf_counter() - started) * 1000
        if record.request_id:
            request.app[ACCESS_LOG].write(record)
        metrics.request_finished(record)


def _local_route(request: web.Request) -> str:
    """`/health`, `/metrics`...: routes the gateway answers itself; "-" for unknown paths."""
    info = request.match_info
    resource = info.route.resource if info.route is not None else None
    name = resource.canonical if resource is not None else "-"
    return "-" if "{" in name else name


def _answer_for(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The answer for a handler's failure (inline in `_serve`, not a coroutine around the
    handler: one frame less on every request)."""
    if isinstance(exc, GatewayError):
        return _error_response(exc)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return _error_response(BodyTooLarge("The request body is too large."))
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return _error_response(MethodNotAllowed(f"Method {request.method} is not allowed."))
    if isinstance(exc, web.HTTPNotFound):
        return _error_response(RouteNotFound(f"Unknown request URL: {request.method} {request.path}"))
    if isinstance(exc, web.HTTPException):
        body = error_body(exc.reason, "invalid_request_error")
        return web.Response(body=orjson.dumps(body), status=exc.status,
                            content_type="application/json")
    # The reply never carries a traceback; the log gets one (it holds no keys: we never
    # put a key into an exception message).
    log.error("unexpected error on %s %s", request.method, request.path, exc_info=exc)
    body = error_body("The gateway hit an unexpected error.", "server_error", "internal_error")
    return web.Response(body=orjson.dumps(body), status=500, content_type="application/json")


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


async def _health_deployments(request: web.Request) -> web.Response:
    """Each deployment's live state. Needs a client key when client keys are set; never
    shows a key."""
    gateway = request.app[GATEWAY].current
    gateway.keyring.authenticate(request.headers)
    body = {
        "worker": os.getpid(),
        "routing_strategy": gateway.settings.routing_strategy,
        "deployments": gateway.balancer.snapshot(gateway.settings.deployments),
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


async def _root(request: web.Request) -> web.Response:
    body = {"service": "azure-openai-proxy", "version": __version__, "status": "ok"}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def create_app(
    settings: Settings,
    transport: Transport | None = None,
    *,
    credential: TokenCredential | None = None,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    access_log: AccessLog | None = None,
) -> web.Application:
    """The gateway as an aiohttp application. One per worker process.

    `credential` replaces azure-identity's `DefaultAzureCredential` for `auth: entra`
    deployments; `clock` (monotonic seconds) and `rng` drive the balancer. Tests pass
    fakes; a reload keeps them."""
    middlewares: list[Middleware] = [_cors(settings)] if settings.cors else []
    app = web.Application(
        middlewares=middlewares,  # type: ignore[arg-type]  # aiohttp's Middleware is narrower
        client_max_size=settings.max_body_bytes,
    )
    app[_RETIRED] = set()
    app[ACCESS_LOG] = access_log or AccessLog()
    holder_box: list[GatewayHolder] = []
    app[METRICS] = metrics_for(
        settings.metrics, lambda: holder_box[0].current.balancer.state, clock
    )
    tokens = EntraTokens(credential)
    app[_TOKENS] = tokens
    gateway = _gateway(app, settings, transport or transport_for(settings.upstream), None,
                       clock, rng or random.Random())
    holder = GatewayHolder(gateway)
    holder_box.append(holder)
    app[GATEWAY] = holder

    async def close_upstream(app: web.Application) -> None:
        app[ACCESS_LOG].flush()
        await app[GATEWAY].current.transport.close()
        await tokens.close()

    app.on_cleanup.append(close_upstream)
    app.router.add_get("/health", _accounted(_health))
    app.router.add_get("/health/deployments", _accounted(_health_deployments))
    if settings.metrics:
        app.router.add_get("/metrics", _accounted(_metrics))
    app.router.add_route("HEAD", "/", _accounted(_root))
    app.router.add_route("GET", "/", _accounted(_root))
    app.router.add_route("*", "/{tail:.+}", functools.partial(_serve, handler=holder))
    return app


def transport_for(upstream: UpstreamSettings) -> Transport:
    """The upstream client the settings ask for (see `UpstreamSettings.transport`)."""
    proxied = bool(upstream.http_proxy or upstream.socks_proxy)  # 'fast' + proxy is refused in settings
    if upstream.transport == "aiohttp" or proxied:
        return AiohttpTransport(upstream)
    return FastTransport(upstream)


def _gateway(
    app: web.Application, settings: Settings, transport: Transport,
    previous: Gateway | None, clock: Callable[[], float], rng: random.Random,
) -> Gateway:
    rules = rules_of(settings)
    state = PoolState.for_deployments(
        settings.deployments, rules, previous.balancer.state if previous is not None else None
    )
    balancer = Balancer(settings, state, app[METRICS], clock, rng)
    # A reload keeps which resource created which file, batch or response.
    affinity = previous.affinity if previous is not None else None
    return Gateway(settings, transport, balancer, app[_TOKENS], affinity)


def reload_app(app: web.Application, settings: Settings) -> None:
    """Serve new requests with `settings`. Requests in flight finish on the gateway they
    started on; deployments that are still configured (same endpoint and deployment
    name) keep their live state (cooldowns, circuits, in-flight counts). The upstream
    connection pool is kept when the upstream settings did not change (no reconnects,
    no dropped keep-alives). `/metrics` being on or off is fixed at start-up."""
    holder = app[GATEWAY]
    old = holder.current
    clock, rng = old.balancer.clock, old.balancer.rng
    if settings.upstream == old.settings.upstream:
        holder.current = _gateway(app, settings, old.transport, old, clock, rng)
        return
    holder.current = _gateway(app, settings, transport_for(settings.upstream), old, clock, rng)
    grace = old.settings.shutdown_grace_seconds + old.settings.upstream.read_timeout

    async def close_later() -> None:
        # Requests that started on the old transport may still be streaming.
        await asyncio.sleep(grace)
        await old.transport.close()

    app[_RETIRED].add(asyncio.get_running_loop().create_task(close_later()))
