"""What a request cost: the price table and the arithmetic.

`PriceTable.shipped(overrides)` is the table in `prices.yaml` (package data) with the
config's `prices:` on top (model -> {input, cached_input, output}, USD per 1M tokens).
`PriceTable.cost(names, tokens)` prices a request's token counts with the first name
that has a price: the client's model, then the deployment's model, then the deployment
name; each tried as written, lower-cased, and without a dated suffix
(`gpt-4o-2024-08-06` -> `gpt-4o`, `gpt-4-0613` -> `gpt-4`). No price for any: the cost
is 0 and `priced` is False, which the ledger records, so an unpriced model shows up
instead of being silently free.

Routes billed by units (images, audio minutes, speech characters) are priced by
`PriceTable.unit_cost` from a usage object the relay writes for them (`images`,
`audio_seconds`, `characters`): the first name with a price for that unit. An image of a
size or quality other than the table's standard (1024x1024, standard) has no price here
and is recorded unpriced rather than guessed.

Cached prompt tokens cost `cached_input` (or `input` when the model has no cache price);
reasoning tokens are already counted in the completion tokens (OpenAI's and Azure's
usage both say so) and cost `output`.

Audio tokens are part of the prompt and completion tokens too; a model with an audio
rate (`audio_input`, `cached_audio_input`, `audio_output`) prices the audio part of each
at it (`audio_cost`), from the usage's details: chat's `prompt_tokens_details.audio_tokens`
and `completion_tokens_details.audio_tokens`, the Realtime API's and the transcription
models' `input_token_details` (`audio_tokens`, `cached_tokens`, and
`cached_tokens_details.audio_tokens`) and `output_token_details.audio_tokens`. A rate
not given falls back: `audio_input` to `input`, `cached_audio_input` to `audio_input`
(no cache discount: none is listed), `audio_output` to `output`. A model with no audio
rate prices audio tokens as text. A config override of a shipped model that gives no
audio rate keeps the shipped audio rates (`PriceTable.shipped`).

Image tokens likewise: a model with an image rate (`image_input`, `cached_image_input`:
gpt-image-1's pictures given to an edit cost twice its text) prices the prompt's
`input_tokens_details.image_tokens` (and `cached_tokens_details.image_tokens`) at it;
its output tokens (pictures) cost `output`. A model may have both (gpt-realtime-1.5
takes audio and pictures): each modality's part is priced at its own rates, the rest as
text.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Container, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple

import yaml

from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.governance.keys import RELEASE_DATE

__all__ = ["MAX_TOKENS", "AudioRates", "Price", "PriceTable", "Rates", "TokenCounts",
           "UnpricedNames", "audio_cost", "count_tokens", "dearest_rates", "token_cost",
           "token_counts", "unit_counts", "unpriced_warnings"]

log = logging.getLogger(__name__)

_TOKENS_PER_PRICE = 1_000_000  # prices are per 1M tokens
# The most tokens one count of a request's usage is read as: past it (2**63 and more
# cannot be bound to SQLite at all, and a day's rollup sums them) a record could never
# be written, and the spool it went to could never be replayed. No request comes near.
MAX_TOKENS = 2**32 - 1  # all ones: the ledger's pricer tests two counts by their OR


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens; and per unit for the models billed by units."""

    input: float
    output: float
    cached_input: float | None = None
    per_image: float | None = None
    per_minute: float | None = None
    per_1m_characters: float | None = None
    audio_input: float | None = None
    cached_audio_input: float | None = None
    audio_output: float | None = None
    image_input: float | None = None
    cached_image_input: float | None = None


# usage key -> (the Price field, units per priced unit)
_UNITS = {"images": ("per_image", 1.0), "audio_seconds": ("per_minute", 60.0),
          "characters": ("per_1m_characters", 1_000_000.0)}
_STANDARD_IMAGE = ({None, "1024x1024"}, {None, "standard", "auto"})


def unit_counts(usage: Mapping[str, Any] | None) -> tuple[str, float] | None:
    """The (unit, count) of a unit-billed answer's usage, or None."""
    if usage:
        for unit in _UNITS:
            count = usage.get(unit)
            if isinstance(count, int | float) and not isinstance(count, bool) and count > 0:
                return unit, float(count)
    return None


class TokenCounts(NamedTuple):
    prompt: int
    cached: int
    completion: int
    reasoning: int


