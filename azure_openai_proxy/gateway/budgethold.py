"""A budgeted request on the request path: refused when its key or team has spent its
budget, its estimated cost held while it runs, settled with what it cost (a request
sent and never answered at its estimate, gateway/unanswered.py, else its hold). The
writer (gateway/ledger.py) turns the finished records into rows."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import BudgetExhausted, GatewayError, ModelNotPriced
from azure_openai_proxy.gateway.affinity import folded
from azure_openai_proxy.gateway.formmedia import HeldForm
from azure_openai_proxy.gateway.ledger import NO_TOKENS, UNIT_PRICED, record_cost
from azure_openai_proxy.gateway.ledgerrows import ESTIMATED_USD
from azure_openai_proxy.gateway.toolhold import image_tool_usd
from azure_openai_proxy.governance.budget import (
    BudgetGuard,
    BudgetHold,
    budget_applies,
)
from azure_openai_proxy.governance.estimate import (
    DEFAULT_COMPLETION_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    input_picture_tokens,
    max_output_tokens,
    picture_tokens,
    prompt_tokens,
    transcription_tokens,
)
from azure_openai_proxy.governance.keys import has_budget
from azure_openai_proxy.governance.mediatokens import ESTIMATED_TOKENS, TRANSCRIBING, speech_usage
from azure_openai_proxy.governance.prices import (
    AudioRates,
    PriceTable,
    Rates,
    count_tokens,
    dearest_rates,
    token_cost,
)
from azure_openai_proxy.http.interface import HttpRequest
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool

__all__ = [
    "FREE_OPERATIONS",
    "Names",
    "PoolNames",
    "budgeted",
    "enforce_budget",
    "refuse_unmetered",
    "require_price",
    "reserve_budget",
    "settle_budget",
    "unmetered_work",
    "values_of",
]

log = logging.getLogger("azure_openai_proxy")

# The names a request is priced by (its client model, its deployment's model and name),
# and those of each deployment of a pool (gateway/governed.py `price_names`).
Names = tuple[str | None, ...]
PoolNames = tuple[Names, ...]

_BUDGET_WARNING_HEADER = "x-aop-budget-warning"


def enforce_budget(guard: BudgetGuard, caller: Caller, request: HttpRequest) -> None:
    """Refuse a caller whose key or team has spent its budget (429 insufficient_quota);
    mark the answer of one past a soft budget. Call after authentication."""
    decision = guard.check(caller.key, caller.team)
    if decision.exhausted is not None:
        raise _exhausted(decision.exhausted)
    if decision.warnings:
        for who in decision.first:
            owner = caller.key if who == "key" else caller.team
            log.warning("%s %s is past its soft budget for the period", who,
                        owner.id if owner is not None else "?")
        extra = request.extra_headers or {}
        extra[_BUDGET_WARNING_HEADER] = ", ".join(decision.warnings)
        request.extra_headers = extra


def budgeted(caller: Caller) -> bool:
    """Whether the caller's key or team has a budget (most keys: no)."""
    if caller.budgeted is not None:  # decided by the key directory
        return caller.budgeted
    return caller.key is not None and budget_applies(caller.key, caller.team)


