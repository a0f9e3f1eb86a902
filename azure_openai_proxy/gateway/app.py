"""`create_app(settings)`: the gateway as an `http.interface.Application`.

Every request goes through `GatewayApp.__call__`, which sends the gateway's own routes
(`/`, `/health`, `/health/deployments`, `/metrics`) to their handlers and everything
else to the pipeline (`pipeline.Gateway.handle`); renders any error in OpenAI's shape
(the one renderer, `error_answer`: an unexpected exception becomes a 500 without a
traceback in the reply); answers CORS preflights and marks answers when `cors` is on;
and counts and logs the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable

import orjson

from azure_openai_proxy import __version__
from azure_openai_proxy.balancing import PoolState
from azure_openai_proxy.errors import BodyTooLarge as BodyTooLargeError
from azure_openai_proxy.errors import (
    GatewayError,
    HttpRefused,
    MethodNotAllowed,
    RequestTimeout,
    RouteNotFound,
)
from azure_openai_proxy.gateway.admin import AdminApi, admin_route
from azure_openai_proxy.gateway.admin_usage import ADMIN_USAGE_PATH, usage_answer
from azure_openai_proxy.gateway.balancer import Balancer, rules_of
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.gateway.ledger import (
    LedgerWriter,
    deployment_models,
    ledger_enabled,
    open_ledger,
    prices_of,
)
from azure_openai_proxy.gateway.ownership import ObjectOwners
from azure_openai_proxy.gateway.pipeline import Gateway
from azure_openai_proxy.gateway.realtime import RealtimeSession
from azure_openai_proxy.gateway.realtime_open import open_session
from azure_openai_proxy.gateway.realtime_wire import not_upgraded, realtime_target
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.ratelimit import RateLimiter
from azure_openai_proxy.http.interface import (
    Answer,
    BodyTimedOut,
    BodyTooLarge,
    ClientDisconnected,
    HttpRequest,
    Reply,
    WebSocketHandler,
    answered_by_engine,
)
from azure_openai_proxy.observability.accesslog import AccessLog
from azure_openai_proxy.observability.metrics import Exposition, Metrics, metrics_for
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.settings import Settings, UpstreamSettings
from azure_openai_proxy.store.sqlite import database_path
from azure_openai_proxy.upstream.auto import AutoTransport
from azure_openai_proxy.upstream.entra import EntraTokens, TokenCredential
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.h2 import H2Transport
from azure_openai_proxy.upstream.transport import AiohttpTransport, Transport

__all__ = ["GatewayApp", "create_app", "error_answer"]

log = logging.getLogger("azure_openai_proxy")
# At shutdown, the longest the owners' background writes are waited for.
_OWNERS_WRITTEN_WAIT = 5.0

_JSON = "application/json"
_LOCAL_METHODS = frozenset({"GET", "HEAD"})

LocalHandler = Callable[[HttpRequest], Answer]


def error_answer(error: GatewayError) -> Answer:
    """The one rendering of an error: OpenAI's `{"error": {...}}` with its status and
    headers (`retry-after`...)."""
    headers = {"content-type": _JSON}
    headers.update(error.headers())
    if error.limit_headers:
        headers.update(error.limit_headers)
    return Answer(error.http_status, headers, error.render())


def _unexpected(request: HttpRequest, exc: BaseException) -> Answer:
    # The reply never carries a traceback; the log gets one (it holds no keys: we never
    # put a key into an exception message).
    log.error("unexpected error on %s %s", request.method, request.path, exc_info=exc)
    return error_answer(GatewayError("The gateway hit an unexpected error.", code="internal_error"))


class GatewayApp:
    """One worker's gateway: local routes, the pipeline, CORS, accounting. A reload swaps
    `gateway`; a request in flight keeps the one it started with, so it finishes on the
    routing it began on."""

    def __init__(self, settings: Settings, gateway: Gateway, metrics: Metrics,
                 access_log: AccessLog, tokens: EntraTokens,
                 ledger: LedgerWriter | None = None) -> None:
        self.settings = settings
        self.ledger = ledger
        self.gateway = gateway
        self.metrics = metrics
        self.access_log = access_log
        self.tokens = tokens
        self.retired: set[asyncio.Task[None]] = set()
        self._cors = _Cors(settings) if settings.cors else None
        self._local: dict[str, LocalHandler] = {
            "/": self._root, "/health": _health, "/health/deployments": self._health_deployments,
        }
        self._exposition = Exposition(metrics)
        if settings.metrics:
            self._local["/metrics"] = self._metrics
        # Realtime sessions refused before their handshake: the answer `__call__` gives
        # (the engine serves a declined upgrade as plain HTTP at once, so it is popped).
        self._refused: dict[HttpRequest, Answer] = {}
        self._sessions: set[RealtimeSession] = set()  # the open ones (until their end)
        self._shutting_down = False
        self._admin: AdminApi | None = None
        directory, limiter = gateway.directory, gateway.limiter
        # With governance on, whether or not an admin key is set at start: the API reads
        # the key in force at each request, so a reload that adds one opens it (404 until).
        if directory is not None and limiter is not None:
            self._admin = AdminApi(self._admin_key, directory, limiter,
                                   lambda headers: self.gateway.authenticate(headers))

    def _admin_key(self) -> str | None:
        """The admin key of the settings in force (a reload may change or remove it)."""
        key = self.gateway.settings.admin_key
        return None if key is None else key.get_secret_value()

    # -- interface.Application ---------------------------------------------------------

    async def websocket(self, request: HttpRequest) -> WebSocketHandler | None:
        """The Realtime API (`gateway/realtime.py`): a session's relay, or None when the
        request is not a realtime one or is refused (then answered by `__call__`)."""
        gateway = self.gateway
        target = realtime_target(request.path, request.query_string, gateway.settings.api_base)
        if target is None:
            return None
        record = gateway.new_record(request.method)
        sessions = self._sessions

        def ended(record: RequestRecord) -> None:
            sessions.discard(session)
            self.access_log.write(record)

        try:
            session = await open_session(gateway, request, target, record, self._responded,
                                         ended, lambda: self._shutting_down)
        except Exception as exc:
            answer = self._failure(request, exc)
            record.status = answer.status
            record.error = type(exc).__name__
            self.access_log.write(record)
            self._refused[request] = answer
            return None
        record.status = 101
        sessions.add(session)
        return session

    def _responded(self, record: RequestRecord) -> None:
        """A realtime response's usage: logged and in the ledger, one record each."""
        self.access_log.write(record)
        if self.ledger is not None:
            self.ledger.add(record)

    def refusal(self, status: int, message: str, code: str | None = None) -> Answer:
        return error_answer(HttpRefused(status, message, code))

    async def startup(self) -> None:
        if self.gateway.directory is not None:
            await self.gateway.directory.start()
        if self.ledger is not None:
            await asyncio.to_thread(self.ledger.start)

    def abandon_start(self) -> None:
        """A stop came while `startup` runs: the key directory's first load is not
        waited for (runtime/runner.py, from the SIGTERM/SIGINT handler)."""
        if self.gateway.directory is not None:
            self.gateway.directory.abandon_start()

    async def shutdown(self) -> None:
        self._shutting_down = True
        for session in list(self._sessions):
            session.going_away()  # closed now, or when its response is done

    async def cleanup(self) -> None:
        self.access_log.flush()
        if self.ledger is not None:
            await asyncio.to_thread(self.ledger.close)
        await self.gateway.transport.close()
        await self.tokens.close()
        if self.gateway.directory is not None:
            await self.gateway.directory.close()
        # What was claimed or noted in the background (a stream's ids, a turn's context)
        # reaches the database before it closes.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.gateway.owners.written(), _OWNERS_WRITTEN_WAIT)
        await asyncio.to_thread(self.gateway.owners.close)
        for task in self.retired:
            task.cancel()

    # -- serving -------------------------------------------------------------------------

    async def __call__(self, request: HttpRequest) -> Reply:
        """`interface.Application`: a coroutine itself, not a call that makes one (a
        Python call fewer a request, issue 15)."""
        started = time.perf_counter()
        metrics = self.metrics
        metrics.request_started()
        status = 499  # what the metrics say if the client leaves (the handler is cancelled)
        record: RequestRecord | None = None
        admin = False  # the admin API's: logged, never usage
        try:
            if self._refused:
                refused = self._refused.pop(request, None)
                if refused is not None:
                    status = refused.status
                    return refused
            if self._cors is not None:
                preflight = self._cors.apply(request)
                if preflight is not None:
                    status = preflight.status
                    return preflight
            local = self._local.get(request.path)
            if local is not None:
                reply: Reply = self._local_answer(request, local)
            elif request.path == ADMIN_USAGE_PATH:
                record, admin = self._admin_record(request), True
                reply = await self._admin_usage(request, record)
            elif (self._admin is not None and request.path.startswith("/admin/")
                    and self._admin_key() is not None):  # else the pipeline's 404, logged
                record, admin = self._admin_record(request), True
                try:
                    reply = await self._admin.handle(request)
                except Exception as exc:
                    reply = self._failure(request, exc)
                    record.error = type(exc).__name__
            else:
                gateway = self.gateway
                record = gateway.new_record(request.method)
                try:
                    reply = await gateway.handle(request, record)
                except ClientDisconnected:
                    # The client left while its answer was being written, before the
                    # engine saw the connection close (so before the handler could be
                    # cancelled): a 499 like any client that leaves, not our error. The
                    # engine closes the connection quietly.
                    raise
                except Exception as exc:  # every failure becomes an OpenAI-shaped answer
                    reply = self._failure(request, exc)
            status = reply.status
            return reply
        except asyncio.CancelledError as exc:
            # The engine answered the request itself (a malformed or late body): log what
            # the client got, not a client that left.
            status = answered_by_engine(exc) or status
            raise
        finally:
            if record is None:
                record = RequestRecord("", request.method, route=self._route_name(request))
            if not record.status or status >= 400:
                record.status = status
            record.total_ms = (time.perf_counter() - started) * 1000
            if record.request_id:
                self.access_log.write(record)
                if self.ledger is not None and not admin:
                    self.ledger.add(record)
            metrics.request_finished(record)

    def _local_answer(self, request: HttpRequest, handler: LocalHandler) -> Answer:
        if request.method not in _LOCAL_METHODS:
            return error_answer(MethodNotAllowed(f"Method {request.method} is not allowed.", allow=("GET",)))
        try:
            return handler(request)
        except Exception as exc:
            return self._failure(request, exc)

    def _admin_record(self, request: HttpRequest) -> RequestRecord:
        """An admin request's record: an access-log line as any request has (a guessed
        admin key, a key revoked), not usage."""
        record = self.gateway.new_record(request.method)
        record.route = admin_route(request.path)
        return record

    async def _admin_usage(self, request: HttpRequest, record: RequestRecord) -> Answer:
        try:  # (a 405 too: its access-log line names the error, as /admin/keys' does)
            if request.method not in _LOCAL_METHODS:
                raise MethodNotAllowed(f"Method {request.method} is not allowed.", allow=("GET",))
            if self._admin is not None:  # a client or virtual key: 403, as on /admin/keys
                self._admin.authorize(request.headers)
            # the database of the key directory and the ledger, opened at start: one a
            # reload names instead was read (made empty, or a 500 for a URL it refuses)
            directory = self.gateway.directory
            return await usage_answer(self.gateway.settings, request,
                                      None if directory is None else directory.path)
        except Exception as exc:
            record.error = type(exc).__name__
            return self._failure(request, exc)

    def _failure(self, request: HttpRequest, exc: Exception) -> Answer:
        if isinstance(exc, RouteNotFound):  # a realtime URL without its WebSocket: 426
            exc = not_upgraded(request, self.gateway.settings.api_base) or exc
        if isinstance(exc, GatewayError):
            return error_answer(exc)
        if isinstance(exc, BodyTooLarge):
            return error_answer(BodyTooLargeError(str(exc)))
        if isinstance(exc, BodyTimedOut):
            return error_answer(RequestTimeout("The request body was not received in time."))
        return _unexpected(request, exc)

    def _route_name(self, request: HttpRequest) -> str:
        """`/health`, `/metrics`...: routes the gateway answers itself; "-" otherwise."""
        return request.path if request.path in self._local else "-"

    # -- local routes --------------------------------------------------------------------

    def _root(self, request: HttpRequest) -> Answer:
        body = {"service": "azure-openai-proxy", "version": __version__, "status": "ok"}
        return Answer(200, {"content-type": _JSON}, orjson.dumps(body))

    def _health_deployments(self, request: HttpRequest) -> Answer:
        """Each deployment's live state. Needs a client key when client keys are set;
        never shows a key."""
        gateway = self.gateway
        limits = gateway.admit_local(gateway.authenticate(request.headers))
        body = {
            "worker": os.getpid(),
            "routing_strategy": gateway.settings.routing_strategy,
            "deployments": gateway.balancer.snapshot(gateway.settings.deployments),
        }
        return Answer(200, {"content-type": _JSON, **limits}, orjson.dumps(body))

    def _metrics(self, request: HttpRequest) -> Answer:
        body, content_type = self._exposition.render()  # one render a second at most
        return Answer(200, {"content-type": content_type}, body)

    # -- reload --------------------------------------------------------------------------

    def reload(self, settings: Settings) -> None:
        """Serve new requests with `settings`. Requests in flight finish on the gateway
        they started on; deployments that are still configured (same endpoint and
        deployment name) keep their live state (cooldowns, circuits, in-flight counts).
        The upstream connection pool is kept when the upstream settings did not change
        (no reconnects, no dropped keep-alives). `/metrics` being on or off, and CORS,
        are fixed at start-up, and so are the key directory and the limiters (governance);
        the admin key is read at each admin request, so a reload may add, change or remove it."""
        old = self.gateway
        clock, rng = old.balancer.clock, old.balancer.rng
        if self.ledger is not None:
            self.ledger.reconfigure(prices_of(settings), deployment_models(settings))
        if settings.upstream == old.settings.upstream:
            self.gateway = _gateway(settings, old.transport, self.metrics, self.tokens, old,
                                    clock, rng)
            return
        self.gateway = _gateway(settings, transport_for(settings.upstream), self.metrics,
                                self.tokens, old, clock, rng)
        grace = old.settings.shutdown_grace_seconds + old.settings.upstream.read_timeout

        async def close_later() -> None:
            # Requests that started on the old transport may still be streaming.
            await asyncio.sleep(grace)
            await old.transport.close()

        task = asyncio.get_running_loop().create_task(close_later())
        self.retired.add(task)
        task.add_done_callback(self.retired.discard)


