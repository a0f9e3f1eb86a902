"""gpt-image-1's pictures given to an edit cost twice its text ($10 against $5 per 1M
input tokens; cached $2.50 against $1.25): they were priced as text, an edit's input
recorded at half its cost. Priced from the usage's `input_tokens_details.image_tokens`
by the table, the ledger writer's pricer and a budget's settlement alike."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.config import ConfigError, load_settings
from azure_openai_proxy.gateway.ledger import prices_of
from azure_openai_proxy.governance.prices import PriceTable
from tests.unit.test_prices_audio import _all_three


def _usage(text: int, image: int, output: int, cached: dict[str, int] | None = None
           ) -> dict[str, Any]:
    details: dict[str, Any] = {"text_tokens": text, "image_tokens": image}
    if cached:
        details["cached_tokens"] = sum(cached.values())
        details["cached_tokens_details"] = cached
    return {"input_tokens": text + image, "input_tokens_details": details,
            "output_tokens": output, "total_tokens": text + image + output}


def test_an_edits_pictures_cost_the_image_rate() -> None:
    table = PriceTable.shipped()
    cost = _all_three(table, _usage(50, 1000, 4160), "gpt-image-1", "images/edits")
    assert cost == pytest.approx((50 * 5.0 + 1000 * 10.0 + 4160 * 40.0) / 1e6, rel=1e-12)


def test_cached_pictures_and_cached_text_each_at_their_rate() -> None:
    table = PriceTable.shipped()
    usage = _usage(100, 1000, 272, cached={"text_tokens": 40, "image_tokens": 600})
    cost = _all_three(table, usage, "gpt-image-1-2025-04-15", "images/edits")
    assert cost == pytest.approx(
        (60 * 5.0 + 40 * 1.25 + 400 * 10.0 + 600 * 2.50 + 272 * 40.0) / 1e6, rel=1e-12)


def test_a_generation_of_text_alone_is_priced_as_before() -> None:
    table = PriceTable.shipped()
    plain = {"input_tokens": 20, "output_tokens": 1056, "total_tokens": 1076,
             "input_tokens_details": {"text_tokens": 20, "image_tokens": 0}}
    assert _all_three(table, plain, "gpt-image-1", "images/generations") == pytest.approx(
        (20 * 5.0 + 1056 * 40.0) / 1e6, rel=1e-12)


def test_an_override_of_the_text_prices_keeps_the_image_rates() -> None:
    table = PriceTable.shipped({"gpt-image-1": {"input": 6.0, "output": 48.0}})
    cost = _all_three(table, _usage(10, 100, 10), "gpt-image-1", "images/edits")
    assert cost == pytest.approx((10 * 6.0 + 100 * 10.0 + 10 * 48.0) / 1e6, rel=1e-12)
    own = PriceTable.shipped({"gpt-image-1": {"input": 6.0, "output": 48.0,
                                              "image_input": 12.0}})
    cost = _all_three(own, _usage(10, 100, 10), "gpt-image-1", "images/edits")
    assert cost == pytest.approx((10 * 6.0 + 100 * 12.0 + 10 * 48.0) / 1e6, rel=1e-12)


def test_the_config_takes_image_rates() -> None:
    """Through the config (`prices:`), as the README says: before, `image_input` was an
    unknown field and the config was refused."""
    settings = load_settings({"prices": {"my-image-model": {
        "input": 2.0, "output": 8.0, "image_input": 2.5, "cached_image_input": 0.25}}}, {})
    table = prices_of(settings)
    assert table.rates(["my-image-model"]) == (2.0, 2.0, 8.0, 2.5, 0.25, 8.0, "image_tokens")
    cost = _all_three(table, _usage(10, 100, 10), "my-image-model", "images/edits")
    assert cost == pytest.approx((10 * 2.0 + 100 * 2.5 + 10 * 8.0) / 1e6, rel=1e-12)


@pytest.mark.parametrize("value", [float("inf"), -1.0])
def test_an_image_rate_must_be_finite_and_positive(value: float) -> None:
    with pytest.raises(ConfigError, match=r"prices\.m\.image_input"):
        load_settings({"prices": {"m": {"input": 1.0, "image_input": value}}}, {})
