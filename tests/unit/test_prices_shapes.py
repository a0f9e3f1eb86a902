"""The three places that price a usage (`PriceTable.usage_cost`, the ledger writer's
`RowPricer` through `usage_record`, and a budget's settlement `record_cost`) agree for
every usage shape, hostile ones included, and never price a token below the cheapest
rate or above the dearest (review of the audio prices, issue 13)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.gateway.ledger import record_cost, usage_record
from azure_openai_proxy.governance.prices import MAX_TOKENS, PriceTable, count_tokens
from azure_openai_proxy.observability.record import RequestRecord

_AUDIO = {"input": 2.0, "cached_input": 1.0, "output": 8.0,
          "audio_input": 40.0, "cached_audio_input": 4.0, "audio_output": 80.0}
_TABLE = PriceTable.shipped({"m": _AUDIO, "t": {"input": 3.0, "cached_input": 0.5,
                                                "output": 12.0}})

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 3000),
                    st.integers(2**31, 2**80), st.floats(allow_nan=True),
                    st.text(max_size=3), st.just([]), st.just({}))
_COUNT = st.one_of(st.integers(0, 3000), _VALUES)
_CACHED_PARTS = st.one_of(_VALUES, st.fixed_dictionaries(
    {}, optional={"audio_tokens": _COUNT, "text_tokens": _COUNT, "image_tokens": _COUNT}))
_IN = st.one_of(_VALUES, st.fixed_dictionaries({}, optional={
    "cached_tokens": _COUNT, "audio_tokens": _COUNT, "text_tokens": _COUNT,
    "image_tokens": _COUNT, "cached_tokens_details": _CACHED_PARTS}))
_OUT = st.one_of(_VALUES, st.fixed_dictionaries({}, optional={
    "reasoning_tokens": _COUNT, "audio_tokens": _COUNT, "text_tokens": _COUNT,
    "accepted_prediction_tokens": _COUNT}))
_USAGE = st.fixed_dictionaries({}, optional={
    "prompt_tokens": _COUNT, "input_tokens": _COUNT, "completion_tokens": _COUNT,
    "output_tokens": _COUNT, "total_tokens": _COUNT, "estimated": st.booleans(),
    "prompt_tokens_details": _IN, "input_tokens_details": _IN, "input_token_details": _IN,
    "completion_tokens_details": _OUT, "output_tokens_details": _OUT,
    "output_token_details": _OUT})


def _three(usage: dict[str, Any], model: str) -> tuple[float, float, float]:
    record = RequestRecord("req-1", "POST", route="chat/completions", model=model,
                           deployment="dep", endpoint="https://e/", status=200,
                           total_ms=10.0, usage=usage)
    from_table, priced = _TABLE.usage_cost([model], usage)
    written = usage_record(record, 1_796_212_800.0, _TABLE, {})
    settled, settled_priced = record_cost(record, _TABLE, {}, count_tokens(usage))
    prompt, _, completion, reasoning = count_tokens(usage)
    if prompt or completion or reasoning:
        assert priced and written.priced and settled_priced
    return from_table, written.cost_usd, settled


@settings(max_examples=400, deadline=None)
@given(usage=_USAGE, model=st.sampled_from(["m", "t"]))
def test_the_three_pricers_agree_and_stay_in_bounds(usage: dict[str, Any], model: str) -> None:
    from_table, written, settled = _three(usage, model)
    assert from_table == written == settled  # the same arithmetic, to the bit
    prompt, cached, completion, _ = count_tokens(usage)
    assert 0 <= cached <= prompt <= MAX_TOKENS and 0 <= completion <= MAX_TOKENS
    rates = [1.0, 40.0] if model == "m" else [0.5, 3.0]
    outs = [8.0, 80.0] if model == "m" else [12.0, 12.0]
    assert math.isfinite(from_table)
    low = (prompt * rates[0] + completion * outs[0]) / 1e6
    high = (prompt * rates[1] + completion * outs[1]) / 1e6
    assert low * (1 - 1e-12) <= from_table <= high * (1 + 1e-12)


def test_a_realtime_usage_without_the_cached_split_prices_cached_audio_as_cached() -> None:
    """Cached tokens past the text tokens can only be audio: with no
    `cached_tokens_details` (Azure's older Realtime api-versions send none), they cost
    the cached audio rate, not the full audio rate."""
    usage = {"input_tokens": 1000, "output_tokens": 0,
             "input_token_details": {"text_tokens": 200, "audio_tokens": 800,
                                     "cached_tokens": 900}}
    # at most 200 of the 900 cached are text, so at least 700 are cached audio
    expected = (200 * 1.0 + 700 * 4.0 + 100 * 40.0) / 1e6
    for cost in _three(usage, "m"):
        assert cost == pytest.approx(expected)


def test_an_override_of_a_shipped_audio_models_text_prices_keeps_its_audio_rates() -> None:
    """A config giving gpt-4o-realtime-preview its Data Zone text prices (README: "over
    the shipped table") priced its audio at them: $5.50 per 1M audio tokens for $40."""
    table = PriceTable.shipped({"gpt-4o-realtime-preview": {
        "input": 5.5, "cached_input": 2.75, "output": 22.0}})
    assert table.rates(["gpt-4o-realtime-preview"]) == (5.5, 2.75, 22.0, 40.0, 2.5, 80.0, "audio_tokens")
    usage = {"input_tokens": 1000, "output_tokens": 100,
             "input_token_details": {"audio_tokens": 1000},
             "output_token_details": {"audio_tokens": 100}}
    assert table.usage_cost(["gpt-4o-realtime-preview"], usage) == pytest.approx(
        ((1000 * 40.0 + 100 * 80.0) / 1e6, True))
    # audio rates given in the override are its own; a model not shipped has none
    table = PriceTable.shipped({"gpt-4o-realtime-preview": {"input": 5.5, "audio_input": 44},
                                "gpt-4o": {"input": 2.75, "output": 11.0}})
    assert table.rates(["gpt-4o-realtime-preview"]) == (5.5, 5.5, 0.0, 44.0, 44.0, 0.0, "audio_tokens")
    assert table.rates(["gpt-4o"]) == (2.75, 2.75, 11.0)
    # as the ledger builds it from the config (gateway/ledger.py: model_dump, None unset)
    settings = load_settings({"prices": {"gpt-4o-realtime-preview": {
        "input": 5.5, "cached_input": 2.75, "output": 22.0}}}, {})
    table = PriceTable.shipped({k: v.model_dump() for k, v in settings.prices.items()})
    assert table.rates(["gpt-4o-realtime-preview"]) == (5.5, 2.75, 22.0, 40.0, 2.5, 80.0, "audio_tokens")