def token_counts(usage: Mapping[str, Any] | None) -> TokenCounts:
    """A usage object's counts, whatever the API: chat's prompt/completion tokens with
    `prompt_tokens_details.cached_tokens` and `completion_tokens_details.reasoning_tokens`,
    or Responses' input/output tokens with `input_tokens_details`/`output_tokens_details`."""
    return TokenCounts(*count_tokens(usage)) if usage else _NO_TOKENS


def count_tokens(usage: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """`token_counts` as a plain tuple (prompt, cached, completion, reasoning), for the
    ledger writer, which reads one per request: inline, no NamedTuple, no helper per
    count."""
    prompt = usage.get("prompt_tokens")
    if prompt is None:
        prompt = usage.get("input_tokens")
    if type(prompt) is not int or prompt < 0:
        prompt = 0
    elif prompt > MAX_TOKENS:
        prompt = MAX_TOKENS
    completion = usage.get("completion_tokens")
    if completion is None:
        completion = usage.get("output_tokens")
    if type(completion) is not int or completion < 0:
        completion = 0
    elif completion > MAX_TOKENS:
        completion = MAX_TOKENS
    cached = reasoning = 0
    # `details and`: an isinstance that fails (None: no details, as embeddings and older
    # api-versions answer) looks up `__class__`, ~300 instructions each
    details = (usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
               or usage.get("input_token_details"))  # Realtime's and transcriptions' name
    if details and isinstance(details, dict):
        count = details.get("cached_tokens")
        cached = min(count, prompt) if type(count) is int and count > 0 else 0
    details = (usage.get("completion_tokens_details") or usage.get("output_tokens_details")
               or usage.get("output_token_details"))
    if details and isinstance(details, dict):
        count = details.get("reasoning_tokens")
        reasoning = min(count, MAX_TOKENS) if type(count) is int and count > 0 else 0
    return prompt, cached, completion, reasoning


_NO_TOKENS = TokenCounts(0, 0, 0, 0)
Rates = tuple[float, float, float]  # USD per 1M input, cached input and output tokens


# USD per 1M input, cached input and output tokens of text, then for each other modality
# the model has (audio, images, in that order) its input, cached input and output rates
# and the usage details' name of its count (`audio_tokens`, `image_tokens`): what
# `audio_cost` reads. Seven values for one modality, eleven for both.
_Modal = tuple[float, float, float, float, float, float, str]
_Bimodal = tuple[float, float, float, float, float, float, str, float, float, float, str]
AudioRates = _Modal | _Bimodal


def token_cost(rates: Rates | AudioRates, prompt: int, cached: int, completion: int) -> float:
    """The cost of token counts at `rates` (`PriceTable.rates`), all priced as text."""
    return ((prompt - cached) * rates[0] + cached * rates[1]
            + completion * rates[2]) / _TOKENS_PER_PRICE


def _count(value: Any, most: int) -> int:
    """A detail's count, in 0..most (anything else is none)."""
    return min(value, most) if type(value) is int and value > 0 else 0


def _details(usage: Mapping[str, Any], *names: str) -> Mapping[str, Any]:
    for name in names:
        details = usage.get(name)
        if details and isinstance(details, dict):
            return details
    return {}


def audio_cost(rates: AudioRates, usage: Mapping[str, Any], prompt: int, cached: int,
               completion: int) -> float:
    """The cost of a usage's counts (`count_tokens`'s prompt, cached, completion) at
    `rates` (`PriceTable.rates`, seven or eleven of them): each modality's part (its
    `audio_tokens`, then its `image_tokens`) at that modality's rates, the rest at the
    text rates. Each part is clamped to what is left of its total, so that no part is
    negative whatever the details say. Straight lines, no loop: the ledger writer prices
    every Realtime record with it."""
    given = _details(usage, "prompt_tokens_details", "input_tokens_details",
                     "input_token_details")
    cached_given = given.get("cached_tokens_details")
    if not (cached_given and isinstance(cached_given, dict)):
        cached_given = {}
    given_out = _details(usage, "completion_tokens_details", "output_tokens_details",
                         "output_token_details")
    name = rates[6]
    part = _count(given.get(name), prompt)  # the first modality's (audio, or pictures)
    cached_part = _count(cached_given.get(name), min(cached, part))
    out = _count(given_out.get(name), completion)
    text, cached_text, text_out = prompt - part, cached - cached_part, completion - out
    if len(rates) == 7:
        # cached tokens past the text tokens can only be the modality's, split given or
        # not (Azure's older Realtime api-versions give none): never at its full rate
        over = min(cached_text - text, part - cached_part)
        if over > 0:
            cached_part += over
            cached_text -= over
        return ((text - cached_text) * rates[0] + cached_text * rates[1]
                + text_out * rates[2] + (part - cached_part) * rates[3]
                + cached_part * rates[4] + out * rates[5]) / _TOKENS_PER_PRICE
    second = rates[10]  # pictures, beside audio: of what the audio left
    picture = _count(given.get(second), text)
    cached_picture = _count(cached_given.get(second), min(cached_text, picture))
    picture_out = _count(given_out.get(second), text_out)
    text, cached_text = text - picture, cached_text - cached_picture
    text_out -= picture_out
    # cached past the text: the audio's first, then the pictures'
    over = min(cached_text - text, part - cached_part)
    if over > 0:
        cached_part += over
        cached_text -= over
    over = min(cached_text - text, picture - cached_picture)
    if over > 0:
        cached_picture += over
        cached_text -= over
    return ((text - cached_text) * rates[0] + cached_text * rates[1] + text_out * rates[2]
            + (part - cached_part) * rates[3] + cached_part * rates[4] + out * rates[5]
            + (picture - cached_picture) * rates[7] + cached_picture * rates[8]
            + picture_out * rates[9]) / _TOKENS_PER_PRICE


_OPTIONAL = ("cached_input", "per_image", "per_minute", "per_1m_characters", "audio_input",
             "cached_audio_input", "audio_output", "image_input", "cached_image_input")


def _price_of(name: str, entry: Any) -> Price:
    if not isinstance(entry, Mapping):
        raise ValueError(f"prices.{name} must be a mapping of input, cached_input, output")
    try:
        optional = (None if (v := entry.get(f)) is None else float(v) for f in _OPTIONAL)
        price = Price(float(entry.get("input", 0)), float(entry.get("output", 0)), *optional)
    except (TypeError, ValueError):
        raise ValueError(f"prices.{name}: input, cached_input, output, the audio and the "
                         "unit prices must be numbers") from None
    for field in ("input", "output", *_OPTIONAL):
        value = getattr(price, field)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"prices.{name}.{field}: a price must be a finite number, "
                             f"0 or more (not {value})")
    return price


