"""Opening a Realtime session (`realtime.py` relays it).

The wire rules (which URLs, the browser's key, the upstream URL and api-version, a
response's usage) are plain functions in `realtime_wire.py`. `open_session` does
everything that may refuse, before the handshake, so a refusal is an ordinary
OpenAI-shaped HTTP answer: the handshake judged by `websockets`' own checks; the
client's key (a header, or for browsers the `openai-insecure-api-key.KEY` subprotocol)
checked like on HTTP routes; for a virtual key its model allow-list, its budget, and
one request of its RPM (in flight until Azure's socket is open); the model
mapped to its pool, and one deployment picked and connected (`realtime_connect.py`;
Azure's refusal, 401/404/429, fails over like HTTP, then is the answer). The upstream
URL is the deployment's family: dated `/openai/realtime?api-version=&deployment=` or
v1 `/openai/v1/realtime?model=`; the server's key or Entra token goes with it, never
the client's gateway key. The client's
subprotocols but its key go on too, and its handshake answers with the one Azure took
(or `realtime`, when offered and Azure took none).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from azure_openai_proxy.auth import presented_key
from azure_openai_proxy.errors import (
    GatewayError,
    HttpRefused,
    MalformedBody,
    ModelNotAllowed,
    ModelNotFound,
)
from azure_openai_proxy.gateway.budgethold import enforce_budget, require_price
from azure_openai_proxy.gateway.governed import limit_refusal, pool_allowed, price_names
from azure_openai_proxy.gateway.limitheaders import limit_error
from azure_openai_proxy.gateway.pipeline import Gateway
from azure_openai_proxy.gateway.realtime import OnResponse, RealtimeSession
from azure_openai_proxy.gateway.realtime_connect import connect_upstream
from azure_openai_proxy.gateway.realtime_limits import SessionKey, limit_plan
from azure_openai_proxy.gateway.realtime_wire import (
    RealtimeTarget,
    credentials,
    handshake_problem,
)
from azure_openai_proxy.governance.keys import secret_hash
from azure_openai_proxy.governance.ratelimit import Refusal
from azure_openai_proxy.http.interface import HttpRequest
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import check_model_name

__all__ = ["open_session"]



async def open_session(gateway: Gateway, request: HttpRequest, target: RealtimeTarget,
                       record: RequestRecord, on_response: OnResponse,
                       on_end: OnResponse,
                       shutting_down: Callable[[], bool] = lambda: False) -> RealtimeSession:
    """Everything that may refuse the session, before its handshake; raises the
    `GatewayError` to answer with. `record` is the session's (its key, model,
    deployment), copied into each response's record (`on_response`); `on_end` gets it
    when the session ends. A server `shutting_down` (asked before and after Azure's
    socket is opened) refuses it with a 503: it would get its 101 and then a 1001."""
    series = gateway.balancer.metrics.realtime
    try:
        if shutting_down():
            raise _shutting_down()
        session = await _open(gateway, request, target, record, on_response, on_end,
                              shutting_down)
    except BaseException as exc:
        series.asked(_status_of(exc))
        raise
    series.asked(101)
    return session


def _status_of(exc: BaseException) -> int:
    """The status a session refused with `exc` is answered with (499: the client left)."""
    if isinstance(exc, GatewayError):
        return exc.http_status
    return 499 if isinstance(exc, asyncio.CancelledError) else 500


async def _open(gateway: Gateway, request: HttpRequest, target: RealtimeTarget,
                record: RequestRecord, on_response: OnResponse, on_end: OnResponse,
                shutting_down: Callable[[], bool]) -> RealtimeSession:
    record.route = "realtime"
    problem = handshake_problem(request.target, request.headers.items())
    if problem is not None:
        raise MalformedBody(f"Not a valid WebSocket handshake: {problem}")
    presented = credentials(request.headers)
    caller = gateway.authenticate(presented)
    key = caller.key
    if key is not None:
        record.key_id, record.team_id = key.id, key.team_id
        if gateway.budgets is not None:
            enforce_budget(gateway.budgets, caller, request)
    if not target.model:
        raise _missing_model(target)
    model = check_model_name(target.model)
    record.model = model
    try:
        pool = gateway.table.resolve(model)
    except ModelNotFound:
        if key is not None and key.models:  # not the list of every configured model
            raise ModelNotAllowed(model) from None
        raise
    if key is not None and key.models and not pool_allowed(key.models, model, pool):
        raise ModelNotAllowed(model)
    names = price_names(pool, model)
    if key is not None and gateway.budgets is not None:
        require_price(gateway.budgets, caller, names)  # unpriced, a budget never stops it
    admission = None
    plan = limit_plan(gateway, caller)
    if plan is not None and gateway.limiter is not None:
        admitted = gateway.limiter.take(plan, 0)  # tokens are counted per response
        if isinstance(admitted, Refusal):
            raise limit_refusal(admitted)
        admission = admitted
    try:
        upstream, lease = await connect_upstream(gateway, request, target, caller, pool, model,
                                         record)
    except BaseException as exc:  # Azure's refusal says the key's limits, not Azure's
        if admission is not None:
            limit_error(exc, admission.head_lines)
        raise
    finally:
        # The opening is one request, in flight until Azure's socket is open; then each
        # `response.create` is one (`RealtimeSession._admit`).
        if admission is not None and gateway.limiter is not None:
            gateway.limiter.settle(admission, None)
    if shutting_down():  # (begun while Azure's socket was being opened)
        upstream.abort()
        lease.done()
        raise _shutting_down()
    followed = None
    secret = presented_key(presented)
    if key is not None and gateway.directory is not None and secret is not None:
        # The session goes by its key's current version: found again by the hash of the
        # secret it opened with (the secret itself is not kept).
        followed = SessionKey(gateway.directory, secret_hash(secret), caller, model, pool)
    return RealtimeSession(gateway, caller, upstream, lease, record, names, on_response,
                           on_end, followed)


def _shutting_down() -> GatewayError:
    # retry-after: a client's SDK (or its own loop) reconnects after a pause, by when
    # another worker or replica, or this one restarted, takes the session.
    return HttpRefused(503, "The server is shutting down; connect again.",
                       "server_shutting_down", retry_after_s=1)


def _missing_model(target: RealtimeTarget) -> GatewayError:
    name = "deployment" if target.native else "model"
    return MalformedBody(f"Missing required query parameter: '{name}'.", param=name)