def reserve_budget(guard: BudgetGuard, caller: Caller, body: Mapping[str, Any] | None,
                   names: Names | PoolNames, operation: str = "",
                   default_completion: int = DEFAULT_COMPLETION_TOKENS,
                   estimate: tuple[int, int] | None = None,
                   headers: Mapping[str, str] | None = None,
                   pool: Pool | None = None) -> BudgetHold | None:
    """Hold the request's estimated cost (its prompt and its max output tokens, priced as
    `names`' model: of each deployment of its pool, the dearest, `price_names`) against
    its key's and team's budgets, or refuse it (429
    insufficient_quota) when what they spent and hold already reaches a budget. Call
    just before the request goes out; `settle_budget` once it has ended. `estimate`:
    the body's (prompt, max output) tokens when the caller has them already (the rate
    limit's, gateway/governed.py `hold`), so the prompt is measured once. `headers`,
    `pool`: the request's (a Responses request's image tool names its deployment there,
    run on the endpoint it goes to: gateway/toolhold.py)."""
    if not budgeted(caller) or operation in FREE_OPERATIONS:
        return None  # nothing to estimate: most keys
    # A hard budget alone refuses what it could never stop: a soft one only warns, and
    # its key is served as a key without one. (Work billed outside any metered answer
    # was refused before: `refuse_unmetered`.)
    hard = caller.key is not None and has_budget(caller.key, caller.team)
    prices = guard.prices
    tokens = 0, 0
    if prices is not None and body:
        if estimate is None:
            estimate = (prompt_tokens(body),
                        max_output_tokens(body, default_completion, operation or None))
        messages = body.get("messages")  # the chat format's few tokens per message
        overhead = len(messages) * MESSAGE_OVERHEAD_TOKENS if isinstance(messages, list) else 0
        tokens = estimate[0] + overhead, estimate[1]
        if operation in _PICTURING:  # gpt-image-1's pictures are its output tokens
            tokens = tokens[0], max(tokens[1], picture_tokens(body))
    members = _members(names)
    rates = None
    if prices is not None:
        if len(members) == 1:  # most pools
            rates = prices.rates(members[0])
        else:  # the balancer may pick any member: held at the dearest
            rates = prices.dearest(members)  # None: one has no price (refused below)
            if rates is None and not hard:  # a soft budget is served: its priced members'
                rates = dearest_rates(prices, [m for m in members if prices.rates(m)])
    if rates is None and prices is not None and operation in _TOKEN_PRICED and hard:
        raise _unpriced(names)
    usd = token_cost(rates, tokens[0], 0, tokens[1]) if rates is not None else 0.0
    if operation == "responses" and body:  # its hosted image tool's, at its model's rates
        usd += image_tool_usd(guard, body, headers, tokens[0], pool, hard)
    if prices is not None and body and operation in UNIT_PRICED and (
            operation not in TRANSCRIBING):  # their minutes are known after: below
        asked = _units_asked(operation, body)
        # priced as the ledger prices it: a speech of a token-priced model (gpt-4o-mini-
        # tts) by the tokens estimated from its characters, else by its units
        costs = [prices.billed_cost(member, asked, asked.get(ESTIMATED_TOKENS))
                 for member in members]
        usd += max(cost for cost, _ in costs)
        if hard and not all(priced for _, priced in costs) and (
                operation == "audio/speech" or not (rates and any(rates[:3]))):
            # Speech answers carry no tokens, nor do dall-e's pictures (its token rates are
            # 0): without a unit price (an hd or 1792x1024 picture) or token rates (a
            # speech model the table does not know) the record costs $0, and the budget
            # never stops it
            raise _unpriced(names, "units")
    if hard and prices is not None and operation in TRANSCRIBING:
        _require_priced_format(body, rates, names)
    if prices is not None and isinstance(body, HeldForm):  # a form's files: read now
        usd += _files_cost(prices, members, operation, body)
    held = guard.reserve(caller.key, caller.team, usd)
    if isinstance(held, str):
        raise _exhausted(held)
    return held


def _require_priced_format(body: Mapping[str, Any] | None,
                           rates: Rates | AudioRates | None,
                           names: Names | PoolNames) -> None:
    """A transcription's answer says what it cost in one format only: whisper's (priced
    by the minute, no token rates) its `verbose_json` (the duration), the token-priced
    models' their `json` (the default: its usage). In any other (`text`, `srt`, `vtt`,
    whisper's `json`) it would be recorded at $0, so a hard budget refuses it."""
    if rates is None:
        raise _unpriced(names)
    asked = body.get("response_format") if body else None
    priced_as = "json" if any(rates[:3]) else "verbose_json"
    if (asked or "json") != priced_as:
        raise ModelNotPriced(
            f"This transcription's cost is only known from its `{priced_as}` answer: "
            f"ask for response_format `{priced_as}`, so that it counts against this key's "
            "budget.", param="response_format")
    if _streamed(body):
        raise ModelNotPriced(  # its events are not metered: its usage would be lost
            "A streamed transcription's cost is not metered by this gateway: ask without "
            "`stream`, so that it counts against this key's budget.", param="stream")


def _streamed(body: Mapping[str, Any] | None) -> bool:
    """Whether a request asks for its answer as events (JSON's `true`, a form's `true`,
    `1`, `on`...: anything but absent or false)."""
    stream = body.get("stream") if body else None
    return stream not in (None, False) and str(stream).strip().lower() != "false"


