"""The request path, in the order data flows:

    classify -> authenticate -> read body -> pick deployment(s) -> translate
      -> send upstream, with failover -> relay (normalized) -> log

`Gateway.handle` answers every proxied route (`app.py` sends it everything that is not
the gateway's own: health, metrics). The decisions are
made by pure modules (`routing`, `auth`, `translate`, `compat`, `normalize`); this module
only sequences them and moves bytes.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson

from azure_openai_proxy.apiversions import deployment_need
from azure_openai_proxy.auth import Caller, ClientKeyring, presented_key
from azure_openai_proxy.balancing import estimated_cost
from azure_openai_proxy.balancing.resend import may_try_elsewhere
from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.codings import decode_body
from azure_openai_proxy.compat import (
    DeploymentProfile,
    adapt_chat_request,
    adapt_completions_request,
    infer_family,
)
from azure_openai_proxy.errors import (
    AuthenticationFailed,
    BodyTooLarge,
    GatewayError,
    MalformedBody,
    ModelNotAllowed,
    ModelNotFound,
    UnsupportedMediaType,
    UpstreamAnswerTooLarge,
    UpstreamError,
    UpstreamPoolTimeout,
)
from azure_openai_proxy.gateway.affinity import ResourceAffinity, ids_referenced
from azure_openai_proxy.gateway.balancer import Balancer
from azure_openai_proxy.gateway.batchcheck import check_batch, uploaded_batch_models
from azure_openai_proxy.gateway.budgethold import enforce_budget, note_unanswered
from azure_openai_proxy.gateway.governed import (
    hold,
    limit_refusal,
    pool_allowed,
    release,
    unanswered,
)
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.gateway.limitheaders import LimitedRequest, apply_to
from azure_openai_proxy.gateway.ownership import (
    ObjectOwners,
    chat_file_ids,
    object_ids,
    owned_answer,
)
from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.gateway.spool import SpooledBody, multipart_boundary
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.keys import (
    SECRET_PREFIX,
    allowed_names,
    is_restricted,
)
from azure_openai_proxy.governance.ratelimit import RateLimiter, Refusal
from azure_openai_proxy.http import interface as http
from azure_openai_proxy.http.busypoll import BusyPoll
from azure_openai_proxy.http.interface import Answer, HttpRequest, Reply
from azure_openai_proxy.normalize.stream import StreamPolicy
from azure_openai_proxy.normalize.upstream_errors import is_retryable, translate_upstream_error
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool, RoutingTable, Target, classify, servable
from azure_openai_proxy.settings import DeploymentSettings, Settings
from azure_openai_proxy.translate import (
    api_version_for,
    azure_auth_headers,
    forwarded_headers,
    names_deployment_in_body,
    upstream_url,
)
from azure_openai_proxy.upstream.entra import EntraTokens
from azure_openai_proxy.upstream.transport import (
    Transport,
    UpstreamRequest,
    UpstreamResponse,
)

__all__ = ["Gateway"]

log = logging.getLogger("azure_openai_proxy")

_ERROR_BODY_LIMIT = 1024 * 1024
_CACHE_LIMIT = 4096  # entries in the path, URL and profile caches
_NORMALIZED_STREAMS = frozenset({"chat/completions", "completions"})


@dataclass(slots=True)
class _Body:
    """The client's request body, as read once."""

    json: dict[str, Any] | None = None
    raw: bytes | None = None
    spool: SpooledBody | None = None
    boundary: bytes | None = None
    content_type: str | None = None

    def model(self) -> str | None:
        if self.json is not None:
            value = self.json.get("model")
            if value is None:
                return None
            if not isinstance(value, str):
                raise MalformedBody("`model` must be a string.", param="model")
            return value
        if self.spool is not None and self.boundary is not None:
            field = self.spool.form_field("model", self.boundary)
            return field[0] if field else None
        return None

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


