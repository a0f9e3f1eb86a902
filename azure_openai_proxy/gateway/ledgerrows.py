"""A finished request priced into the usage ledger's row: the writer's pricing
(`RowPricer`, one loop over a batch of queued records), one record's row and line
(`ledger_row`, `usage_record`) and a request's cost (`record_cost`, which the budgets'
holds use too). Plain data in, plain tuples out: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from azure_openai_proxy.gateway.journalfiles import record_of_line
from azure_openai_proxy.governance.budget import day_of
from azure_openai_proxy.governance.mediatokens import ESTIMATED_TOKENS, refused_pictures
from azure_openai_proxy.governance.model import UsageRecord
from azure_openai_proxy.governance.prices import (
    MAX_TOKENS,
    AudioRates,
    PriceTable,
    Rates,
    TokenCounts,
    UnpricedNames,
    audio_cost,
    count_tokens,
    token_cost,
)
from azure_openai_proxy.governance.toolusage import IMAGE_GEN, image_gen_cost, image_gen_elsewhere
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.store.ledger import SOURCE_CODE, Labels, LedgerRow, record_of

__all__ = [
    "ESTIMATED_USD",
    "NO_TOKENS",
    "RELOADED",
    "UNIT_PRICED",
    "JournalRecord",
    "Queued",
    "RowPricer",
    "ledger_row",
    "no_label",
    "owner_costs",
    "record_cost",
    "request_record",
    "usage_record",
]

NO_TOKENS = TokenCounts(0, 0, 0, 0)
# A row's flags (store/ledger.py): the usage's source; stream is 1, priced 2.
_MEASURED, _ESTIMATED = SOURCE_CODE["measured"] << 2, SOURCE_CODE["estimated"] << 2


# Routes Azure bills by the image, the audio minute or the character (prices.yaml): priced
# from the units the relay counted (relay.py). Without them (a transcription's plain-text
# answer has no duration) the record says `priced: false` (usage reports count it), never
# a silent, priced $0.
# The usage key under which a unit-priced request sent and never answered carries what
# its budget held (gateway/budgethold.py `settle_budget`): its estimated cost.
ESTIMATED_USD = "estimated_usd"
UNIT_PRICED = frozenset({"images/generations", "images/edits", "images/variations",
                          "audio/transcriptions", "audio/translations", "audio/speech"})


def record_cost(record: RequestRecord, prices: PriceTable, models: Mapping[tuple[str, str], str],
          tokens: tuple[int, int, int, int]) -> tuple[float, bool]:
    """(USD, priced) of a finished request with these (prompt, cached, completion,
    reasoning) tokens (`count_tokens`; its usage's audio tokens at the audio rates, where
    the price has them). A unit-priced one by its units; one sent and never answered
    (its usage `estimated`, whatever its status) by the tokens estimated for it where its
    model's token rates price them, else by its units (governance/mediatokens.py
    `unanswered_units`; `PriceTable.billed_cost`), as its answer would have been."""
    usage = record.usage
    if usage and IMAGE_GEN in usage:  # a Responses answer's image tool: its own rates
        text = record_cost(_without_tool(record), prices, models, tokens)
        tool = image_gen_cost(prices, models, record.endpoint, usage[IMAGE_GEN])
        return text[0] + tool[0], text[1] and tool[1]
    if not any(tokens):
        if usage and ESTIMATED_USD in usage:  # unit-priced work never answered: its hold
            held = usage[ESTIMATED_USD]
            return (float(held) if type(held) in (int, float) else 0.0), True
        if record.route not in UNIT_PRICED:
            return 0.0, True
        estimated = usage is not None and usage.get("estimated")
        if not estimated and not 200 <= record.status < 300:
            return 0.0, True
        if not usage:
            return 0.0, False
        model = models.get((record.endpoint or "", record.deployment or ""))
        if estimated and refused_pictures(model or record.model, usage):
            return 0.0, True  # dall-e-3's `n` past 1: Azure's 400, billed nothing
        names = (record.model, model, record.deployment)
        # sent, never answered (`unanswered_units`), or a speech (answered too): by its
        # estimated tokens where the model's token rates price them (gpt-image-1, the
        # token-priced transcriptions, gpt-4o-mini-tts), else by its units
        return prices.billed_cost(names, usage, usage.get(ESTIMATED_TOKENS))
    model = models.get((record.endpoint or "", record.deployment or ""))
    rates = prices.rates((record.model, model, record.deployment))
    if rates is None:
        return 0.0, False
    if len(rates) > 3 and usage:
        return audio_cost(rates, usage, tokens[0], tokens[1], tokens[2]), True
    return token_cost(rates, tokens[0], tokens[1], tokens[2]), True


def _by_estimated_tokens(record: RequestRecord, prices: PriceTable,
                         models: Mapping[tuple[str, str], str]) -> bool:
    """Whether `record_cost` priced a unit route's answer by the tokens estimated for it
    (a speech of a token-priced model: `PriceTable.billed_cost`): its row says estimated."""
    usage = record.usage
    tokens = usage.get(ESTIMATED_TOKENS) if usage else None
    if not tokens or record.route not in UNIT_PRICED:
        return False
    model = models.get((record.endpoint or "", record.deployment or ""))
    return prices.usage_cost((record.model, model, record.deployment), tokens)[0] > 0


def _without_tool(record: RequestRecord) -> RequestRecord:
    """A copy of `record` whose usage is the text model's alone."""
    usage = {k: v for k, v in (record.usage or {}).items() if k != IMAGE_GEN}
    return dataclasses.replace(record, usage=usage, retries=[])