def _files_cost(prices: PriceTable, members: PoolNames, operation: str,
                body: HeldForm) -> float:
    """What the files of a form may cost, held before it runs, at the dearest of the
    deployments it may go to: a transcription's audio (whisper's minutes; the token-
    priced models' audio tokens and their transcript), an edit's input pictures (image
    tokens, gpt-image-1's: 0 for a model whose token rates are 0, dall-e-2's). Priced as
    the ledger prices Azure's usage (`PriceTable.usage_cost`: each modality's tokens at
    its rates where the price has them, else as text)."""
    if operation in TRANSCRIBING:
        seconds = body.audio_seconds()
        if not seconds:
            return 0.0
        audio, transcript = transcription_tokens(seconds)
        usage = _usage(audio, "audio_tokens", transcript)
        # priced once, as the ledger prices it (`billed_cost`: by tokens where the model's
        # token rates price them, else by the minute), never both
        return max((prices.billed_cost(member, {"audio_seconds": seconds}, usage)[0]
                    for member in members), default=0.0)
    if operation != "images/edits":
        return 0.0
    fidelity = body.get("input_fidelity")
    tokens = sum(input_picture_tokens(size, fidelity) for size in body.picture_sizes())
    usage = _usage(tokens, "image_tokens", 0)
    return max((prices.usage_cost(member, usage)[0] for member in members), default=0.0)


def _usage(tokens: int, modality: str, completion: int) -> dict[str, Any]:
    """A usage object (chat's shape) of `tokens` in of one modality and `completion` out."""
    return {"prompt_tokens": tokens, "completion_tokens": completion,
            "total_tokens": tokens + completion, "prompt_tokens_details": {modality: tokens}}


