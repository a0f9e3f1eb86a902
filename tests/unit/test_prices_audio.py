"""Audio tokens priced at the audio rates (governance/prices.py `audio_cost`), by the
table, the ledger writer's pricer and a budget's settlement (`record_cost`) alike; and
the config's prices refused when not finite."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.config import ConfigError, load_settings
from azure_openai_proxy.gateway.ledger import record_cost, usage_record
from azure_openai_proxy.governance.prices import PriceTable, count_tokens
from azure_openai_proxy.observability.record import RequestRecord

# text in, cached, out; audio in, cached audio, out (USD per 1M tokens)
_AUDIO = {"input": 2.0, "cached_input": 1.0, "output": 8.0,
          "audio_input": 40.0, "cached_audio_input": 4.0, "audio_output": 80.0}


def _record(usage: dict[str, Any], model: str = "m",
            route: str = "chat/completions") -> RequestRecord:
    return RequestRecord("req-1", "POST", route=route, model=model, deployment="dep",
                         endpoint="https://e/", status=200, total_ms=10.0, usage=usage)


def _all_three(table: PriceTable, usage: dict[str, Any], model: str = "m",
               route: str = "chat/completions") -> float:
    """The cost of a usage as the table, the writer's pricer and the settlement price
    it: all the same."""
    record = _record(usage, model, route)
    from_table, priced = table.usage_cost([model], usage)
    assert priced
    written = usage_record(record, 1_796_212_800.0, table, {})
    assert written.priced
    settled, settled_priced = record_cost(record, table, {}, count_tokens(usage))
    assert written.cost_usd == pytest.approx(from_table, abs=1e-15)
    assert settled_priced and settled == pytest.approx(from_table, abs=1e-15)
    return from_table


def test_chat_audio_in_and_out_cost_the_audio_rates() -> None:
    table = PriceTable.shipped({"m": _AUDIO})
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
             "prompt_tokens_details": {"cached_tokens": 200, "audio_tokens": 600},
             "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 300,
                                           "accepted_prediction_tokens": 0,
                                           "rejected_prediction_tokens": 0}}
    # text: 1000 - 600 audio - 200 cached = 200 fresh, 200 cached; 200 out; audio: 600 in
    # (chat says nothing of cached audio), 300 out
    expected = (200 * 2.0 + 200 * 1.0 + 200 * 8.0 + 600 * 40.0 + 300 * 80.0) / 1e6
    assert _all_three(table, usage) == pytest.approx(expected)


def test_chat_audio_with_no_other_details_and_audio_out_only() -> None:
    table = PriceTable.shipped({"m": _AUDIO})
    usage = {"prompt_tokens": 40, "completion_tokens": 900,
             "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
             "completion_tokens_details": {"audio_tokens": 880}}
    assert _all_three(table, usage) == pytest.approx((40 * 2.0 + 20 * 8.0 + 880 * 80.0) / 1e6)


def test_a_realtime_response_done_usage_costs_each_part_at_its_rate() -> None:
    """The Realtime API's usage (input_token_details, singular, with the cached tokens
    split into text and audio): the shipped gpt-4o-realtime-preview rates."""
    usage = {"total_tokens": 821, "input_tokens": 789, "output_tokens": 32,
             "input_token_details": {"text_tokens": 313, "audio_tokens": 476,
                                     "cached_tokens": 640,
                                     "cached_tokens_details": {"text_tokens": 256,
                                                               "audio_tokens": 384}},
             "output_token_details": {"text_tokens": 9, "audio_tokens": 23}}
    assert count_tokens(usage) == (789, 640, 32, 0)  # the cached tokens are read
    table = PriceTable.shipped()
    # text: 313 - 256 cached = 57 at $5, 256 at $2.50, 9 out at $20; audio: 476 - 384
    # cached = 92 at $40, 384 at $2.50, 23 out at $80
    expected = (57 * 5.0 + 256 * 2.5 + 9 * 20.0 + 92 * 40.0 + 384 * 2.5 + 23 * 80.0) / 1e6
    cost = _all_three(table, usage, "gpt-4o-realtime-preview-2024-12-17", "realtime")
    assert cost == pytest.approx(expected) == pytest.approx(0.007585)


def test_a_transcription_models_token_usage_costs_its_audio_input_rate() -> None:
    usage = {"type": "tokens", "input_tokens": 14, "output_tokens": 101, "total_tokens": 115,
             "input_token_details": {"text_tokens": 4, "audio_tokens": 10}}
    table = PriceTable.shipped()
    cost = _all_three(table, usage, "gpt-4o-transcribe", "audio/transcriptions")
    assert cost == pytest.approx((4 * 2.50 + 10 * 6.00 + 101 * 10.00) / 1e6)
    mini = _all_three(table, usage, "gpt-4o-mini-transcribe", "audio/transcriptions")
    assert mini == pytest.approx((4 * 1.25 + 10 * 3.00 + 101 * 5.00) / 1e6)


def test_a_model_without_audio_rates_prices_audio_as_text() -> None:
    table = PriceTable.shipped()
    usage = {"prompt_tokens": 1000, "completion_tokens": 100,
             "prompt_tokens_details": {"cached_tokens": 400, "audio_tokens": 500},
             "completion_tokens_details": {"audio_tokens": 50}}
    assert _all_three(table, usage, "gpt-4o") == pytest.approx(
        (600 * 2.50 + 400 * 1.25 + 100 * 10.00) / 1e6)


def test_missing_audio_rates_fall_back() -> None:
    """audio_input -> input, cached_audio_input -> audio_input, audio_output -> output."""
    table = PriceTable.shipped({"tts": {"input": 1.0, "audio_output": 10.0},
                                "ears": {"input": 1.0, "output": 2.0, "audio_input": 5.0}})
    usage = {"input_tokens": 100, "output_tokens": 100,
             "input_token_details": {"audio_tokens": 50, "cached_tokens": 20,
                                     "cached_tokens_details": {"audio_tokens": 20}},
             "output_token_details": {"audio_tokens": 60}}
    assert _all_three(table, usage, "tts") == pytest.approx(
        (50 * 1.0 + 50 * 1.0 + 40 * 0.0 + 60 * 10.0) / 1e6)
    assert _all_three(table, usage, "ears") == pytest.approx(
        (50 * 1.0 + 30 * 5.0 + 20 * 5.0 + 100 * 2.0) / 1e6)


@pytest.mark.parametrize("details", [
    {"audio_tokens": 5000, "cached_tokens": 10},  # more audio than prompt tokens
    {"audio_tokens": 10, "cached_tokens": 90,  # more cached audio than audio
     "cached_tokens_details": {"audio_tokens": 80}},
    {"audio_tokens": -10, "cached_tokens": 20, "cached_tokens_details": "x"},
    {"audio_tokens": "10", "cached_tokens": 99, "cached_tokens_details": {"audio_tokens": 2**70}},
    {"audio_tokens": 90, "cached_tokens": 95},  # cached text past the text tokens
])
def test_nonsense_details_never_make_a_part_negative(details: dict[str, Any]) -> None:
    table = PriceTable.shipped({"m": _AUDIO})
    usage = {"prompt_tokens": 100, "completion_tokens": 10,
             "prompt_tokens_details": details,
             "completion_tokens_details": {"audio_tokens": 99}}
    cost = _all_three(table, usage)
    cheapest = (100 * 1.0 + 10 * 8.0) / 1e6  # every prompt token at the cheapest rate
    dearest = (100 * 40.0 + 10 * 80.0) / 1e6
    assert cheapest <= cost <= dearest


def test_the_shipped_table_prices_the_audio_models() -> None:
    table = PriceTable.shipped()
    for model in ("gpt-4o-realtime-preview", "gpt-4o-mini-realtime-preview",
                  "gpt-4o-audio-preview", "gpt-4o-mini-audio-preview", "gpt-audio",
                  "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-mini-tts"):
        rates = table.rates([model])
        assert rates is not None and len(rates) == 7 and rates[6] == "audio_tokens", model
    assert table.rates(["gpt-4o-mini-realtime-preview"]) == (0.6, 0.3, 2.4, 10.0, 0.3, 20.0,
                                                                  "audio_tokens")


def test_config_audio_prices_override_the_table() -> None:
    settings = load_settings({"prices": {"gpt-4o-audio-preview": {
        "input": 2.75, "output": 11.0, "audio_input": 44.0, "audio_output": 88.0}}}, {})
    table = PriceTable.shipped({k: v.model_dump() for k, v in settings.prices.items()})
    assert table.rates(["gpt-4o-audio-preview"]) == (2.75, 2.75, 11.0, 44.0, 44.0, 88.0, "audio_tokens")


@pytest.mark.parametrize("field", ["input", "output", "cached_input", "audio_input",
                                   "cached_audio_input", "audio_output"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_price_that_is_not_finite_is_a_config_error_naming_it(field: str, value: float) -> None:
    prices = {"gpt-4o": {"input": 1.0, field: value}}
    with pytest.raises(ConfigError, match=rf"prices\.gpt-4o\.{field}.*finite"):
        load_settings({"prices": prices}, {})
    with pytest.raises(ValueError, match=rf"prices\.gpt-4o\.{field}.*finite"):
        PriceTable.shipped(prices)


def test_an_infinite_price_in_a_yaml_config_file_is_refused(tmp_path: Any) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("prices:\n  gpt-4o: {input: .inf, output: 1}\n")
    with pytest.raises(ConfigError, match=r"prices\.gpt-4o\.input.*finite"):
        load_settings(path, {})


@pytest.mark.parametrize("field", ["input", "audio_input", "cached_audio_input"])
def test_a_negative_price_is_a_config_error(field: str) -> None:
    with pytest.raises(ConfigError, match=rf"prices\.gpt-4o\.{field}"):
        load_settings({"prices": {"gpt-4o": {"input": 1.0, field: -0.5}}}, {})


def test_the_readme_prices_example_loads_as_printed() -> None:
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- readme-prices -->", 1)[1].split("<!-- /readme-prices -->")[0]
    text = block.split("```yaml\n", 1)[1].split("```", 1)[0]
    settings = load_settings(yaml.safe_load(text), {})
    table = PriceTable.shipped({k: v.model_dump() for k, v in settings.prices.items()})
    assert table.rates(["gpt-realtime-1.5"]) == (4.4, 0.44, 17.6, 35.2, 0.44, 70.4,
                                                 "audio_tokens", 5.5, 0.55, 17.6, "image_tokens")
    assert table.rates(["gpt-4o-audio-preview"]) == (2.75, 2.75, 11.0, 44.0, 44.0, 88.0, "audio_tokens")
    usage = {"input_tokens": 1000, "output_tokens": 100,
             "input_token_details": {"audio_tokens": 800, "cached_tokens": 500,
                                     "cached_tokens_details": {"audio_tokens": 400}},
             "output_token_details": {"audio_tokens": 90}}
    # text: 200 in (100 cached), 10 out; audio: 800 in (400 cached), 90 out
    assert _all_three(table, usage, "gpt-realtime-1.5", "realtime") == pytest.approx(
        (100 * 4.4 + 100 * 0.44 + 10 * 17.6 + 400 * 35.2 + 400 * 0.44 + 90 * 70.4) / 1e6)


def test_the_config_prices_the_units_too() -> None:
    settings = load_settings({"prices": {"gpt-4o-mini-tts": {
        "input": 0.6, "audio_output": 12.0, "per_1m_characters": 15.0}}}, {})
    table = PriceTable.shipped({k: v.model_dump() for k, v in settings.prices.items()})
    assert table.unit_cost(["gpt-4o-mini-tts"], {"characters": 1_000_000}) == (15.0, True)
    with pytest.raises(ConfigError, match=r"prices\.x\.per_minute.*finite"):
        load_settings({"prices": {"x": {"input": 0, "per_minute": float("inf")}}}, {})