def _health(request: HttpRequest) -> Answer:
    return Answer(200, {"content-type": _JSON}, b'{"status":"ok"}')


class _Cors:
    """Preflights answered; `Access-Control-Allow-Origin` on every answer to an allowed
    origin (streams included: set before the handler runs)."""

    def __init__(self, settings: Settings) -> None:
        self._origins = frozenset(settings.cors_origins)
        self._any = "*" in self._origins

    def apply(self, request: HttpRequest) -> Answer | None:
        """The preflight's answer, or None after marking the request's answer."""
        origin = request.headers.get("Origin")
        allowed = "*" if self._any else (origin if origin in self._origins else None)
        headers: dict[str, str] = {}
        if allowed:
            headers["Access-Control-Allow-Origin"] = allowed
            if allowed != "*":
                headers["Vary"] = "Origin"
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            headers["Access-Control-Allow-Headers"] = request.headers.get(
                "Access-Control-Request-Headers", "Authorization, Content-Type")
            headers["Access-Control-Max-Age"] = "86400"
            return Answer(204, headers, b"")
        if headers:
            request.extra_headers = headers
        return None


def create_app(
    settings: Settings,
    transport: Transport | None = None,
    *,
    credential: TokenCredential | None = None,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    access_log: AccessLog | None = None,
) -> GatewayApp:
    """The gateway for one worker process.

    `credential` replaces azure-identity's `DefaultAzureCredential` for `auth: entra`
    deployments; `clock` (monotonic seconds) and `rng` drive the balancer. Tests pass
    fakes; a reload keeps them."""
    app_box: list[GatewayApp] = []
    metrics = metrics_for(settings.metrics, lambda: app_box[0].gateway.balancer.state, clock,
                          lambda: app_box[0].gateway.table)
    tokens = EntraTokens(credential)
    gateway = _gateway(settings, transport or transport_for(settings.upstream), metrics,
                       tokens, None, clock, rng or random.Random())
    if settings.governance_enabled:
        gateway.directory = KeyDirectory(database_path(settings))
        gateway.limiter = RateLimiter(clock)
        gateway.directory.on_reload = gateway.limiter.forget
        gateway.owners = ObjectOwners(database=database_path(settings))
    ledger = None
    if ledger_enabled(settings):
        ledger = open_ledger(settings, BudgetGuard())
        gateway.budgets = ledger.guard
        metrics.ledger.watch(ledger)
    app = GatewayApp(settings, gateway, metrics, access_log or AccessLog(), tokens, ledger)
    app_box.append(app)
    return app