@functools.lru_cache(maxsize=1)
def _shipped() -> dict[str, Price]:
    text = resources.files("azure_openai_proxy.governance").joinpath("prices.yaml").read_text()
    data = yaml.safe_load(text)
    return {str(name).lower(): _price_of(str(name), entry) for name, entry in data.items()}


class PriceTable:
    """Model name -> Price, with the lookup rules above (remembered per name)."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices = {name.lower(): price for name, price in prices.items()}
        self.lookup = functools.lru_cache(maxsize=1024)(self._lookup)
        # () for names without a price (a BoundedCache holds no None)
        self._rates: BoundedCache[tuple[str | None, ...], Rates | AudioRates | tuple[()]] = (
            BoundedCache(1024))
        self._dearest: BoundedCache[tuple[tuple[str | None, ...], ...],
                                    Rates | tuple[()]] = BoundedCache(1024)

    @classmethod
    def shipped(cls, overrides: Mapping[str, Any] | None = None) -> PriceTable:
        """The shipped table, with `overrides` (the config's `prices:`) on top. A
        malformed override is a ValueError naming it."""
        prices = dict(_shipped())
        for name, entry in (overrides or {}).items():
            price = _price_of(str(name), entry)
            shipped = prices.get(str(name).lower())
            if shipped is not None and _audio_of(price) == (None, None, None):
                # an override of a shipped audio model's text prices (a Data Zone's, say)
                # keeps its audio rates: falling back to the text rates would price
                # gpt-4o-realtime-preview's audio 8x under
                price = dataclasses.replace(
                    price, audio_input=shipped.audio_input, audio_output=shipped.audio_output,
                    cached_audio_input=shipped.cached_audio_input)
            if shipped is not None and price.image_input is None and (
                    price.cached_image_input is None):
                # the same for an image model's image rates (gpt-image-1's are 2x text)
                price = dataclasses.replace(price, image_input=shipped.image_input,
                                            cached_image_input=shipped.cached_image_input)
            prices[str(name).lower()] = price
        return cls(prices)

    def entries(self) -> list[tuple[str, Price]]:
        """(name, price) of every model priced: the table again is `PriceTable(dict(...))`."""
        return list(self._prices.items())

    def _lookup(self, name: str) -> Price | None:
        lowered = name.lower()
        price = self._prices.get(lowered)
        if price is None:
            price = self._prices.get(RELEASE_DATE.sub("", lowered))
        return price

    def price_for(self, names: Iterable[str | None]) -> Price | None:
        for name in names:
            if name:
                price = self.lookup(name)
                if price is not None:
                    return price
        return None

    def rates(self, names: Iterable[str | None]) -> Rates | AudioRates | None:
        """The token rates of the first of `names` that has a price, or None (remembered
        per names: the budget hold and its settlement ask on every budgeted request):
        text's (input, cached input, output), and when the price has an audio rate, the
        audio ones after them (`AudioRates`, the others falling back as the module says;
        `audio_cost` prices a usage with them)."""
        names = tuple(names)
        rates = self._rates.get(names)
        if rates is None:
            rates = self._rates.put(names, _rates_of(self.price_for(names)))
        return rates or None

    def dearest(self, members: tuple[tuple[str | None, ...], ...]) -> Rates | None:
        """`dearest_rates(self, members)`, remembered per members (the budget hold asks
        on every budgeted request to a pool, gateway/governed.py `price_names`)."""
        rates = self._dearest.get(members)
        if rates is None:
            rates = self._dearest.put(members, dearest_rates(self, members) or ())
        return rates or None

    def cost(self, names: Iterable[str | None], tokens: TokenCounts) -> tuple[float, bool]:
        """(USD, priced): the tokens priced with the first of `names` that has a price;
        (0.0, False) when none has."""
        rates = self.rates(names)
        if rates is None:
            return 0.0, False
        return token_cost(rates, tokens.prompt, tokens.cached, tokens.completion), True

    def usage_cost(self, names: Iterable[str | None],
                   usage: Mapping[str, Any] | None) -> tuple[float, bool]:
        """(USD, priced): `cost` of a usage object, its audio tokens at the audio rates
        where the price has them."""
        tokens = token_counts(usage)
        rates = self.rates(names)
        if rates is None:
            return 0.0, False
        if len(rates) > 3 and usage:
            return audio_cost(rates, usage, tokens.prompt, tokens.cached, tokens.completion), True
        return token_cost(rates, tokens.prompt, tokens.cached, tokens.completion), True

    def unit_cost(self, names: Iterable[str | None],
                  usage: Mapping[str, Any]) -> tuple[float, bool]:
        """(USD, priced) of a unit-billed answer (its usage from `unit_counts`'s keys);
        (0.0, False) when no name has a price for the unit (or the image's size or
        quality is not the priced one)."""
        counted = unit_counts(usage)
        if counted is None:
            return 0.0, False
        unit, count = counted
        if unit == "images" and not (_one_of(usage.get("size"), _STANDARD_IMAGE[0])
                                     and _one_of(usage.get("quality"), _STANDARD_IMAGE[1])):
            return 0.0, False
        field, per = _UNITS[unit]
        for name in names:
            price = self.lookup(name) if name else None
            rate = getattr(price, field) if price is not None else None
            if rate is not None:
                return count / per * rate, True
        return 0.0, False


    def billed_cost(self, names: Iterable[str | None], units: Mapping[str, Any],
                    tokens: Mapping[str, Any] | None) -> tuple[float, bool]:
        """(USD, priced) of unit-routed work estimated in both its measures (`units`, a
        usage of `unit_counts`' keys, and the `tokens` it may be billed): Azure bills it
        once, in one. By its tokens where the model's token rates price them above $0
        (gpt-image-1, gpt-4o-transcribe, gpt-4o-mini-tts: billed by tokens; a unit price
        given to such a model, as OpenAI's "estimated cost" a minute or a picture, is an
        estimate of that same bill, not a second one); else by its units (dall-e,
        whisper, tts: their token rates are 0)."""
        if tokens:
            usd = self.usage_cost(names, tokens)[0]
            if usd > 0:
                return usd, True
        return self.unit_cost(names, units)


def _audio_of(price: Price) -> tuple[float | None, float | None, float | None]:
    return price.audio_input, price.cached_audio_input, price.audio_output


def _rates_of(price: Price | None) -> Rates | AudioRates | tuple[()]:
    if price is None:
        return ()
    cached = price.input if price.cached_input is None else price.cached_input
    text = price.input, cached, price.output
    audio = image = None
    if (price.audio_input is not None or price.cached_audio_input is not None
            or price.audio_output is not None):
        rate = price.input if price.audio_input is None else price.audio_input
        audio = (rate, rate if price.cached_audio_input is None else price.cached_audio_input,
                 price.output if price.audio_output is None else price.audio_output,
                 "audio_tokens")
    if price.image_input is not None or price.cached_image_input is not None:
        # Image tokens in (an edit's pictures, a Realtime session's) at their rates; out,
        # the `output` rate (an image model's output is its pictures; no other model
        # answers with image tokens).
        rate = price.input if price.image_input is None else price.image_input
        image = (rate, rate if price.cached_image_input is None else price.cached_image_input,
                 price.output, "image_tokens")
    if audio is None:
        return text if image is None else (*text, *image)
    return (*text, *audio) if image is None else (*text, *audio, *image)


def _one_of(value: Any, allowed: AbstractSet[str | None]) -> bool:
    """`value in allowed` for what a client sent: a list or an object (unhashable) is
    simply not one of them, never a TypeError."""
    return (value is None or isinstance(value, str)) and value in allowed


def dearest_rates(table: PriceTable,
                  members: Iterable[Iterable[str | None]]) -> Rates | None:
    """The text rates a request to any of `members` (each a deployment's names, as
    `PriceTable.rates` takes them) may be billed at: its input, cached input and output
    rates each the dearest among them; None when any of them has no price (a balancer
    may pick it, and it would be recorded at $0), or there are none."""
    dearest: Rates | None = None
    for names in members:
        rates = table.rates(names)
        if rates is None:
            return None
        if dearest is None:
            dearest = rates[0], rates[1], rates[2]
        else:
            dearest = (max(dearest[0], rates[0]), max(dearest[1], rates[1]),
                       max(dearest[2], rates[2]))
    return dearest


def unpriced_warnings(table: PriceTable,
                      deployments: Iterable[tuple[str, str]]) -> list[str]:
    """One warning for each (model name, deployment name) the table has no price for (a
    Foundry model not shipped, a fine-tuned one...), saying what that costs and the
    `prices:` entry that prices it: keyed by the deployment's name, which prices that
    deployment alone (a pool's name would price its other members too)."""
    warnings: dict[tuple[str, str], str] = {}
    for model, deployment in deployments:
        if (model, deployment) in warnings or table.price_for((model, deployment)) is not None:
            continue
        warnings[model, deployment] = (
            f"no price for model {model} (deployment {deployment}): its requests are "
            "recorded unpriced ($0, `priced: false`) and keys with a budget are refused it; "
            f"add it under `prices:` in the config, as `{deployment}: {{input: <USD per 1M "
            "input tokens>, output: <USD per 1M output tokens>}`")
    return list(warnings.values())


# Env mode's per-name deployments named (`UnpricedNames`): their names are clients'.
_MOST_NAMED = 1024


class UnpricedNames:
    """Env mode's per-name models named once each as unpriced, in `unpriced_warnings`'
    words, as a configured deployment is named at start: a client's model name sent to
    the default endpoint becomes a deployment of that name when first seen, so no start
    can know it. Told by the ledger's pricer (its writer thread, off the request path)
    of a record with tokens and no price whose (endpoint, deployment) is not
    `configured` (those were named at start, or by the reload that added them): a name
    Azure does not serve has no tokens, so a client cannot fill the log with names.
    Per process (each worker names it once) and per pricer (a reload's new prices may
    name it again); past `_MOST_NAMED` names, no more are named."""

    __slots__ = ("_configured", "_named")

    def __init__(self, configured: Container[tuple[str, str]]) -> None:
        self._configured = configured
        self._named: set[tuple[str, str]] = set()

    def recorded(self, table: PriceTable, model: str | None, deployment: str | None,
                 endpoint: str | None) -> None:
        """A record of `model` on `deployment` had tokens and no price: named, once."""
        if (deployment is None or (endpoint or "", deployment) in self._configured
                or len(self._named) >= _MOST_NAMED):
            return
        names = (model or deployment, deployment)
        if names in self._named:
            return
        self._named.add(names)
        for warning in unpriced_warnings(table, [names]):
            log.warning("config: %s", warning)