class Gateway:
    """Per-worker request pipeline: one transport, one routing table, one balancer."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        balancer: Balancer,
        tokens: EntraTokens | None = None,
        affinity: ResourceAffinity | None = None,
        directory: KeyDirectory | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        # Governance (virtual keys and their limits): None when it is off.
        self.directory = directory
        self.limiter = limiter
        self.table = RoutingTable(settings)
        self.keyring = ClientKeyring(tuple(k.get_secret_value() for k in settings.client_keys))
        self.transport = transport
        self.balancer = balancer
        self.tokens = tokens
        self.affinity = affinity or ResourceAffinity()
        self.budgets: BudgetGuard | None = None  # set when the ledger is on (app.py)
        # Which virtual key created which object (gateway/ownership.py); kept on reload.
        self.owners = ObjectOwners()
        self._request_ids = _request_id_source()
        self._busy = BusyPoll.from_setting(settings.busy_poll_us)
        # Read once: a settings model's attributes cost a __getattr__ hook per access.
        self._answer_limit = settings.upstream.max_answer_bytes
        self._default_completion = settings.default_completion_tokens
        self._targets: BoundedCache[tuple[str, str], Target] = BoundedCache(_CACHE_LIMIT)
        self._urls: BoundedCache[tuple[str, str, str, str, str | None], str] = BoundedCache(
            _CACHE_LIMIT
        )
        self._profiles: BoundedCache[
            tuple[int, str | None], tuple[DeploymentSettings, DeploymentProfile]
        ] = BoundedCache(_CACHE_LIMIT)

    # -- entry point -----------------------------------------------------------------

    def new_record(self, method: str) -> RequestRecord:
        """The record of a request this gateway is about to handle, with its id."""
        return RequestRecord(self._request_ids(), method)

    async def handle(self, request: HttpRequest, record: RequestRecord) -> Reply:
        """Answer `request`, filling in `record` as it goes. GatewayErrors propagate
        (`app.py` renders them); their status is in the record first."""
        if self._busy is not None:
            self._busy.poke()  # Azure's answer will follow soon: don't fall asleep
        body: _Body | None = None
        try:
            target = self._classify(request.method, request.path)
            record.route = target.operation if target.kind != "resource" else target.operation.split("/")[0]
            if self.directory is None:
                caller = self.keyring.authenticate(request.headers)
            else:
                caller = self.authenticate(request.headers)
                if caller.key is not None:
                    record.key_id = caller.key.id
                    record.team_id = caller.key.team_id
                    if self.budgets is not None:
                        enforce_budget(self.budgets, caller, request)
            if target.kind in ("models", "model"):
                return apply_to(self._models(target, caller), self.admit_local(caller))
            body = await self._read_body(request, target)
            if caller.key is not None:
                return await self._governed(request, target, caller, body, record)
            response = await self._proxy(request, target, caller, body, record)
            return response
        except GatewayError as exc:
            record.status = exc.http_status
            record.error = type(exc).__name__
            raise
        finally:
            if body is not None:
                body.close()

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """The caller: a virtual key (`sk-aop-...`) when governance is on, else a static
        client key, else (no client keys, no server-side Azure keys) passthrough."""
        directory = self.directory
        presented = presented_key(headers)
        if directory is not None and presented is not None and presented.startswith(SECRET_PREFIX):
            return directory.authenticate(presented)
        if (directory is not None and not self.keyring.enabled
                and self.settings.holds_server_side_keys):
            # Governance instead of client keys: only virtual keys may spend the server's
            # Azure keys.
            raise AuthenticationFailed("Incorrect API key provided for this gateway.")
        return self.keyring.authenticate(headers)

    def admit_local(self, caller: Caller) -> Mapping[str, str]:
        """A request the gateway answers itself (the model list) still counts against a
        virtual key's limits and its team's: no route bypasses them. Raises their 429;
        else the `x-ratelimit-*` headers to answer with (none for other callers)."""
        key, limiter = caller.key, self.limiter
        if key is None or limiter is None:
            return {}
        team = caller.team
        plan = (limiter.plan(key.id, key.limits, None, None) if team is None
                else limiter.plan(key.id, key.limits, team.id, team.limits))
        admitted = limiter.take(plan, 0)
        if isinstance(admitted, Refusal):
            raise limit_refusal(admitted)
        limiter.settle(admitted, None)  # answered at once: nothing stays in flight
        return admitted.headers

    async def _governed(
        self, request: HttpRequest, target: Target, caller: Caller, body: _Body,
        record: RequestRecord,
    ) -> Reply:
        """A virtual key's request: its model checked against the key's allow-list (and
        on a resource, the objects it names as the key's own), then let through its and
        its team's limits and budgets (gateway/governed.py), which it holds until it ends."""
        key, limiter = caller.key, self.limiter
        assert key is not None and limiter is not None
        try:
            routed = self._pool_for(target, body)
        except ModelNotFound as exc:
            if key.models:  # the usual answer lists every configured model: not for this key
                raise ModelNotAllowed(exc.model) from None
            raise
        record.model = routed[1]
        if key.models and routed[1] is not None and not pool_allowed(
                key.models, routed[1], routed[0]):
            raise ModelNotAllowed(routed[1])
        batch_models: frozenset[str] | None = None
        if target.kind == "resource":
            named, inner = object_ids(target.operation, body.json)
            await self.owners.check(named, key.id, is_restricted(key, caller.team), inner)
            if request.method == "POST" and target.operation == "batches":
                await check_batch(self.owners, self.table, caller, body.json)
        elif target.operation == "chat/completions" and body.raw is not None:
            files = chat_file_ids(body.raw, body.json)  # a message's file parts
            if files:
                await self.owners.check(files, key.id, is_restricted(key, caller.team))
        held = hold(limiter, self.budgets, caller, body.json, routed, target.operation,
                    self._default_completion)
        try:
            if key.models and target.operation == "files" and request.method == "POST":
                batch_models = await uploaded_batch_models(body.spool, body.boundary)
            limits = held[0].headers
            reply = await self._proxy(LimitedRequest(request, limits), target, caller, body,
                                      record, routed)
            if target.kind == "resource":
                reply = await owned_answer(self.owners, request.method, target.operation,
                                           key.id, record, reply, batch_models)
            return apply_to(reply, limits)
        except BaseException as exc:
            if unanswered(exc):  # sent and never answered: Azure may bill it
                note_unanswered(record, body.json, target.operation, self._default_completion)
            raise
        finally:
            release(limiter, self.budgets, held, record)

    def _classify(self, method: str, raw_path: str) -> Target:
        """`classify`, remembered: a few paths carry nearly all the traffic."""
        key = (method, raw_path)
        target = self._targets.get(key)
        if target is None:
            target = self._targets.put(key, classify(method, raw_path, self.settings.api_base))
        return target

    def _url(
        self, deployment: DeploymentSettings, target: Target, version: str | None,
        request: HttpRequest,
    ) -> str:
        """The upstream URL; cached for deployment operations (they carry no client query,
        so it is not even parsed for them)."""
        if target.kind != "deployment":
            return upstream_url(deployment, target, version, _query(request))
        key = (deployment.endpoint, deployment.deployment_name, deployment.api, target.operation,
               version)
        url = self._urls.get(key)
        if url is None:
            url = self._urls.put(key, upstream_url(deployment, target, version))
        return url

    def _profile(self, deployment: DeploymentSettings, version: str | None) -> DeploymentProfile:
        """`_profile`, remembered per deployment object and api-version."""
        key = (id(deployment), version)
        known = self._profiles.get(key)
        if known is not None and known[0] is deployment:  # the id was not reused
            return known[1]
        profile = _profile(deployment, version)
        self._profiles.put(key, (deployment, profile))
        return profile

    # -- local answers -----------------------------------------------------------------

    def _models(self, target: Target, caller: Caller) -> Answer:
        created = 1_700_000_000
        allowed = caller.key.models if caller.key is not None else ()
        if target.kind == "model":
            assert target.path_model is not None
            try:
                pool = self.table.resolve(target.path_model)
            except ModelNotFound:
                if allowed:  # without the list of every configured model
                    raise ModelNotAllowed(target.path_model) from None
                raise
            if allowed and not pool_allowed(allowed, target.path_model, pool):
                raise ModelNotAllowed(target.path_model)
            return _json_answer({"id": pool.model, "object": "model", "created": created,
                                   "owned_by": "azure-openai"})
        names = self.table.model_names
        if allowed:
            names = tuple(allowed_names(allowed, names))
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "azure-openai"}
            for name in names
        ]
        return _json_answer({"object": "list", "data": data})

    # -- reading the body ------------------------------------------------------------

    async def _read_body(self, request: HttpRequest, target: Target) -> _Body:
        content_type = request.headers.get("Content-Type", "")
        if request.method in ("GET", "DELETE", "HEAD") and not request.has_body:
            return _Body()
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLarge(f"The request body is larger than the limit of {limit} bytes.")
        wants_multipart = target.body_kind == "multipart" or (
            target.kind == "resource" and content_type.lower().startswith("multipart/")
        )
        coding = request.headers.get("Content-Encoding")
        if wants_multipart:
            if coding is not None and coding.strip().lower() != "identity":
                raise UnsupportedMediaType("A multipart body cannot be sent with a Content-Encoding.")
            boundary = multipart_boundary(content_type)
            spool = await SpooledBody.read(request.body_chunks(), limit)
            return _Body(spool=spool, boundary=boundary, content_type=content_type)
        try:
            raw = await request.read(limit)
        except http.BodyTooLarge as exc:
            raise BodyTooLarge(str(exc)) from None
        if coding is not None:
            raw = decode_body(raw, coding, limit)
        if target.kind == "resource" and not raw:
            return _Body(raw=raw, content_type=content_type or None)
        if target.kind == "resource" and "json" not in content_type.lower() and content_type:
            return _Body(raw=raw, content_type=content_type)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise MalformedBody(
                "We could not parse the JSON body of your request. The body must be a "
                "JSON object."
            ) from None
        if not isinstance(parsed, dict):
            raise MalformedBody("The JSON body of your request must be an object.")
        return _Body(parsed, raw, None, None, "application/json")  # positional: every request

    # -- proxying --------------------------------------------------------------------

    def _pool_for(self, target: Target, body: _Body) -> tuple[Pool, str | None]:
        model = target.path_model if target.kind == "deployment" and target.path_model else None
        if model is None:
            model = body.model()
        if model is None:
            if target.kind == "deployment":
                raise MalformedBody("You must provide a model parameter.", param="model")
            pool = self._home_pool()
        else:
            pool = self.table.resolve(model)
            if pool.general is not pool.deployments:  # a Foundry member: not everything
                pool = servable(pool, target)
        if target.kind == "resource":
            pool = self._sticky(pool, target, body)
        return pool, model

    def _sticky(self, pool: Pool, target: Target, body: _Body) -> Pool:
        """A request about an object (a file, a response...) goes to the resource that
        created it, when this worker saw it created and that deployment is still known."""
        home = self.affinity.home_of(ids_referenced(target.operation, body.json))
        if home is None:
            return pool
        for deployment in (*pool.deployments, *self.settings.deployments):
            # A Foundry deployment may share its resource and name with the Azure
            # OpenAI one that made the object, but serves no objects.
            if (deployment.endpoint, deployment.deployment_name) == home and (
                    deployment.api != "foundry"):
                # Judged by the allow-list as what it is: a configured deployment found
                # here is judged by its model, not by the name the client sent.
                own = any(member is deployment for member in pool.deployments)
                return Pool(pool.model, (deployment,), dynamic=pool.dynamic and own,
                            transient=True)
        return pool

    def _home_pool(self) -> Pool:
        """Where deployment-less calls (GET files/{id}, ...) go when no model says."""
        pools = self.table.pools
        if self.settings.default_endpoint is not None:
            return self.table.resolve_home()
        for pool in pools:  # a Foundry deployment has no files, batches...
            if pool.general:
                return pool if pool.general is pool.deployments else Pool(
                    pool.model, pool.general, transient=True)
        raise MalformedBody("No deployment is configured to serve this request.")

    async def _proxy(
        self, request: HttpRequest, target: Target, caller: Caller, body: _Body,
        record: RequestRecord, routed: tuple[Pool, str | None] | None = None,
    ) -> Reply:
        """Try the pool's deployments as the balancer orders them until one answers.

        Failover happens only before the first byte reaches the client: a 429, 5xx,
        connect error or timeout moves on to the next deployment (or waits for the
        first cooldown to end); once `_relay` starts, a failure is the client's. A
        request that may have reached Azure is sent again only when the resend rule
        (`balancing/resend.py`) allows: a POST after a reset, a timeout or a 500 is not."""
        pool, client_model = routed or self._pool_for(target, body)
        record.model = client_model
        # The estimated cost only orders deployments near their quota: one has no order.
        run = self.balancer.failover(pool, _cost_of(body) if len(pool.deployments) > 1 else 0)
        while True:
            step = run.next_step()  # raises when no attempt is left
            if isinstance(step, float):
                record.retries.append(f"wait:{round(step * 1000)}ms")
                await asyncio.sleep(step)
                continue
            deployment = step
            record.attempts += 1
            record.deployment = deployment.deployment_name
            record.endpoint = deployment.endpoint
            lease = run.begin(deployment)
            try:
                token = None
                if deployment.auth == "entra" and self.tokens is not None:
                    token = await self.tokens.token_for(deployment)
                upstream_request, policy = self._translate(
                    request, target, caller, body, deployment, client_model, record, token
                )
                sent = time.perf_counter()
                # Awaited here, not in a helper coroutine: every coroutine between the
                # task and the socket is resumed again when Azure's answer arrives.
                response = await self.transport.send(upstream_request)
                _note_answer(record, response, sent)
            except UpstreamPoolTimeout as exc:
                # Our own pool was full: no judgement on the deployment's health.
                lease.done()
                record.retries.append(f"{deployment.deployment_name}:{exc.code}")
                run.failed(exc.with_traceback(None))
                continue
            except UpstreamError as exc:
                lease.failed(str(exc.code))
                lease.done()
                if not may_try_elsewhere(request.method, None, exc.request_sent):
                    raise  # it may have reached Azure: the client gets this failure
                record.retries.append(f"{deployment.deployment_name}:{exc.code}")
                # Without its traceback: the run outlives this frame's locals, and a
                # traceback pointing back at this frame would keep the request body
                # alive in a reference cycle until a full collection.
                run.failed(exc.with_traceback(None))
                continue
            except BaseException:
                lease.done()
                raise
            if self._busy is not None:
                self._busy.poke()  # the client's next request often follows at once
            lease.answered(response.status, response.headers)
            if response.status >= 400:
                try:
                    error_body = await response.read(_ERROR_BODY_LIMIT)
                except UpstreamAnswerTooLarge:
                    error_body = b""  # no error message is a megabyte: keep the status only
                finally:
                    response.close()
                    lease.done()
                error = translate_upstream_error(
                    response.status, response.headers, error_body,
                    client_model=client_model, deployment=deployment.deployment_name,
                    client_credentials=deployment.auth == "passthrough",
                )
                if not is_retryable(response.status) or not may_try_elsewhere(
                    request.method, response.status, True
                ):
                    # Raised from a local that is cleared first: a frame that holds its
                    # own exception is a reference cycle (frame -> exception ->
                    # traceback -> frame) that keeps the request body alive.
                    try:
                        raise error
                    finally:
                        del error
                record.retries.append(f"{deployment.deployment_name}:{response.status}")
                run.failed(error)
                del error
                continue
            try:
                restored = client_model if self.settings.response_model == "client" else None
                answer = await relay(request, target.operation, response, policy, restored,
                                     self.settings.keep_azure_fields, record,
                                     want_id=target.kind == "resource",
                                     answer_limit=self._answer_limit,
                                     prompt=body.json)
                if record.created_id is not None:
                    self.affinity.remember(
                        record.created_id, (deployment.endpoint, deployment.deployment_name)
                    )
                return answer
            finally:
                # Whatever happened (a client that left, a stalled upstream), the upstream
                # connection is released: closing twice is harmless in both transports.
                response.close()
                lease.done()

    def _translate(
        self, request: HttpRequest, target: Target, caller: Caller, body: _Body,
        deployment: DeploymentSettings, client_model: str | None, record: RequestRecord,
        token: str | None = None,
    ) -> tuple[UpstreamRequest, StreamPolicy | None]:
        client_version = _query_value(request, "api-version") if target.native else None
        version = api_version_for(
            deployment, target, client_version, self.settings.honour_client_api_version
        )
        url = self._url(deployment, target, version, request)
        headers = forwarded_headers(request.headers)
        headers.update(azure_auth_headers(deployment, caller, token))
        needs_model = names_deployment_in_body(deployment, target)
        policy: StreamPolicy | None = None
        payload: bytes | Any = None
        if body.json is not None:
            data = body.json
            changed = False
            if target.operation in _NORMALIZED_STREAMS:
                adapt = adapt_chat_request if target.operation == "chat/completions" else (
                    adapt_completions_request
                )
                adapted = adapt(data, self._profile(deployment, version))
                if adapted.changed:
                    data, changed = adapted.body, True
                    record.adaptations = adapted.notes
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("adapted request for %s: %s", deployment.deployment_name,
                                  ", ".join(adapted.notes))
                if data.get("stream") is True:
                    record.stream = True
                    policy = StreamPolicy(
                        client_model=client_model if self.settings.response_model == "client" else None,
                        keep_azure_fields=self.settings.keep_azure_fields,
                        strip_usage_frame=adapted.usage_injected,
                    )
            if needs_model and client_model is not None and data.get("model") != deployment.deployment_name:
                data = {**data, "model": deployment.deployment_name}
                changed = True
            payload = _reencoded(data) if changed else body.raw
            headers["content-type"] = "application/json"
        elif body.spool is not None and body.boundary is not None:
            replace = None
            if needs_model and client_model is not None:
                field = body.spool.form_field("model", body.boundary)
                if field is not None and field[0] != deployment.deployment_name:
                    replace = (field[1], field[2], deployment.deployment_name.encode())
            payload = body.spool.replaying(replace)
            headers["content-length"] = str(body.spool.length(replace))
        elif body.raw:
            payload = body.raw
        return UpstreamRequest(request.method, url, headers, payload), policy