def _units_asked(operation: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The units a unit-billed request asks for: images (`n`, 1 by default, with their
    size and quality) or speech characters (and the tokens a token-priced speech model
    bills for them, `speech_usage`)."""
    if operation == "audio/speech":
        text = body.get("input")
        return speech_usage(text, body, held=True) if isinstance(text, str) else {}
    n = body.get("n", 1)  # not a count: held as the most (`picture_tokens`)
    return {"images": n if type(n) is int and 1 <= n <= 10 else 10, "size": body.get("size"),
            "quality": body.get("quality")}


def settle_budget(guard: BudgetGuard, hold: BudgetHold | None, record: RequestRecord) -> None:
    """The request ended: its hold becomes its cost, priced as the ledger will price it."""
    if hold is None:
        return
    prices, models = guard.prices, guard.models
    usage = record.usage
    unanswered = (usage is None or usage.get("estimated") is True) and bool(
        record.body_sent) and record.route in UNIT_PRICED and not record.stream and (
            record.upstream_ms is None or 200 <= record.status < 300)
    if usage is None and unanswered:
        # Sent, and its answer never came back (the client left, a timeout): Azure
        # finishes such work and bills it (a transcription's minutes, pictures, speech),
        # and its answer is the only measure. `note_unanswered` records its estimate in
        # its units first; where it could count none (no input, no file read), it is
        # recorded at what it was held at, flagged, so that a budget counts it.
        record.usage = usage = {"estimated": True, ESTIMATED_USD: hold.usd}
    tokens = count_tokens(usage) if usage else NO_TOKENS
    usd, priced = record_cost(record, prices, models, tokens) if prices else (0.0, True)
    if unanswered and not priced and usage is not None and hold.usd > 0:
        # Its estimate's units have no price here (speech of a model priced by tokens
        # alone, gpt-4o-mini-tts): recorded and spent at its hold, not at $0 unpriced.
        # A hold of $0 (a soft budget's, of a model with no price) says nothing: the row
        # stays unpriced, which is how the usage report shows a price is missing.
        usage[ESTIMATED_USD] = usd = hold.usd
    guard.settle(hold, record.request_id, usd)


# Routes whose answer prices itself in one response_format only (`_require_priced_format`).
# Routes whose answer's output tokens are pictures (gpt-image-1's): held by `picture_tokens`.
_PICTURING = frozenset({"images/generations", "images/edits"})
# Routes Azure does not bill: nothing to hold (`responses/input_tokens` counts a request's
# input tokens without running the model), nor tokens taken from a key's TPM (governed.py).
FREE_OPERATIONS = frozenset({"responses/input_tokens"})
# Routes priced by their tokens alone: a model without a price there costs $0 in the
# ledger (recorded unpriced), so a budget could never stop it.
_TOKEN_PRICED = frozenset({"chat/completions", "completions", "responses", "responses/compact",
                           "embeddings"})


def require_price(guard: BudgetGuard, caller: Caller, names: Names | PoolNames) -> None:
    """Refuse a caller with a hard budget (its key's or team's `budget_usd`; a soft one
    only warns) a model the price table does not know for any deployment of its pool (a
    Realtime session, whose responses are priced by their tokens as they end: unpriced,
    they cost $0)."""
    key = caller.key
    if (budgeted(caller) and key is not None and has_budget(key, caller.team)
            and guard.prices is not None
            and guard.prices.dearest(_members(names)) is None):
        raise _unpriced(names)


def _members(names: Names | PoolNames) -> PoolNames:
    """The names of each deployment a request may go to (`price_names`' answer), or of
    the one deployment whose `names` are given flat."""
    if names and type(names[0]) is tuple:
        return names
    return (cast(Names, names),)


def _unpriced(names: Names | PoolNames, what: str = "") -> ModelNotPriced:
    # No log line: one per request would let a key fill the log (the access log's
    # line names the error and the model).
    first = _members(names)[0]
    model = next((name for name in first if name), "?")
    if what == "units":
        return ModelNotPriced(
            f"The model `{model}` has no price in this gateway for what this request asks "
            "(the size, quality or route), so its cost cannot count against this key's "
            "budget. Ask the gateway's administrator to add its price.", param="model")
    return ModelNotPriced(
        f"The model `{model}` has no price in this gateway, so its cost cannot count "
        "against this key's budget. Ask the gateway's administrator to add its price.",
        param="model")


class NotMetered(GatewayError):
    """A budgeted key asked for work Azure bills outside any answer the gateway meters
    (`unmetered_work`): generated, trained or graded for free as far as its budget
    could tell. Refused before it goes out."""

    status = 403
    type_ = "invalid_request_error"
    code = "not_metered"


def unmetered_work(operation: str, body: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """What a POST to the resource `operation` with `body` starts that Azure bills
    outside any answer the gateway meters, and what to use instead; None for the rest
    (most: a read, an upload, a cancel or a pause stops spending, it starts none):

    - a batch, a fine-tuning job, and a paused job resumed (`fine_tuning/jobs/{id}/
      resume`): their tokens are billed as the job runs, after any answer;
    - a grader run (`fine_tuning/alpha/graders/run`): a model grader's tokens, in no
      usage the gateway reads;
    - an evaluation run (`evals/{id}/runs`; the gateway routes no `evals/` yet: here so
      that routing them cannot open the gap);
    - an Assistants run started or continued (`threads/runs`, `threads/{t}/runs`,
      `.../submit_tool_outputs`): it answers before any usage, and its output is read
      as the thread's messages, which carry none;
    - a background response (or compaction, should Azure take one): its POST answers
      with `"usage": null`, and its output can be read by a streamed `GET
      responses/{id}`, unmetered;
    - vector-store storage, billed per GB-day as long as the store lives: a store
      created (`vector_stores`, or inline in an assistant's or a thread's
      `tool_resources.file_search.vector_stores`), files added to one (`vector_stores/
      {id}/files`, `.../file_batches`), or a thread message's attachments given to file
      search (a thread created with such messages, or one added: `threads/{id}/messages`),
      which Azure puts in a vector store it makes for the thread."""
    if operation == "responses":
        if body and _any_true(body, "background"):
            return "Background responses", "Send the request without `background`."
        return None  # the usual resource POST: one comparison
    root, _, rest = operation.partition("/")
    # The router refuses an API name in other letters (routing.py `_RESOURCE_NAMES`);
    # folded here too, so that a name it does not list yet cannot open the gap.
    rest = rest.lower()
    if root == "responses" and rest == "compact" and body and _any_true(body, "background"):
        return "Background compactions", "Send the request without `background`."
    if _starts_storage(root, rest, body):
        return ("Vector stores (their storage is billed per GB-day)",
                "Use file search with a vector store made by a key without a budget.")
    if root == "batches" and not rest:
        return "Batches", "Send the requests one by one."
    if root == "fine_tuning":
        if rest == "jobs" or (rest.startswith("jobs/") and rest.endswith("/resume")):
            return "Fine-tuning jobs", "Use a key without a budget."
        if rest == "alpha/graders/run":
            return "Grader runs", "Use a key without a budget."
        return None
    if root == "evals" and rest.endswith("/runs") and rest.count("/") == 1:
        return "Evaluation runs", "Use a key without a budget."
    if root == "threads" and (rest == "runs" or rest.endswith(_RUN_STEPS)):
        return "Assistants runs", "Use chat completions or responses."
    return None


def refuse_unmetered(caller: Caller, operation: str, body: Mapping[str, Any] | None) -> None:
    """Refuse a caller with a hard budget (its key's or team's `budget_usd`; a soft one
    only warns) the POST of `operation` when it starts unmetered work (`unmetered_work`):
    403 `not_metered`, before it goes out."""
    key = caller.key
    if key is None or not has_budget(key, caller.team):
        return
    work = unmetered_work(operation, body)
    if work is not None:
        raise NotMetered(f"{work[0]} are not available to keys with a budget: their usage "
                         f"is not metered per request. {work[1]}")


def _starts_storage(root: str, rest: str, body: Mapping[str, Any] | None) -> bool:
    """Whether a POST of `root/rest` with `body` creates a vector store or adds files to
    one (`unmetered_work`); a read, a cancel, a delete or a file's attributes updated
    (`vector_stores/{id}/files/{file}`) starts none."""
    if root == "vector_stores":
        parts = rest.split("/") if rest else []
        return not parts or (len(parts) == 2 and parts[1] in ("files", "file_batches"))
    if root not in ("assistants", "threads") or not body:
        return False
    if root == "threads":
        # A message whose attachments go to file search: Azure puts their files in a
        # vector store it makes for the thread (a thread created with messages, or a
        # message added; `threads/runs` is refused as a run already).
        if not rest:
            for messages in values_of(body, "messages"):
                if isinstance(messages, list) and any(map(_searched_attachments, messages)):
                    return True
        elif rest.count("/") == 1 and rest.endswith("/messages"):
            return _searched_attachments(body)
    if "/" in rest or rest == "runs":
        return False  # an assistant or a thread created or modified: its tool resources
    return any(stores for resources in values_of(body, "tool_resources")
               for search in values_of(resources, "file_search")
               for stores in values_of(search, "vector_stores"))


def _searched_attachments(message: object) -> bool:
    """Whether a thread message attaches a file for the `file_search` tool."""
    for attachments in values_of(message, "attachments"):
        if not isinstance(attachments, list):
            continue
        for attachment in attachments:
            for tools in values_of(attachment, "tools"):
                if isinstance(tools, list) and any(
                        type(kind) is str and folded(kind) == "file_search"
                        for tool in tools for kind in values_of(tool, "type")):
                    return True
    return False


def values_of(mapping: object, name: str) -> list[Any]:
    """What a JSON object gives `name` under every spelling Azure may bind to it: its
    frontend reads names case-insensitively (ASP.NET Core's defaults; affinity.py
    `folded`), so `Tool_Resources` is `tool_resources` there. [] for no such name, or
    no object. Read for a hard budget's refusals only: not on the usual request's path."""
    if not isinstance(mapping, Mapping):
        return []
    return [value for field, value in mapping.items()
            if field == name or (type(field) is str and folded(field) == name)]


def _any_true(body: Mapping[str, Any], name: str) -> bool:
    return any(value is True for value in values_of(body, name))


# The steps of an Assistants run a POST starts or continues (`threads/{t}/runs`,
# `threads/{t}/runs/{r}/submit_tool_outputs`).
_RUN_STEPS = ("/runs", "/submit_tool_outputs")


def _exhausted(who: str) -> BudgetExhausted:
    return BudgetExhausted(
        f"You exceeded your current quota: this {who}'s budget for the "
        "period is spent. Ask the gateway's administrator to raise it."
    )
