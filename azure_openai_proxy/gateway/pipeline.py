"""The request path, in the order data flows:

    classify -> authenticate -> read body -> pick deployment(s) -> translate
      -> send upstream, with failover -> relay (normalized) -> log

`Gateway.handle` answers every proxied route (`app.py` sends it everything that is not
the gateway's own: health, metrics). It sequences the steps; each is its own module:

    authenticate      `auth.py` (static keys), `gateway/keydirectory.py` (virtual keys)
    limit             `_usual_chat`, `_governed` here, over `governed.py`, `budgethold.py`
    read the body     `gateway/requestbody.py`
    pick the pool     `gateway/poolchoice.py`
    translate         `gateway/translation.py` (over the pure `translate`, `compat`)
    send, fail over   `gateway/attempts.py` (over `gateway/balancer.py`)
    relay, account    `gateway/relay.py`, `observability/record.py`
"""

from __future__ import annotations

from collections.abc import Mapping

from azure_openai_proxy.auth import Caller, ClientKeyring, presented_beside
from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.errors import GatewayError, ModelNotAllowed, ModelNotFound
from azure_openai_proxy.gateway.affinity import ResourceAffinity
from azure_openai_proxy.gateway.attempts import UpstreamAttempts
from azure_openai_proxy.gateway.balancer import Balancer
from azure_openai_proxy.gateway.batchcheck import check_resource_post, uploaded_batch_models
from azure_openai_proxy.gateway.budgethold import FREE_OPERATIONS, enforce_budget
from azure_openai_proxy.gateway.chained import GuessedContext, fitted
from azure_openai_proxy.gateway.chatfiles import USUAL_TOP_NAMES, check_form_names, check_top_names
from azure_openai_proxy.gateway.governed import (
    ONE_MAXIMUM,
    PLAIN_CHAT_NAMES,
    Held,
    admit_local,
    check_named_deployments,
    failed,
    hold,
    keyless_failed,
    limit_refusal,
    plain_chat_chars,
    plain_messages_chars,
    pool_allowed,
    release,
    request_estimate,
    used_tokens,
    usual_limits,
)
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.gateway.limitheaders import apply_lines, apply_to, limited
from azure_openai_proxy.gateway.modellist import models_answer
from azure_openai_proxy.gateway.ownership import ObjectOwners, chat_file_ids, object_ids, owned_answer, pager
from azure_openai_proxy.gateway.poolchoice import PoolChooser
from azure_openai_proxy.gateway.requestbody import RequestBody, read_body
from azure_openai_proxy.gateway.requestids import request_id_source
from azure_openai_proxy.gateway.rereads import CountedSend
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.keys import is_restricted
from azure_openai_proxy.governance.ratelimit import RateLimiter, Refusal, UsualLimits
from azure_openai_proxy.http.busypoll import BusyPoll, body_due
from azure_openai_proxy.http.interface import Answer, HttpRequest, Reply
from azure_openai_proxy.http.request import FastRequest
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool, RoutingTable, Target, classify
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.upstream.entra import EntraTokens
from azure_openai_proxy.upstream.transport import Transport

__all__ = ["Gateway"]

_CACHE_LIMIT = 4096  # entries in the path cache
Routed = tuple[Pool, str | None]  # a request's pool and the model name it sent


