"""The Realtime API: a client's WebSocket bridged to Azure's.

    GET /v1/realtime?model=NAME                     (OpenAI clients; also /realtime,
    GET /openai/v1/realtime?model=NAME               /openai/v1/realtime)
    GET /openai/realtime?api-version=V&deployment=D (AzureOpenAI clients)

The wire rules (which URLs, the browser's key, the upstream URL and api-version, a
response's usage) are plain functions in `realtime_wire.py`. `open_session` does
everything that may refuse, before the handshake, so a refusal is an ordinary
OpenAI-shaped HTTP answer: the handshake judged by `websockets`' own checks; the
client's key (a header, or for browsers the `openai-insecure-api-key.KEY` subprotocol)
checked like on HTTP routes; for a virtual key its model allow-list, its budget, and
one request of its RPM (the session holds one in-flight slot until it ends); the model
mapped to its pool, and one deployment picked and connected (Azure's refusal, 401/404/429,
fails over like HTTP, then is the answer). The upstream URL is the deployment's family:
dated `/openai/realtime?api-version=&deployment=` or v1 `/openai/v1/realtime?model=`; the
server's key or Entra token goes with it, never the client's gateway key.

The `RealtimeSession` (the engine's handler for the connection) then relays messages
both ways as they come, one at a time (each send waits until the other side takes it: a
slow side slows the other, nothing piles up). Close codes and reasons pass through; a
client that leaves closes the upstream at once; an upstream that drops becomes an
`error` event, then a 1011 close. Each `response.done` is one usage record
(`on_response`: the access log and the ledger) with the session's key, model and
deployment; its tokens go to the key's TPM and its cost to the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import (
    BudgetExhausted,
    GatewayError,
    MalformedBody,
    ModelNotAllowed,
    ModelNotFound,
    UpstreamError,
)
from azure_openai_proxy.gateway.balancer import Lease
from azure_openai_proxy.gateway.budgethold import enforce_budget, reserve_budget, settle_budget
from azure_openai_proxy.gateway.governed import limit_refusal, pool_allowed, price_names, used_tokens
from azure_openai_proxy.gateway.pipeline import Gateway
from azure_openai_proxy.gateway.realtime_wire import (
    RealtimeTarget,
    credentials,
    error_event,
    handshake_problem,
    realtime_api_version,
    realtime_target,
    realtime_url,
    response_usage,
)
from azure_openai_proxy.governance.keys import has_budget
from azure_openai_proxy.governance.ratelimit import Admission, Refusal
from azure_openai_proxy.http.interface import HttpRequest, WebSocket, WebSocketClosed
from azure_openai_proxy.normalize.upstream_errors import is_retryable, translate_upstream_error
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool, check_model_name
from azure_openai_proxy.translate import azure_auth_headers
from azure_openai_proxy.upstream.websocket import (
    UpstreamRefused,
    UpstreamSocket,
    UpstreamSocketClosed,
    open_socket,
    sendable_close,
)

__all__ = ["RealtimeSession", "open_session", "realtime_target"]

_FORWARDED = ("openai-beta", "x-ms-client-request-id")
_UPSTREAM_LOST = 1011
_UNCLAIMED_SECONDS = 10.0

OnResponse = Callable[[RequestRecord], None]

log = logging.getLogger("azure_openai_proxy")


# -- opening -------------------------------------------------------------------------------


async def open_session(gateway: Gateway, request: HttpRequest, target: RealtimeTarget,
                       record: RequestRecord, on_response: OnResponse,
                       on_end: OnResponse) -> RealtimeSession:
    """Everything that may refuse the session, before its handshake; raises the
    `GatewayError` to answer with. `record` is the session's (its key, model,
    deployment), copied into each response's record (`on_response`); `on_end` gets it
    when the session ends."""
    record.route = "realtime"
    problem = handshake_problem(request.target, request.headers.items())
    if problem is not None:
        raise MalformedBody(f"Not a valid WebSocket handshake: {problem}")
    caller = gateway.authenticate(credentials(request.headers))
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
    admission = None
    if key is not None and gateway.limiter is not None:
        subjects = [("key:" + key.id, key.limits)]
        if caller.team is not None:
            subjects.append(("team:" + caller.team.id, caller.team.limits))
        admitted = gateway.limiter.admit(subjects, 0)  # tokens are counted per response
        if isinstance(admitted, Refusal):
            raise limit_refusal(admitted)
        admission = admitted
    try:
        upstream, lease = await _connect(gateway, request, target, caller, pool, model,
                                         record)
    except BaseException:
        if admission is not None and gateway.limiter is not None:
            gateway.limiter.settle(admission, None)
        raise
    names = price_names(pool, model)
    return RealtimeSession(gateway, caller, upstream, lease, admission, record, names,
                           on_response, on_end)


async def _connect(gateway: Gateway, request: HttpRequest, target: RealtimeTarget,
                   caller: Caller, pool: Pool, model: str,
                   record: RequestRecord) -> tuple[UpstreamSocket, Lease]:
    """One deployment of the pool, connected: tried in the balancer's order, Azure's
    retryable refusals (429, 5xx) and connect failures moving on to the next."""
    run = gateway.balancer.failover(pool, 0)
    forwarded = {name: request.headers[name] for name in _FORWARDED if name in request.headers}
    while True:
        step = run.next_step()  # raises when no attempt is left
        if isinstance(step, float):
            record.retries.append(f"wait:{round(step * 1000)}ms")
            await asyncio.sleep(step)
            continue
        deployment = step
        record.attempts += 1
        record.deployment, record.endpoint = deployment.deployment_name, deployment.endpoint
        lease = run.begin(deployment)
        try:
            token = None
            if deployment.auth == "entra" and gateway.tokens is not None:
                token = await gateway.tokens.token_for(deployment)
            headers = {**forwarded, **azure_auth_headers(deployment, caller, token)}
            version = realtime_api_version(deployment, target.client_version if target.native
                                           else None, gateway.settings.honour_client_api_version)
            sent = time.perf_counter()
            upstream = await open_socket(realtime_url(deployment, version), headers,
                                         gateway.settings.upstream)
        except UpstreamRefused as refused:
            lease.answered(refused.status, refused.headers)
            lease.done()
            error = translate_upstream_error(
                refused.status, refused.headers, refused.body, client_model=model,
                deployment=deployment.deployment_name,
                client_credentials=deployment.auth == "passthrough")
            if not is_retryable(refused.status):
                raise error from None
            record.retries.append(f"{deployment.deployment_name}:{refused.status}")
            run.failed(error)
            del error
            continue
        except GatewayError as exc:
            lease.failed(str(exc.code))
            lease.done()
            if not isinstance(exc, UpstreamError):
                raise  # not Azure's doing (no key to send): the client's answer
            record.retries.append(f"{deployment.deployment_name}:{exc.code}")
            run.failed(exc.with_traceback(None))
            continue
        except BaseException:
            lease.done()
            raise
        record.upstream_ms = (time.perf_counter() - sent) * 1000
        lease.answered(101, upstream.response_headers)
        record.azure_request_id = (upstream.response_headers.get("x-request-id")
                                   or upstream.response_headers.get("apim-request-id"))
        return upstream, lease


def _missing_model(target: RealtimeTarget) -> GatewayError:
    name = "deployment" if target.native else "model"
    return MalformedBody(f"Missing required query parameter: '{name}'.", param=name)


# -- relaying ------------------------------------------------------------------------------


class RealtimeSession:
    """An opened session: the upstream socket and what the session holds (a balancer
    lease, a rate-limit admission) until it ends. Called with the client's WebSocket
    (an `interface.WebSocketHandler`), it relays until either side ends."""

    # Chosen when a browser offers it (with its key as `openai-insecure-api-key.KEY`).
    subprotocols = ("realtime",)

    def __init__(self, gateway: Gateway, caller: Caller, upstream: UpstreamSocket,
                 lease: Lease, admission: Admission | None, record: RequestRecord,
                 names: tuple[str | None, ...], on_response: OnResponse,
                 on_end: OnResponse) -> None:
        self._gateway = gateway
        self._caller = caller
        self._upstream = upstream
        self._lease = lease
        self._admission = admission
        self.record = record
        self._names = names
        self._on_response = on_response
        self._on_end = on_end
        self._opened = time.perf_counter()
        self._ended = False
        # The engine runs the session right after its handshake; if the handshake fails
        # or the client is gone by then, nothing runs it: this ends it instead.
        self._unclaimed: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            _UNCLAIMED_SECONDS, self._abandon)
        self._tokens = 0  # used by the session's responses, for the rate limiter
        self._out_of_budget = False

    async def __call__(self, client: WebSocket) -> None:
        if self._unclaimed is not None:
            self._unclaimed.cancel()
            self._unclaimed = None
        if self._ended:
            return
        to_client = asyncio.ensure_future(self._to_client(client))
        to_upstream = asyncio.ensure_future(self._to_upstream(client))
        try:
            await asyncio.wait((to_client, to_upstream), return_when=asyncio.FIRST_COMPLETED)
            if to_upstream.done() and not to_upstream.cancelled() and to_upstream.result():
                # Azure's side ended first: `_to_client` says how, to the client.
                await to_client
        finally:
            to_client.cancel()
            to_upstream.cancel()
            for task in (to_client, to_upstream):
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("realtime relay failed", exc_info=task.exception())
            self._upstream.abort()  # nothing, after a closing handshake
            self._end()

    async def _to_upstream(self, client: WebSocket) -> bool:
        """Client -> Azure. True when Azure's side closed; False when the client left
        (Azure's socket is then closed at once, with the client's code and reason)."""
        upstream = self._upstream
        while True:
            try:
                message = await client.receive()
            except WebSocketClosed as closed:
                await upstream.close(closed.code or 1000, closed.reason)
                return False
            try:
                await upstream.send(message)
            except UpstreamSocketClosed:
                return True

    async def _to_client(self, client: WebSocket) -> None:
        """Azure -> client, noting each response's usage; Azure's close passed on, or
        its drop reported as an `error` event and a 1011 close."""
        upstream = self._upstream
        try:
            while True:
                try:
                    message = await upstream.receive()
                except UpstreamSocketClosed as closed:
                    if closed.dropped:
                        await client.send(error_event(
                            "The connection to Azure OpenAI was lost.", "upstream_disconnected"))
                        await client.close(_UPSTREAM_LOST, "upstream connection lost")
                    else:
                        await client.close(sendable_close(closed.code), closed.reason)
                    return
                usage = response_usage(message)
                await client.send(message)
                if usage is not None:
                    self._responded(usage)
                    if self._out_of_budget:
                        await client.send(error_event(
                            "This key's budget is spent; the session ends.",
                            "insufficient_quota", "insufficient_quota"))
                        await client.close(1008, "budget exhausted")
                        await upstream.close(1000, "")
                        return
        except WebSocketClosed:
            return  # the client left: `_to_upstream` closes Azure's side

    def _responded(self, usage: dict[str, Any]) -> None:
        """One response's usage: its record, its tokens, its cost against the budget."""
        session = self.record
        record = self._gateway.new_record("GET")
        record.route, record.model, record.status, record.attempts = (
            "realtime", session.model, 200, 1)
        record.deployment, record.endpoint = session.deployment, session.endpoint
        record.upstream_ms, record.azure_request_id = session.upstream_ms, session.azure_request_id
        record.key_id, record.team_id, record.usage = session.key_id, session.team_id, usage
        record.total_ms = (time.perf_counter() - self._opened) * 1000
        self._tokens += used_tokens(record) or 0
        caller, budgets = self._caller, self._gateway.budgets
        if (budgets is not None and caller.key is not None
                and has_budget(caller.key, caller.team)):
            # (Spent before this response: the ledger still records it.)
            with contextlib.suppress(BudgetExhausted):
                settle_budget(budgets, reserve_budget(budgets, caller, None, self._names),
                              record)
            self._out_of_budget = budgets.check(caller.key, caller.team).exhausted is not None
        self._on_response(record)

    def _abandon(self) -> None:
        """Never run: Azure's socket is dropped, and what the session held released."""
        self._unclaimed = None
        if not self._ended:
            self._upstream.abort()
            self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._lease.done()
        limiter = self._gateway.limiter
        if self._admission is not None and limiter is not None:
            limiter.settle(self._admission, self._tokens)
        self.record.total_ms = (time.perf_counter() - self._opened) * 1000
        self._on_end(self.record)