def _note_answer(record: RequestRecord, response: UpstreamResponse, sent: float) -> None:
    record.upstream_ms = (time.perf_counter() - sent) * 1000
    record.azure_request_id = response.headers.get("x-request-id") or response.headers.get(
        "apim-request-id"
    )


def _profile(deployment: DeploymentSettings, version: str | None) -> DeploymentProfile:
    """What the deployment accepts, judged by the api-version actually sent (a native
    client's own version may differ from the configured one)."""
    # Foundry's model inference API gates parameters by api-version as the dated API
    # does (it answers OpenAI models with Azure OpenAI's "enabled only for api versions"
    # errors): its version is judged on the same table.
    api: Literal["dated", "v1"] = "v1" if deployment.api == "v1" else "dated"
    return _cached_profile(
        api, version if api == "dated" else deployment.api_version,
        deployment.model_family, deployment.deployment_name, deployment.model_name,
        tuple(deployment.unsupported_params),
    )


@functools.lru_cache(maxsize=1024)  # bounded: dynamic deployment names come from clients
def _cached_profile(
    api: Literal["dated", "v1"], version: str | None,
    family: Literal["auto", "reasoning", "standard"], deployment_name: str,
    model_name: str, unsupported: tuple[str, ...],
) -> DeploymentProfile:
    return DeploymentProfile(
        api=api,
        api_version=version,
        family=infer_family(deployment_name, model_name) if family == "auto" else family,
        unsupported_params=frozenset(unsupported),
        need=deployment_need(deployment_name, model_name, family),
    )