class Gateway:
    """Per-worker request pipeline: one transport, one routing table, one balancer."""

    def __init__(self, settings: Settings, transport: Transport, balancer: Balancer,
                 tokens: EntraTokens | None = None, affinity: ResourceAffinity | None = None,
                 directory: KeyDirectory | None = None, limiter: RateLimiter | None = None,
                 ) -> None:
        self.settings = settings
        # Governance (virtual keys and their limits): None when it is off.
        self.directory = directory
        self.limiter = limiter
        self.table = RoutingTable(settings)
        self.keyring = ClientKeyring(tuple(k.get_secret_value() for k in settings.client_keys))
        # Governance instead of client keys: only virtual keys may spend the server's keys.
        self._virtual_only = not self.keyring.enabled and settings.holds_server_side_keys
        self.transport = transport
        self.balancer = balancer
        self.tokens = tokens
        self.affinity = affinity or ResourceAffinity()
        self.budgets: BudgetGuard | None = None  # set when the ledger is on (app.py)
        # Which virtual key created which object (gateway/ownership.py); kept on reload.
        self.owners = ObjectOwners()
        self._request_ids = request_id_source()
        self._busy = BusyPoll.from_setting(settings.busy_poll_us, transport.connections_in_use)
        self._pools = PoolChooser(settings, self.table, self.affinity)
        self._attempts = UpstreamAttempts(settings, transport, balancer, tokens, self.affinity,
                                          self._busy)
        # Read once: a settings model's attributes cost a __getattr__ hook per access.
        self._body_limit = settings.max_body_bytes
        self._default_completion = settings.default_completion_tokens
        self._targets: BoundedCache[tuple[str, str], Target] = BoundedCache(_CACHE_LIMIT)

    # -- entry point -----------------------------------------------------------------

    def new_record(self, method: str) -> RequestRecord:
        """The record of a request this gateway is about to handle, with its id."""
        return RequestRecord(self._request_ids(), method)

    async def handle(self, request: HttpRequest, record: RequestRecord) -> Reply:
        """Answer `request`, filling in `record` as it goes. GatewayErrors propagate
        (`app.py` renders them); their status is in the record first."""
        body: RequestBody | None = None
        try:
            target = self._classify(request.method, request.path)
            record.route = target.operation if target.kind != "resource" else target.operation.split("/")[0]
            if self.directory is None:  # `keyring.authenticate`, in as many calls as before
                headers = request.headers
                caller = self.keyring.authenticate_key(
                    presented_beside(headers, headers.get("Authorization")))
            else:
                caller = self.directory.authenticate_headers(request.headers, self.keyring,
                                                             self._virtual_only)
                if caller.key is not None:
                    record.key_id = caller.key.id
                    record.team_id = caller.key.team_id
                    if self.budgets is not None and caller.budgeted is not False:
                        enforce_budget(self.budgets, caller, request)
            if target.kind in ("models", "model"):
                return apply_to(models_answer(self.table, target, caller), self.admit_local(caller))
            # Awake (`BusyPoll`) for what follows soon: a body's rest sent apart from its
            # head (httpx does), and Azure's answer; not a stream's first frame (issue 15).
            spin = self._busy.poke() if self._busy is not None and body_due(request) else 0.0
            body = await read_body(request, target, self._body_limit)
            if self._busy is not None and (body.json is None or body.json.get("stream") is not True):
                self._busy.poke()
            elif spin and self._busy is not None:
                self._busy.retract(spin)
            if caller.key is not None:
                usual = self._usual_chat(target, caller, body, record)
                if usual is None:
                    return await self._governed(request, target, caller, body, record)
                routed, limits, tokens, lines = usual  # sent here: no coroutine between
                if type(request) is FastRequest:  # `limited`, `with_lines` inline (a call: ~350)
                    request.head_lines = lines
                else:
                    request = limited(request, lines)
                try:
                    reply = await self._attempts.send(request, target, caller, body, record, routed)
                    if type(reply) is Answer:  # none of Azure's limits (`relay`: a key's)
                        reply.head_lines = lines
                    return reply
                except BaseException as exc:
                    failed(exc, record, body.json, target.operation, self._default_completion, lines)
                    raise
                finally:
                    if not limits.settle_usage(tokens, record.usage):
                        limits.settle(tokens, used_tokens(record))
            attempts = self._attempts if target.kind != "resource" else CountedSend(
                self._attempts.send, self.owners.counted)  # a read counts once (rereads.py)
            try:  # a static key's (or passthrough) request
                return await attempts.send(request, target, caller, body, record,
                                           self._pools.pool_for(target, body))
            except BaseException as exc:
                keyless_failed(exc, record, body.json, target.operation, body,
                               self._default_completion, self.budgets is not None)
                raise
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
        if directory is None:
            return self.keyring.authenticate(headers)
        return directory.authenticate_headers(headers, self.keyring, self._virtual_only)

    def admit_local(self, caller: Caller) -> Mapping[str, str]:
        """`governed.admit_local` on this gateway's limiter: the model list's answer
        counts against a virtual key's limits too (its 429, or the headers to answer with)."""
        return admit_local(self.limiter, caller)

    def _usual_chat(self, target: Target, caller: Caller, body: RequestBody,
                    record: RequestRecord) -> tuple[Routed, UsualLimits, int, bytes] | None:
        """`_governed`'s steps, in its order, for a plain chat (names `PLAIN_CHAT_NAMES`, not
        stored, no file) of a key on the limiter's short path (`UsualLimits` of this key
        version and epoch), with no coroutine (`handle` sends and settles it): its pool,
        limits, tokens and head lines; None, before any step: `_governed`."""
        json, decided, key, limiter = body.json, caller.decided, caller.key, self.limiter
        # A chat's target is a deployment's, never a resource (routing.RESOURCE_ROOTS).
        if (target.operation != "chat/completions" or json is None or body.raw is None
                or decided is None or key is None or limiter is None
                or decided.epoch is not limiter.epoch or not PLAIN_CHAT_NAMES.issuperset(json)
                or ("store" in json and json["store"] is True)):  # the key's: `_governed`
            return None
        usual, chars = decided.usual, plain_messages_chars(json.get("messages"))
        if usual is None or chars < 0:
            return None
        models = key.models
        if models:
            routed = self._routed(target, body, models, record)
        else:  # no allow-list: `_routed`'s pool and model, nothing to judge
            routed = self._pools.pool_for(target, body, models)
            record.model = routed[1]
        body.canonical = True  # what was checked (tokens) is what is sent, as `_governed`
        most = json.get("max_tokens")
        if type(most) is int and most >= 0 and "max_completion_tokens" not in json:  # ONE_MAXIMUM
            tokens = -(-chars // 4) + most  # as `request_estimate` makes it
        else:
            tokens = sum(request_estimate(json, self._default_completion, target.operation, chars))
        lines = usual.take(tokens := tokens or 1)  # a model runs: 1 at least (`hold`)
        if type(lines) is Refusal:
            raise limit_refusal(lines)
        return routed, usual, tokens, lines

    async def _governed(
        self, request: HttpRequest, target: Target, caller: Caller, body: RequestBody,
        record: RequestRecord,
    ) -> Reply:
        """A virtual key's request: its model checked against the key's allow-list (and
        on a resource, the objects it names as the key's own), then let through its and
        its team's limits and budgets (gateway/governed.py), which it holds until it ends."""
        key, limiter = caller.key, self.limiter
        assert key is not None and limiter is not None
        models = key.models
        routed = self._routed(target, body, models, record)
        json = body.json
        operation = target.operation
        chat = operation == "chat/completions"
        if json is not None:  # `Model` beside `model`, `Max_Tokens` beside `max_tokens`:
            # which would Azure read? (chatfiles.py `check_top_names`)
            if not USUAL_TOP_NAMES.issuperset(json):
                check_top_names(json, bool(models), chat)
        elif body.spool is not None and body.boundary is not None:
            check_form_names(body.spool, body.boundary)  # the same, of a form's parts
        prompt_chars = -1  # the usual chat's prompt, measured once for files and tokens
        if target.kind == "resource":
            body.canonical = json is not None  # what is checked is what is sent
            named, inner = object_ids(operation, json)
            homes = await self.owners.check(named, key.id, is_restricted(key, caller.team), inner)
            if homes and self.affinity.learn(homes):  # made through another worker: sent
                routed = self._routed(target, body, models, record)  # there, judged there
            if request.method == "POST":  # unmetered work, a batch's models
                await check_resource_post(self.owners, self.table, caller, json, operation, routed[0])
        elif chat and body.raw is not None:
            # What was checked (files, tokens) is what is sent, even if the JSON repeats a
            # key: re-encoded (cheaper than a search), or a large body shown to repeat none.
            body.canonical = True
            prompt_chars = plain_chat_chars(json)
            if prompt_chars < 0:  # a message that is not a role and a string: files?
                files = chat_file_ids(body.raw, json)
                if files:
                    await self.owners.check(files, key.id, is_restricted(key, caller.team))
        else:  # embeddings, completions...: what the hold reads (input, max_tokens, n)
            body.canonical = json is not None  # is what is sent, as for chat
        if models:  # what the body runs beside its model: an image tool's, data sources'
            check_named_deployments(models, self.table, routed[0], json, request.headers, operation)
        chained = (self.owners.chained.reserve(json, key.id)
                   if operation == "responses" or operation == "responses/compact" else 0)
        if type(chained) is GuessedContext:  # not known to any worker: since a restart?
            chained = await self.owners.reserve_chained(json, key.id)
        if chained and type(chained) is not GuessedContext:
            record.context_tokens = chained  # in its estimate if no usage comes back
        stored = chat and json is not None and json.get("store") is True  # Azure keeps it
        if operation.startswith("responses") or operation == "threads/runs":  # (before the hold)
            record.claim = await self.owners.stream_claim(request, operation, key.id, record)
        elif stored and json is not None and json.get("stream") is True:  # a chat's too
            record.claim = self.owners.claimer(key.id, record)
        decided = caller.decided
        if decided is not None and decided.epoch is limiter.epoch:
            usual = decided.usual
        else:
            usual = usual_limits(limiter, self.budgets, caller)
        held: Held | None = None
        tokens = 0
        if usual is not None:  # the usual key: its plan's one object, no `hold`
            if json is not None:
                most = json.get("max_tokens")
                if (prompt_chars >= 0 and type(most) is int and most >= 0
                        and ONE_MAXIMUM.isdisjoint(json)):
                    tokens = -(-prompt_chars // 4) + most  # as `request_estimate` makes it
                elif operation in FREE_OPERATIONS:  # a free count: no model, no tokens
                    tokens = 0
                else:
                    tokens = sum(request_estimate(json, self._default_completion, operation,
                                                  prompt_chars))
                    tokens += (chained := fitted(chained, tokens, usual.state.tpm))
            if not tokens and routed[1] is not None and operation not in FREE_OPERATIONS:
                tokens = 1  # runs a model (a form's work is not estimated): see `hold`
            lines = usual.take(tokens)
            if type(lines) is Refusal:
                raise limit_refusal(lines, chained)
        else:
            held = hold(limiter, self.budgets, caller, body.held_fields(operation), routed,
                        operation, self._default_completion, prompt_chars, chained, request.headers)
            lines = held[0].head_lines
        try:
            batch_models = (await uploaded_batch_models(body.spool, body.boundary) if models
                            and operation == "files" and request.method == "POST" else None)
            reply = await self._attempts.send(limited(request, lines), target, caller, body,
                                              record, routed)
            if target.kind == "resource":  # a list's empty page: the next (ownedpages.py)
                more = pager(self._attempts.send, request, target, caller, body, record, routed)
                reply = await owned_answer(self.owners, request.method, operation,
                                           key.id, record, reply, batch_models, json, more)
            elif stored:  # answered as JSON: the key's (a stream's was claimed)
                await self.owners.own_chat(key.id, record, reply)  # (ownership.py)
            return apply_lines(reply, lines)
        except BaseException as exc:
            failed(exc, record, json, operation, self._default_completion, lines, body, request.headers)
            await self.owners.counted.gone(request.method, operation, record, json)  # (left)
            raise
        finally:
            if held is not None:
                release(limiter, self.budgets, held, record)
            elif usual is not None and not usual.settle_usage(tokens, record.usage):
                usual.settle(tokens, used_tokens(record))

    def _routed(self, target: Target, body: RequestBody, models: tuple[str, ...],
                record: RequestRecord) -> Routed:
        """A virtual key's pool and model name, judged by its allow-list (`models`)."""
        try:
            routed = self._pools.pool_for(target, body, models)
        except ModelNotFound as exc:
            if models:  # the usual answer lists every configured model: not for this key
                raise ModelNotAllowed(exc.model) from None
            raise
        record.model = routed[1]
        if models and routed[1] is not None and not pool_allowed(models, routed[1], routed[0]):
            raise ModelNotAllowed(routed[1])
        return routed

    def _classify(self, method: str, raw_path: str) -> Target:
        """`classify`, remembered: a few paths carry nearly all the traffic."""
        key = (method, raw_path)
        target = self._targets.get(key)
        if target is None:
            target = self._targets.put(key, classify(method, raw_path, self.settings.api_base))
        return target

