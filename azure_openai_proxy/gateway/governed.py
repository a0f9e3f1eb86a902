"""What the request path applies for a virtual key, as plain functions: the allow-list
judged over a pool, the limits and budget a request holds while it runs (`hold`, then
`release` whatever happened), a limiter's refusal as OpenAI's 429, the tokens a request
is settled with, the names its cost is priced by, what a failed request records.
`Gateway._governed` and its short path for the usual plain chat, `Gateway._usual_chat`
(gateway/pipeline.py), call them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import (
    GatewayError,
    InvalidRequest,
    KeyRateLimited,
    MalformedBody,
    ModelNotAllowed,
    NotFound,
    UpstreamError,
)
from azure_openai_proxy.gateway.affinity import MAX_REFERENCE_VALUES, folded
from azure_openai_proxy.gateway.budgethold import (
    FREE_OPERATIONS,
    PoolNames,
    budgeted,
    reserve_budget,
    settle_budget,
)
from azure_openai_proxy.gateway.chained import GuessedContext, context_counted, fitted
from azure_openai_proxy.gateway.chatfiles import USUAL_TOP_NAMES
from azure_openai_proxy.gateway.ledgerrows import UNIT_PRICED
from azure_openai_proxy.gateway.limitheaders import limit_error
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.unanswered import note_unanswered
from azure_openai_proxy.governance.budget import BudgetGuard, BudgetHold
from azure_openai_proxy.governance.estimate import (
    SCHEMA_FIELDS,
    max_output_tokens,
    prompt_tokens,
    text_length,
)
from azure_openai_proxy.governance.keys import model_allowed
from azure_openai_proxy.governance.ratelimit import (
    Admission,
    RateLimiter,
    Refusal,
    UsualLimits,
)
from azure_openai_proxy.governance.toolusage import IMAGE_DEPLOYMENT_HEADER, image_tool
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool, RoutingTable
from azure_openai_proxy.settings import DEPLOYMENT_NAME

__all__ = [
    "ONE_MAXIMUM",
    "PLAIN_CHAT_NAMES",
    "Held",
    "admit_local",
    "check_data_sources_allowed",
    "check_image_allowed",
    "check_named_deployments",
    "deployment_allowed",
    "failed",
    "hold",
    "keyless_failed",
    "limit_refusal",
    "plain_chat_chars",
    "plain_messages_chars",
    "pool_allowed",
    "price_names",
    "release",
    "request_estimate",
    "reset_limits",
    "unanswered",
    "used_tokens",
    "usual_limits",
    "values_named",
]

# A governed request's limiter admission and budget hold (None: no budget), as a tuple:
# made for every request, and a tuple is the cheapest object there is.
Held = tuple[Admission, BudgetHold | None]


def hold(limiter: RateLimiter, budgets: BudgetGuard | None, caller: Caller,
         body: Mapping[str, Any] | None, routed: tuple[Pool, str | None], operation: str,
         default_completion: int, prompt_chars: int | None = None, chained: int = 0,
         headers: Mapping[str, str] | None = None) -> Held:
    """Let a virtual key's request through its key's and team's limits (tokens estimated
    from the parsed body, when a TPM limit applies) and hold its estimated cost against
    their budgets; a 429 when either says no, having taken nothing. `release` it once
    the request has ended. `prompt_chars`: `plain_chat_chars(body)`, when measured;
    `chained`: the context tokens its `previous_response_id` reads (gateway/chained.py);
    `headers`: the request's, for the budget (a Responses image tool's deployment).
    Runs for every governed request: the usual one (a plain chat, its `max_tokens` set,
    no budget) is estimated inline, `request_estimate`'s short path."""
    key, team = caller.key, caller.team
    assert key is not None
    if team is None:
        plan = limiter.plan(key.id, key.limits, None, None)
    else:
        plan = limiter.plan(key.id, key.limits, team.id, team.limits)
    # Decided once per key version by the key directory (`Caller.budgeted`).
    budget = budgets is not None and (
        caller.budgeted if caller.budgeted is not None else budgeted(caller))
    if body is None or not (plan.counts_tokens or budget) or operation in FREE_OPERATIONS:
        # Nothing to reserve (a free count runs no model: no tokens, no cost).
        estimate = None  # (prompt, max output) tokens: measured once, for either or both
        tokens = 0
    else:
        most = body.get("max_tokens")
        if (prompt_chars is not None and prompt_chars >= 0 and type(most) is int
                and most >= 0 and ONE_MAXIMUM.isdisjoint(body)):
            estimate = (-(-prompt_chars // 4), most)  # as `request_estimate` makes it
        else:
            estimate = request_estimate(body, default_completion, operation, prompt_chars)
            if chained:
                if type(chained) is GuessedContext:
                    chained = fitted(chained, sum(estimate), min(
                        (state.tpm for state in plan.subjects if state.tpm is not None),
                        default=None))
                estimate = (estimate[0] + chained, estimate[1])
        tokens = estimate[0] + estimate[1] if plan.counts_tokens else 0
    if (not tokens and plan.counts_tokens and routed[1] is not None
            and operation not in FREE_OPERATIONS):
        # A request that runs a model takes a token at least, so that a TPM in debt
        # refuses it (no TPM refuses a request of 0 tokens: a GET, a free count): a
        # form's work (a transcription, an image edit) is not estimated, and is billed
        # by tokens all the same.
        tokens = 1
    admitted = limiter.take(plan, tokens)
    if isinstance(admitted, Refusal):
        raise limit_refusal(admitted, chained)
    if not budget:
        return admitted, None
    assert budgets is not None
    try:
        return admitted, reserve_budget(budgets, caller, body, price_names(*routed),
                                        operation, default_completion, estimate, headers,
                                        routed[0])
    except BaseException:
        limiter.refund(admitted)  # over budget, never sent: its request slot too
        raise


def usual_limits(limiter: RateLimiter, budgets: BudgetGuard | None,
                 caller: Caller) -> UsualLimits | None:
    """A virtual key's `UsualLimits` when its requests take the limiter's short path
    (its plan the usual one, this worker's limits alone, no budget; then `Gateway.
    _governed` takes and settles on it instead of `hold` and `release`), else None.
    Decided once per key version and limiter epoch: kept on the caller (`Decided`)."""
    key, team = caller.key, caller.team
    assert key is not None
    usual = None
    if not limiter.shared and not (budgets is not None and budgeted(caller)):
        usual = (limiter.plan(key.id, key.limits, None, None) if team is None
                 else limiter.plan(key.id, key.limits, team.id, team.limits)).usual
    if caller.decided is not None:
        caller.decided.usual, caller.decided.epoch = usual, limiter.epoch
    return usual


def admit_local(limiter: RateLimiter | None, caller: Caller) -> Mapping[str, str]:
    """A request the gateway answers itself (the model list) still counts against a
    virtual key's limits and its team's: no route bypasses them. Raises their 429;
    else the `x-ratelimit-*` headers to answer with (none for other callers)."""
    key = caller.key
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


def reset_limits(limiter: RateLimiter, subject: str) -> dict[str, Any]:
    """`DELETE /admin/limits/{subject}` (gateway/admin.py): `RateLimiter.reset`, in
    every worker's count (a 400 for a name not `key:ID` or `team:ID`, a 404 when
    nothing is known of it). Not echoed: an operator may paste a secret there."""
    kind, _, ident = subject.partition(":")
    if kind not in ("key", "team") or not ident:
        raise InvalidRequest("A subject is key:ID or team:ID, as GET /admin/limits "
                             "lists them.")
    if not limiter.reset(subject):
        raise NotFound("No live limits for this subject: it has made no request since "
                       "the start, or has no limit.", code="not_found")
    return {"object": "limits.reset", "subject": subject, "reset": True}


def release(limiter: RateLimiter, budgets: BudgetGuard | None, held: Held,
            record: RequestRecord) -> None:
    """The request ended (answered, failed, or its client left): its tokens and cost are
    settled with what Azure said it used (or the estimate recorded instead)."""
    usage = record.usage
    if usage:
        # `used_tokens`' short path, chat's usage: most answers.
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if (type(prompt) is int and type(completion) is int and prompt >= 0
                and completion >= 0):
            limiter.settle(held[0], prompt + completion)
        else:
            limiter.settle(held[0], used_tokens(record))
    else:
        limiter.settle(held[0], None)
    if held[1] is not None and budgets is not None:
        settle_budget(budgets, held[1], record)


def failed(exc: BaseException, record: RequestRecord, body: Mapping[str, Any] | None,
           operation: str, default_completion: int, lines: bytes,
           form: RequestBody | None = None, headers: Mapping[str, str] | None = None) -> None:
    """A governed request raised `exc` (its limits' head `lines`): one sent and never
    answered has its estimate recorded (Azure may bill it; `form`: its body, a form
    read only then; `headers`: the client's, naming a Responses image tool's
    deployment), and Azure's error answer carries the key's limits, not Azure's."""
    if unanswered(exc):
        note_unanswered(record, body, operation, default_completion, form, headers)
    limit_error(exc, lines)


def keyless_failed(exc: BaseException, record: RequestRecord, body: Mapping[str, Any] | None,
                   operation: str, form: RequestBody, default_completion: int,
                   ledger: bool) -> None:
    """A static client key's (or passthrough) request raised `exc`: one sent and never
    answered is billed by Azure, so it is recorded with its estimate, as a virtual key's
    is (`failed`): a picture, speech or transcription always, a text request (chat,
    completions, responses, embeddings) when the `ledger` records it (it was recorded
    with no usage, at $0). Only on this path: an answered request pays nothing for it."""
    if (ledger or operation in UNIT_PRICED) and unanswered(exc):
        note_unanswered(record, body, operation, default_completion, form)


def unanswered(exc: BaseException) -> bool:
    """Whether a request that failed with `exc` may have been sent and never answered
    (the client left, a timeout): Azure may bill it."""
    return exc.request_sent if isinstance(exc, UpstreamError) else not isinstance(
        exc, GatewayError)


def pool_allowed(patterns: tuple[str, ...], name: str, pool: Pool) -> bool:
    """Whether a key's allow-list lets `name` through. A pool found by a deployment's
    name (Azure's native paths, or a deployment name sent as `model`) is judged by the
    model each of its deployments serves, never by the deployment's name; so is one
    trimmed to an operation's members or to an object's deployment (`Pool.transient`).
    Only a pool made for the client's own name (`Pool.dynamic`, env mode) is judged by
    that name."""
    models = {deployment.model_name for deployment in pool.deployments}
    if pool.dynamic or models == {pool.model}:
        return model_allowed(patterns, name, pool.model)
    return all(model_allowed(patterns, model) for model in models)


def check_image_allowed(patterns: tuple[str, ...], table: RoutingTable, pool: Pool,
                        body: Mapping[str, Any] | None, headers: Mapping[str, str]) -> None:
    """A key's allow-list applied to the image deployment a Responses request's hosted
    image tool runs on (its `x-ms-oai-image-generation-deployment` header; Azure runs
    it on that deployment of the resource the request goes to): on each endpoint of the
    pool, the deployment's model must be one the key may use, as `pool_allowed` judges a
    pool. One the gateway does not configure there is of a model not known, so refused
    (ModelNotAllowed, its param the header); but on an env mode's endpoint (`Pool.
    dynamic`) it is judged by its name, as the model sent there is. Only when the body
    asks for the tool: without it the header is not relayed (gateway/translation.py)."""
    name = headers.get(IMAGE_DEPLOYMENT_HEADER)
    if name is not None and image_tool(body) is not None and not deployment_allowed(
            patterns, table, pool, name):
        raise ModelNotAllowed(name, IMAGE_DEPLOYMENT_HEADER)


def deployment_allowed(patterns: tuple[str, ...], table: RoutingTable, pool: Pool,
                       name: str) -> bool:
    """Whether a key's allow-list lets a request to `pool` run on the deployment Azure
    knows as `name` (one the gateway does not map: a hosted tool's, a batch line's):
    on each endpoint of the pool, the deployment of that name must serve a model the
    key may use. One the gateway does not configure there is of a model not known, so
    not allowed; but on an env mode's endpoint (`Pool.dynamic`) it is judged by its
    name, as the model sent there is, when it can be a deployment's name (as env mode
    makes a deployment only of such a name)."""
    models = {d.endpoint: d.model_name for d in table.deployments_named(name)}
    for member in pool.deployments:
        model = models.get(member.endpoint)
        if model is None and pool.dynamic and DEPLOYMENT_NAME.match(name):
            model = name
        if model is None or not model_allowed(patterns, model):
            return False
    return True


def check_named_deployments(patterns: tuple[str, ...], table: RoutingTable, pool: Pool,
                            body: Mapping[str, Any] | None, headers: Mapping[str, str],
                            operation: str) -> None:
    """A key's allow-list (`patterns`, not empty) applied to the deployments a request
    runs beside its model's: a Responses request's image tool's (`check_image_allowed`),
    a chat's data sources' (`check_data_sources_allowed`)."""
    if operation == "responses":
        check_image_allowed(patterns, table, pool, body, headers)
    elif operation == "chat/completions":
        check_data_sources_allowed(patterns, table, pool, body)


def check_data_sources_allowed(patterns: tuple[str, ...], table: RoutingTable, pool: Pool,
                               body: Mapping[str, Any] | None) -> None:
    """A key's allow-list (when it has one) applied to the deployments a chat's `data_sources` (Azure's On
    Your Data) run: an `embedding_dependency` of type `deployment_name` names a
    deployment of the resource the chat goes to, which Azure runs (and bills) to embed
    the query; judged as a hosted image tool's deployment is (`deployment_allowed`)."""
    if not patterns or not body or "data_sources" not in body:
        return
    for name in values_named(body.get("data_sources"), "deployment_name"):
        if not deployment_allowed(patterns, table, pool, name):
            raise ModelNotAllowed(name, "data_sources")


# The most values walked by `values_named`: the objects it reads (a grader, a chat's
# data sources) nest a few deep; one past this is refused rather than judged in part.
_MOST_NAMED_VALUES = 10_000


def values_named(node: Any, name: str) -> list[str]:
    """Every string under a key that folds to `name` (`Model` too: a case-insensitive
    binder reads it as `model`) in `node`, however nested: the deployments a body names
    beside its `model` (a grader's, a data source's embedding deployment)."""
    found: list[str] = []
    stack, budget = [node], _MOST_NAMED_VALUES
    while stack:
        budget -= 1
        if budget < 0:
            raise MalformedBody(f"The request holds too many values to judge its "
                                f"`{name}`s.")
        value = stack.pop()
        if isinstance(value, dict):
            for field, inner in value.items():
                if isinstance(inner, str) and folded(field) == name:
                    found.append(inner)
                else:
                    stack.append(inner)
        elif isinstance(value, list):
            stack.extend(value)
    return found


# The longest `retry-after` the openai SDK sleeps before its retry (`_constants.py`
# `MAX_RETRY_AFTER_DELAY`, 2 minutes; older releases and other SDKs 60 s, and they retried
# a longer one at once on their own backoff, refused each time). A refusal that says to
# wait longer (a TPM debt stands until refilled) says not to retry: the client is told
# the wait, and none of its requests is spent on a retry that cannot pass. Up to it, the
# SDK's retry waits and is let through.
_SLEPT_WAIT_MS = 120_000


def limit_refusal(refusal: Refusal, chained: int = 0) -> KeyRateLimited:
    """A limiter's refusal as OpenAI's 429; `chained`: the context tokens the request's
    `previous_response_id` or `conversation` reserved (gateway/chained.py), named in the
    message of a tokens refusal: its prompt may be short, and its size is the context."""
    whose = "team" if refusal.subject.startswith("team:") else "key"
    if refusal.kind == "parallel":
        what = f"Too many requests in flight for this {whose}"
    elif refusal.never:
        what = f"This request alone is larger than this {whose}'s tokens per minute"
    else:
        what = f"Rate limit reached for this {whose} ({refusal.kind} per minute)"
    # Rounded up: a client that waits exactly the header's milliseconds (the SDKs do)
    # must find the limit refilled, not be refused again a token short.
    retry_ms = max(1, math.ceil(refusal.retry_after * 1000))
    headers = refusal.headers
    if refusal.never:  # waiting will not help: the SDKs do not retry on this header
        advice = context_counted(chained) if chained else ": lower max_tokens or the prompt"
        return KeyRateLimited(f"{what}{advice}.",
                              retry_after_ms=retry_ms,
                              limit_headers={**headers, "x-should-retry": "false"})
    if chained and refusal.kind == "tokens":
        what += context_counted(chained, waits=True)
    if retry_ms > _SLEPT_WAIT_MS:  # a TPM debt's: the SDKs would not sleep it (`_SLEPT_WAIT_MS`)
        headers = {**headers, "x-should-retry": "false"}
    return KeyRateLimited(f"{what}. Please try again in {retry_ms} ms.",
                          retry_after_ms=retry_ms, limit_headers=headers)


def used_tokens(record: RequestRecord) -> int | None:
    """Tokens Azure said the request used (None: it did not say). A negative count is
    read as none, as the ledger reads it (`count_tokens`): an upstream's usage must not
    give a TPM limit back more than the request reserved."""
    usage = record.usage
    if not usage:
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if type(prompt) is int and type(completion) is int and prompt >= 0 and completion >= 0:
        return prompt + completion  # chat's usage: most answers
    prompt, completion = record.tokens()
    if prompt is None and completion is None:
        return None
    return max(prompt or 0, 0) + max(completion or 0, 0)


def request_estimate(body: Mapping[str, Any], default_completion: int, operation: str,
                     prompt_chars: int | None = None) -> tuple[int, int]:
    """(prompt, max output) tokens of a request body: `prompt_tokens` and
    `max_output_tokens`, with the usual chat request (messages of a `role` and a string
    `content`, a `max_tokens`, one choice) read on a short path instead of their general
    walks. `prompt_chars`: `plain_chat_chars(body)` when the caller has it already."""
    chars = plain_chat_chars(body) if prompt_chars is None else prompt_chars
    prompt = prompt_tokens(body) if chars < 0 else -(-chars // 4)  # rounded up, as it does
    value = body.get("max_tokens")
    if type(value) is int and value >= 0 and ONE_MAXIMUM.isdisjoint(body):
        return prompt, value  # the only maximum `max_output_tokens` reads, one choice
    return prompt, max_output_tokens(body, default_completion, operation)


# Names beside which `max_tokens` is not the answer's whole maximum: more choices, or
# another maximum (`max_output_tokens` reads the largest: Azure may read either one).
ONE_MAXIMUM = frozenset({"n", "best_of", "max_completion_tokens", "max_output_tokens"})

# The names of a chat body `Gateway._usual_chat` takes: `USUAL_TOP_NAMES` (Azure reads
# them as the gateway does: no `check_top_names`) less the other prompt fields (`input`,
# `prompt`; `instructions` is not among them) and those of more than one choice (`n`,
# `best_of`) and the schemas the model reads too (`SCHEMA_FIELDS`: `prompt_tokens`
# counts them), and `data_sources`, whose embedding deployment a key's allow-list judges
# (`check_data_sources_allowed`, in `_governed` only): one `issuperset` in C, where the
# same answer took it and five `in`s. `store` is among them: `store: false` (OpenAI's
# default) is a plain chat; `store: true` is not (a stored chat is the key's: `_governed`
# records it), which `_usual_chat` checks by its value.
PLAIN_CHAT_NAMES = (USUAL_TOP_NAMES - {"input", "prompt", "n", "best_of", "data_sources"}
                    - SCHEMA_FIELDS)


def plain_chat_chars(body: Mapping[str, Any] | None) -> int:
    """The characters of a chat body's prompt when it is the usual one: `messages` and no
    other prompt field, each message exactly a `role` and a string `content` (then
    `prompt_tokens` counts these and nothing else, and no message can name a file), and
    no more of them than a body's file parts are walked for (`MAX_REFERENCE_VALUES`:
    then `chat_file_ids` need not be called); else -1. One short loop."""
    if (body is None or "input" in body or "prompt" in body or "instructions" in body
            or not SCHEMA_FIELDS.isdisjoint(body)):
        return -1
    return plain_messages_chars(body.get("messages"))


def plain_messages_chars(messages: object) -> int:
    """`plain_chat_chars` of a body known to hold no other prompt field (its names among
    `PLAIN_CHAT_NAMES`): its `messages` alone, in `estimate.text_length`'s characters."""
    if type(messages) is not list or len(messages) > MAX_REFERENCE_VALUES:
        return -1
    chars = 0
    # A message of two names, `role` among them, is a role and a content when it is a
    # dict (parsed JSON: else a list or a string, whose `["content"]` raises TypeError,
    # or a number, whose `len` does): no `type(message) is dict` per message (~700 of
    # ~6,300 instructions a call for two messages, callgrind). Its content is a string
    # when it has `isascii`: of parsed JSON's other values (a list of parts, a number,
    # null, an object) none has, so no `type(content) is str` either (~190 a message).
    # An exception is rare.
    try:
        for message in messages:
            if len(message) != 2 or "role" not in message:
                return -1
            content = message["content"]
            # outside ASCII, its UTF-8 bytes (`estimate.text_length`: a CJK character is
            # about a token); `isascii` reads the string's flag
            chars += len(content) if content.isascii() else text_length(content)
    except (TypeError, KeyError, AttributeError):  # not a dict, no `content`, not a string
        return -1
    return chars


def price_names(pool: Pool, client_model: str | None) -> PoolNames:
    """The names a request to `pool` is priced by: of each of its deployments, since the
    balancer may pick any (the first's alone held a pool of gpt-4o-mini and o1 at
    gpt-4o-mini's price, 100 times under, and let a member without a price through to a
    hard budget). Each is given exactly as the ledger prices it (the client's model, its
    `model_name`, its deployment name: the first with a price, `ledgerrows.record_cost`),
    so that a hold is what the settlement will charge. Holding a deployment at the
    dearest of its names instead held a `gpt-4o-mini` deployment still named `gpt-4` at
    gpt-4's price, 100 times what the ledger then charged: concurrent requests filled
    the budget with holds and were refused while nothing was spent."""
    deployments = pool.deployments
    if len(deployments) == 1:  # most pools
        first = deployments[0]
        return ((client_model, first.model_name, first.deployment_name),)
    if not deployments:
        return ((client_model, pool.model),)
    return tuple((client_model, deployment.model_name, deployment.deployment_name)
                 for deployment in deployments)
