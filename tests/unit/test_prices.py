from __future__ import annotations

import pytest

from azure_openai_proxy.config import ConfigError, load_settings
from azure_openai_proxy.governance.prices import Price, PriceTable, TokenCounts, token_counts


def test_token_counts_read_chat_and_responses_usage() -> None:
    chat = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
            "prompt_tokens_details": {"cached_tokens": 40},
            "completion_tokens_details": {"reasoning_tokens": 30}}
    assert token_counts(chat) == TokenCounts(100, 40, 50, 30)
    responses = {"input_tokens": 10, "output_tokens": 20,
                 "input_tokens_details": {"cached_tokens": 5},
                 "output_tokens_details": {"reasoning_tokens": 7}}
    assert token_counts(responses) == TokenCounts(10, 5, 20, 7)
    assert token_counts(None) == TokenCounts(0, 0, 0, 0)
    # nonsense from upstream never becomes a negative or a non-int count
    assert token_counts({"prompt_tokens": -3, "completion_tokens": "9",
                         "prompt_tokens_details": {"cached_tokens": 99}}) == TokenCounts(0, 0, 0, 0)


def test_cached_tokens_cost_the_cached_rate_and_reasoning_is_output() -> None:
    table = PriceTable({"m": Price(input=2.0, output=8.0, cached_input=0.5)})
    tokens = TokenCounts(prompt=1_000_000, cached=400_000, completion=100_000, reasoning=60_000)
    cost, priced = table.cost(["m"], tokens)
    # 600k fresh at $2, 400k cached at $0.50, 100k out (reasoning included) at $8
    assert priced and cost == pytest.approx(1.2 + 0.2 + 0.8)


def test_no_cache_price_means_cached_tokens_cost_the_input_rate() -> None:
    table = PriceTable({"m": Price(input=1.0, output=1.0)})
    assert table.cost(["m"], TokenCounts(1_000_000, 500_000, 0, 0))[0] == pytest.approx(1.0)


@pytest.mark.parametrize(("names", "model"), [
    (["gpt-4o-2024-08-06"], "gpt-4o"),
    (["GPT-4o"], "gpt-4o"),
    (["gpt-4-0613"], "gpt-4"),
    (["my-alias", "gpt-4o-mini", "my-deployment"], "gpt-4o-mini"),  # the deployment's model
    ([None, "o3-mini"], "o3-mini"),
])
def test_model_names_match_the_table(names: list[str | None], model: str) -> None:
    table = PriceTable.shipped()
    assert table.price_for(names) == table.price_for([model]) is not None


def test_an_unknown_model_costs_nothing_and_says_so() -> None:
    assert PriceTable.shipped().cost(["my-own-model"], TokenCounts(10, 0, 10, 0)) == (0.0, False)


def test_the_shipped_table_has_the_azure_models() -> None:
    table = PriceTable.shipped()
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o1",
                  "o3", "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini", "gpt-5-nano",
                  "text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002",
                  "gpt-35-turbo"):
        assert table.price_for([model]) is not None, model
    assert table.price_for(["gpt-4o"]) == Price(2.50, 10.00, 1.25)


def test_config_prices_override_and_extend_the_table() -> None:
    settings = load_settings({"prices": {"gpt-4o": {"input": 1, "output": 2},
                                         "my-model": {"input": 3, "cached_input": 1, "output": 4}}}, {})
    table = PriceTable.shipped({k: v.model_dump() for k, v in settings.prices.items()})
    assert table.price_for(["gpt-4o"]) == Price(1.0, 2.0, None)
    assert table.price_for(["my-model"]) == Price(3.0, 4.0, 1.0)
    assert table.price_for(["gpt-4o-mini"]) == Price(0.15, 0.60, 0.075)


@pytest.mark.parametrize("prices", [
    {"gpt-4o": {"input": -1}}, {"gpt-4o": {"input": "cheap"}}, {"gpt-4o": {"inptu": 1}},
    {"gpt-4o": 3},
])
def test_a_bad_price_is_a_config_error(prices: object) -> None:
    with pytest.raises(ConfigError, match="prices"):
        load_settings({"prices": prices}, {})


def test_unit_prices_are_read_and_applied() -> None:
    table = PriceTable.shipped({"my-tts": {"input": 0, "output": 0, "per_1m_characters": 20}})
    assert table.unit_cost(["my-tts"], {"characters": 500_000}) == (10.0, True)
    assert table.unit_cost(["whisper"], {"audio_seconds": 30}) == (0.003, True)
    assert table.unit_cost(["dall-e-3"], {"images": 2, "size": None}) == (0.08, True)
    assert table.unit_cost(["dall-e-3"], {"images": 2, "size": "1792x1024"}) == (0.0, False)
    assert table.unit_cost(["gpt-4o"], {"images": 1}) == (0.0, False)  # no image price
    assert table.unit_cost(["dall-e-3"], {}) == (0.0, False)


def test_an_image_size_or_quality_that_is_not_a_string_is_unpriced_not_an_error() -> None:
    """A client's `size: ["1024x1024"]` reached a set membership test (TypeError: a 500
    for a budgeted key); it is simply not the priced size."""
    table = PriceTable.shipped({})
    assert table.unit_cost(("dall-e-3",), {"images": 1, "size": ["1024x1024"]}) == (0.0, False)
    assert table.unit_cost(("dall-e-3",), {"images": 1, "quality": {"x": 1}}) == (0.0, False)


def test_token_details_of_any_shape_are_read_or_ignored_never_raised() -> None:
    """No details (None: embeddings, older api-versions), empty, not an object, or an
    object of a dict subclass: the counts are read where there are any, never an error."""
    from collections import OrderedDict

    from azure_openai_proxy.governance.prices import count_tokens

    base = {"prompt_tokens": 10, "completion_tokens": 4}
    shapes: list[object] = [None, {}, 0, "", [], "x", [1]]
    for details in shapes:
        usage = {**base, "prompt_tokens_details": details, "completion_tokens_details": details}
        assert count_tokens(usage) == (10, 0, 4, 0)
    usage = {**base, "prompt_tokens_details": OrderedDict(cached_tokens=3),
             "completion_tokens_details": OrderedDict(reasoning_tokens=2)}
    assert count_tokens(usage) == (10, 3, 4, 2)
    usage = {"input_tokens": 10, "output_tokens": 4, "prompt_tokens_details": None,
             "input_tokens_details": {"cached_tokens": 12}}
    assert count_tokens(usage) == (10, 10, 4, 0)