_new_tuple = tuple.__new__


class JournalRecord(NamedTuple):
    """A journal's record line as the journal child prices it: the line's values in
    their order (journalfiles.py `record_line`), one tuple (`of_values`), where a
    `RequestRecord` of them (`record_of_line`) runs its 26-field `__init__` in Python
    and makes a list it never fills: ~as many instructions as the line's JSON parse. The
    pricer reads the same attribute names of either; the rare records it prices by
    `record_cost` (no tokens, an image tool) it takes as `RequestRecord` (`request_record`)."""

    request_id: str
    ended: float
    total_ms: float
    upstream_ms: float | None
    status: int
    attempts: int
    stream: bool
    key_id: str | None
    team_id: str | None
    model: str | None
    deployment: str | None
    endpoint: str | None
    route: str
    usage: dict[str, Any] | None

    @classmethod
    def of_values(cls, values: list[Any]) -> JournalRecord:
        """A record line's values as one (a line of another length: TypeError). The
        tuple made in C: `JournalRecord(*values)` runs the generated `__new__` in Python
        (~1,450 instructions more a record, bench/README.md session 31)."""
        record = _new_tuple(cls, values)
        if len(record) != _LINE_VALUES:
            raise TypeError(f"a record line has {_LINE_VALUES} values, not {len(record)}")
        return record


_LINE_VALUES = len(JournalRecord.__annotations__)


def request_record(record: RequestRecord | JournalRecord) -> RequestRecord:
    """`record` as a `RequestRecord` (a journal's as `record_of_line` reads its line)."""
    if isinstance(record, RequestRecord):
        return record
    return record_of_line(list(record))[0]


# The queue: (a finished request, when it ended); or a reload's mark, `RELOADED` (its
# prices wait in `LedgerWriter._reloads`): a record is told from a mark by `is None`,
# where an isinstance that fails would look up `__class__` (~400 instructions a record).
Queued = tuple[RequestRecord | JournalRecord | None, float]
# A record's key, team, client model, deployment, endpoint and route, as it has them.
_Names = tuple[str | None, str | None, str | None, str | None, str | None, str]
# labels, token rates (() for none), label id, audio rates (None for none)
_Named = tuple[Labels, Rates | AudioRates | tuple[()], int, AudioRates | None]
RELOADED: Queued = (None, 0.0)


def ledger_row(record: RequestRecord, arrived: float, day: str, prices: PriceTable,
               models: Mapping[tuple[str, str], str]) -> LedgerRow:
    """The ledger's row for a finished request that arrived at `arrived`, on UTC `day`
    (store/ledger.py `LedgerRow`; its label id 0): the writer's pricing, for one record."""
    queue: deque[Queued] = deque([(record, 0.0)])
    rows: list[LedgerRow] = []
    RowPricer(prices, models).take(queue, 1, rows, (-math.inf, math.inf, day))
    return (arrived, *rows[0][1:14], day)


def no_label(labels: Labels) -> int:
    """A label id not known (0): the store looks it up when the row is written."""
    return 0