def transport_for(upstream: UpstreamSettings) -> Transport:
    """The upstream client the settings ask for (see `UpstreamSettings.transport`)."""
    # Refused in settings: 'fast' + SOCKS, http2 true + a proxy. An HTTP proxy (SOCKS's
    # if both are set; http_proxy may be a SOCKS URL) is fast's, 'aiohttp' warned.
    if upstream.http_tunnel:  # HTTP/1.1 through its CONNECT tunnels
        return FastTransport(upstream)
    if upstream.proxy or upstream.transport == "aiohttp":
        return AiohttpTransport(upstream)
    if upstream.http2 == "auto":  # https: h2 by ALPN; http://: HTTP/1.1
        return AutoTransport(upstream)
    if upstream.http2:  # h2 by ALPN on https, h2c prior knowledge on http://
        return H2Transport(upstream)
    return FastTransport(upstream)


def _gateway(
    settings: Settings, transport: Transport, metrics: Metrics, tokens: EntraTokens,
    previous: Gateway | None, clock: Callable[[], float], rng: random.Random,
) -> Gateway:
    rules = rules_of(settings)
    state = PoolState.for_deployments(
        settings.deployments, rules, previous.balancer.state if previous is not None else None
    )
    balancer = Balancer(settings, state, metrics, clock, rng)
    # A reload keeps which resource created which file, batch or response.
    affinity = previous.affinity if previous is not None else None
    if previous is None:
        return Gateway(settings, transport, balancer, tokens, affinity)
    gateway = Gateway(settings, transport, balancer, tokens, affinity, previous.directory,
                      previous.limiter)
    gateway.budgets = previous.budgets  # spend is the ledger's, not the settings'
    gateway.owners = previous.owners  # which key created which object
    return gateway