def _cost_of(body: _Body) -> int:
    """The token cost Azure will estimate for this request, for quota-aware routing."""
    if body.raw is not None:
        return estimated_cost(len(body.raw), body.json)
    return estimated_cost(0, None)  # multipart: audio or images, not prompt text


def _request_id_source() -> Callable[[], str]:
    """Unique request ids without a system call each: a random per-process prefix and a
    counter (formatted by a C iterator: no Python frame per id)."""
    prefix = os.urandom(4).hex()
    return map(f"{prefix}{{:08x}}".format, itertools.count(1)).__next__


def _json_answer(data: Mapping[str, Any], status: int = 200) -> Answer:
    return Answer(status, {"content-type": "application/json"}, orjson.dumps(data))


def _reencoded(data: dict[str, Any]) -> bytes:
    """The adapted body as JSON. orjson writes at most 254 levels of nesting while it
    reads 1,024: a body between the two is the client's error, not ours."""
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        raise MalformedBody(
            "The JSON body of your request is nested too deeply (at most 254 levels)."
        ) from None


def _query(request: HttpRequest) -> list[tuple[str, str]]:
    """The client's query parameters, in order (only resource calls forward any)."""
    return parse_qsl(request.query_string, keep_blank_values=True)


def _query_value(request: HttpRequest, name: str) -> str | None:
    for key, value in _query(request):
        if key == name:
            return value
    return None