class RowPricer:
    """Records priced into rows, with each combination of a record's names (key, team,
    client model, deployment, endpoint, route) remembered with its row's labels, its
    token rates and its label id in the database (0 when not known: the store looks it
    up): the writer prices every record, and the combinations are nearly always the
    same few. One look-up a record gives all three."""

    def __init__(self, prices: PriceTable, models: Mapping[tuple[str, str], str]) -> None:
        self.prices, self.models = prices, models
        # bounded (cleared when full): the names come from clients
        self._named: dict[_Names, _Named] = {}
        self._unpriced = UnpricedNames(models)  # env mode's per-name models, named once

    def forget_labels(self) -> None:
        """The database changed (opened anew): the label ids remembered may not be its."""
        self._named.clear()

    def take(self, queue: deque[Queued], count: int,
             out: list[LedgerRow], days: tuple[float, float, str],
             label_of: Callable[[Labels], int] = no_label,
             ) -> tuple[tuple[float, float, str], bool]:
        """Up to `count` items of `queue` priced into `out`; `days` is the UTC day of the
        last record priced (its start, end and name), returned as it is after these, with
        whether a reload's mark was taken (then it stops: the records after the mark are
        the next prices' to price). `label_of`: a combination's label id in the
        database (0: not known; only the writer's thread asks its store). One loop, no call
        per record but `count_tokens`: the rates and label id (one dict look-up), the
        cost's arithmetic (`token_cost`'s, inline) and the row (one tuple display)."""
        start, end, day = days
        named = self._named.get
        popleft = queue.popleft
        append = out.append
        most = MAX_TOKENS
        for _ in range(count):
            try:
                record, ended = popleft()
            except IndexError:
                break
            if record is None:  # a reload's mark
                return (start, end, day), True
            total = record.total_ms
            arrived = ended - total / 1000
            if not start <= arrived < end:
                # day_of's day (the time rounded to the microsecond, as the store's SQL
                # and a replayed line's), not the floor's; the window kept is the day
                # but its first and last microsecond, where the two may differ (a time
                # in those: no window, the next record's day is looked up again)
                start = arrived - arrived % 86400
                start, end, day = start + 1e-6, start + 86400 - 1e-6, day_of(arrived)
                if not start <= arrived < end:
                    end = start
            usage = record.usage
            if usage:
                # `count_tokens` inline for chat's usage as Azure sends it (counts and both
                # details objects) or with no details at all (then nothing else it could
                # read is there); any other shape is counted by it
                prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
                # both in 0..MAX_TOKENS: it is all ones (2**32 - 1), so their OR is too
                # (and a negative one makes it negative)
                if (type(prompt) is int and type(completion) is int
                        and 0 <= prompt | completion <= most):
                    # Told apart by size first: the two counts and both details objects
                    # are 4 keys at least, so 2 or 3 are the counts and at most the total
                    # (no details to look up: two `get`s spared a record)
                    size = len(usage)
                    if size < 4:
                        if size == 2 or "total_tokens" in usage:  # no details, no estimate
                            cached = reasoning = 0
                            flags = _MEASURED
                        else:
                            if IMAGE_GEN in usage:  # an estimate's image tool (`_tool_row`)
                                append(self._tool_row(record, arrived, day, label_of))
                                continue
                            prompt, cached, completion, reasoning = count_tokens(usage)
                            flags = _ESTIMATED if usage.get("estimated") else _MEASURED
                    else:
                        details = usage.get("prompt_tokens_details")
                        more = usage.get("completion_tokens_details")
                        if type(details) is dict and details and type(more) is dict and more:
                            # Azure's counts are nearly always 0: told by their truth first
                            # (0, None, False, 0.0 all read as 0 either way)
                            said: Any = details.get("cached_tokens")
                            cached = (min(said, prompt) if said and type(said) is int
                                      and said > 0 else 0)
                            said = more.get("reasoning_tokens")
                            reasoning = (min(said, most) if said and type(said) is int
                                         and said > 0 else 0)
                            # `get`'s truth, without its method call (Azure never sends it)
                            flags = (_ESTIMATED if "estimated" in usage and usage["estimated"]  # noqa: RUF019
                                     else _MEASURED)
                        else:
                            if IMAGE_GEN in usage:  # a Responses stream cut, estimated in
                                # chat's shape (relay.py), with its pictures: `_tool_row`
                                append(self._tool_row(record, arrived, day, label_of))
                                continue
                            prompt, cached, completion, reasoning = count_tokens(usage)
                            flags = _ESTIMATED if usage.get("estimated") else _MEASURED
                else:  # not chat's shape: a Responses answer's, maybe with its image tool's
                    if IMAGE_GEN in usage:  # priced apart: chat's records never come here
                        append(self._tool_row(record, arrived, day, label_of))
                        continue
                    prompt, cached, completion, reasoning = count_tokens(usage)
                    flags = _ESTIMATED if usage.get("estimated") else _MEASURED
            else:
                prompt = cached = completion = reasoning = flags = 0
            names = (record.key_id, record.team_id, record.model, record.deployment,
                     record.endpoint, record.route)
            known = named(names)
            if known is None:
                known = self._name(names, label_of)
            labels, rates, label, audio = known
            if prompt or completion or reasoning:
                if rates:
                    if audio is None:
                        cost = ((prompt - cached) * rates[0] + cached * rates[1]
                                + completion * rates[2]) / 1_000_000
                    else:  # the model has audio rates: its usage says how much is audio
                        cost = audio_cost(audio, usage or {}, prompt, cached, completion)
                    flags |= 2  # priced
                else:
                    cost = 0.0
                    self._unpriced.recorded(self.prices, *names[2:5])
            else:
                full = request_record(record)
                cost, priced = record_cost(full, self.prices, self.models, NO_TOKENS)
                if flags == _MEASURED and _by_estimated_tokens(full, self.prices, self.models):
                    flags = _ESTIMATED  # a speech priced by its tokens, estimated
                flags |= priced << 1
            append((arrived, record.request_id, label, record.status, prompt, cached,
                    completion, reasoning, cost, record.upstream_ms, total,
                    record.attempts, flags | record.stream, labels, day))
        return (start, end, day), False

    def _tool_row(self, queued: RequestRecord | JournalRecord, arrived: float, day: str,
                  label_of: Callable[[Labels], int]) -> LedgerRow:
        """The row of a Responses request whose usage has its image tool's part
        (`governance/toolusage.py`): the text model's tokens, and a cost of both parts,
        each at its own model's rates; estimated when either is, or when the image deployment
        is priced by its models on other endpoints (`image_gen_elsewhere`)."""
        record = request_record(queued)
        usage = record.usage or {}
        prompt, cached, completion, reasoning = count_tokens(usage)
        names = (record.key_id, record.team_id, record.model, record.deployment,
                 record.endpoint, record.route)
        known = self._named.get(names) or self._name(names, label_of)
        cost, priced = record_cost(record, self.prices, self.models,
                                   (prompt, cached, completion, reasoning))
        tool = usage[IMAGE_GEN]
        estimated = (usage.get("estimated") or tool.get("estimated")
                     or image_gen_elsewhere(self.models, record.endpoint, tool))
        flags = (_ESTIMATED if estimated else _MEASURED) | priced << 1
        return (arrived, record.request_id, known[2], record.status, prompt, cached,
                completion, reasoning, cost, record.upstream_ms, record.total_ms,
                record.attempts, flags | record.stream, known[0], day)

    def _name(self, names: _Names, label_of: Callable[[Labels], int]) -> _Named:
        """A new combination's labels ("" for none), token rates (() for none), label
        id (remembered only once known) and audio rates (None for none: a separate slot,
        so that a text-only record's test is `is None`, not a `len` call)."""
        if len(self._named) >= 4096:
            self._named.clear()
        key_id, team_id, model, deployment, endpoint, route = names
        served_by = self.models.get((endpoint or "", deployment or ""))
        labels = (key_id or "", team_id or "", model or "", deployment or "", endpoint or "",
                  route)
        rates = self.prices.rates((model, served_by, deployment)) or ()
        known = (labels, rates, label_of(labels), rates if len(rates) > 3 else None)
        if known[2]:
            self._named[names] = known
        return known


def usage_record(record: RequestRecord, arrived: float, prices: PriceTable,
                 models: Mapping[tuple[str, str], str]) -> UsageRecord:
    """The ledger's line for a finished request."""
    return record_of(ledger_row(record, arrived, day_of(arrived), prices, models))


def owner_costs(batch: list[LedgerRow]) -> list[tuple[tuple[str, str], str, float]]:
    """Each row's cost as its key's and its team's spend on its day (the budgets' book)."""
    costs: list[tuple[tuple[str, str], str, float]] = []
    for row in batch:
        cost = row[8]
        if cost:
            (key_id, team_id, *_), day = row[13], row[14]
            if key_id:
                costs.append((("key", key_id), day, cost))
            if team_id:
                costs.append((("team", team_id), day, cost))
    return costs
