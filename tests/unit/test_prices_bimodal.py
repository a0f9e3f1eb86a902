"""A model that takes audio and pictures (gpt-realtime-1.5, gpt-realtime-2 and
gpt-realtime-2.1-mini: text, audio and image tokens in) prices each modality's part
of a usage at its own rates: before, a model had audio rates or image rates, not both,
and a Realtime session's pictures were priced as text (5.00 against 4.00 per 1M for
gpt-realtime-1.5, 0.80 against 0.60 for the mini). By the table, the ledger writer's
pricer and a budget's settlement alike (`_all_three`)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.governance.prices import PriceTable, audio_cost
from tests.unit.test_prices_audio import _all_three

_TABLE = PriceTable.shipped()


def _realtime(text: int, audio: int, image: int, out_text: int, out_audio: int,
              cached: dict[str, int] | None = None) -> dict[str, Any]:
    """A Realtime `response.done` usage (input_token_details, output_token_details)."""
    details: dict[str, Any] = {"text_tokens": text, "audio_tokens": audio,
                               "image_tokens": image}
    if cached is not None:
        details["cached_tokens"] = sum(cached.values())
        details["cached_tokens_details"] = cached
    return {"input_tokens": text + audio + image, "output_tokens": out_text + out_audio,
            "total_tokens": text + audio + image + out_text + out_audio,
            "input_token_details": details,
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio}}


def test_the_shipped_realtime_models_have_both_modalities() -> None:
    assert _TABLE.rates(["gpt-realtime-1.5"]) == (
        4.0, 0.4, 16.0, 32.0, 0.4, 64.0, "audio_tokens", 5.0, 0.5, 16.0, "image_tokens")
    assert _TABLE.rates(["gpt-realtime-2"]) == (
        4.0, 0.4, 24.0, 32.0, 0.4, 64.0, "audio_tokens", 5.0, 0.5, 24.0, "image_tokens")
    assert _TABLE.rates(["gpt-realtime-2.1"]) == (
        4.0, 0.4, 24.0, 32.0, 0.4, 64.0, "audio_tokens", 5.0, 0.5, 24.0, "image_tokens")
    assert _TABLE.rates(["gpt-realtime-2.1-mini"]) == (
        0.6, 0.06, 2.4, 10.0, 0.3, 20.0, "audio_tokens", 0.8, 0.08, 2.4, "image_tokens")
    # one modality still seven rates, as before
    assert len(_TABLE.rates(["gpt-4o-realtime-preview"]) or ()) == 7
    assert len(_TABLE.rates(["gpt-image-1"]) or ()) == 7


def test_a_sessions_text_audio_and_pictures_each_at_their_rates() -> None:
    usage = _realtime(text=300, audio=1200, image=765, out_text=40, out_audio=600)
    cost = _all_three(_TABLE, usage, "gpt-realtime-1.5", "realtime")
    assert cost == pytest.approx(
        (300 * 4.0 + 1200 * 32.0 + 765 * 5.0 + 40 * 16.0 + 600 * 64.0) / 1e6, rel=1e-12)


def test_cached_parts_split_as_given() -> None:
    usage = _realtime(text=300, audio=1200, image=765, out_text=40, out_audio=600,
                      cached={"text_tokens": 256, "audio_tokens": 1024, "image_tokens": 512})
    cost = _all_three(_TABLE, usage, "gpt-realtime-2.1-mini-2026-05-01", "realtime")
    assert cost == pytest.approx(
        (44 * 0.6 + 256 * 0.06 + 176 * 10.0 + 1024 * 0.3 + 253 * 0.8 + 512 * 0.08
         + 40 * 2.4 + 600 * 20.0) / 1e6, rel=1e-12)


def test_cached_tokens_past_the_text_not_split_are_cached_audio_first() -> None:
    """Older api-versions say how many tokens were cached, not of what: past the text
    tokens they cannot be text; they go to the audio first, then the pictures, each at
    its cached rate, never its full one."""
    usage = _realtime(text=100, audio=500, image=400, out_text=0, out_audio=0)
    usage["input_token_details"]["cached_tokens"] = 800
    cost = _all_three(_TABLE, usage, "gpt-realtime-2", "realtime")
    # 800 cached: 700 past the 100 text tokens are the audio's 500 and 200 of the
    # pictures; the text's 100 are cached text; 200 pictures fresh
    assert cost == pytest.approx(
        (100 * 0.4 + 500 * 0.4 + 200 * 0.5 + 200 * 5.0) / 1e6, rel=1e-12)


def test_details_that_overstate_are_clamped_never_negative() -> None:
    usage = {"input_tokens": 100, "output_tokens": 10,
             "input_token_details": {"audio_tokens": 90, "image_tokens": 90,
                                     "cached_tokens": 100,
                                     "cached_tokens_details": {"audio_tokens": 500,
                                                               "image_tokens": 500}},
             "output_token_details": {"audio_tokens": 50}}
    cost = _all_three(_TABLE, usage, "gpt-realtime-1.5", "realtime")
    # audio 90 (all cached), pictures the 10 left (all cached), no text; out: 10 audio
    assert cost == pytest.approx((90 * 0.4 + 10 * 0.5 + 10 * 64.0) / 1e6, rel=1e-12)


_COUNT = st.integers(min_value=0, max_value=10_000)
_SAID = st.one_of(st.none(), st.integers(min_value=-5, max_value=20_000), st.text(max_size=2))


@settings(max_examples=300, deadline=None)
@given(prompt=_COUNT, completion=_COUNT, cached=_COUNT, audio=_SAID, image=_SAID,
       cached_audio=_SAID, cached_image=_SAID, out_audio=_SAID)
def test_never_less_than_all_at_the_cheapest_rate_nor_more_than_the_dearest(
        prompt: int, completion: int, cached: int, audio: Any, image: Any,
        cached_audio: Any, cached_image: Any, out_audio: Any) -> None:
    """Whatever the details say, every token is priced once: the cost lies between all
    of them at the cheapest rate and all at the dearest."""
    rates = _TABLE.rates(["gpt-realtime-1.5"])
    assert rates is not None and len(rates) == 11
    cached = min(cached, prompt)  # count_tokens' clamp
    usage = {"input_tokens": prompt, "output_tokens": completion,
             "input_token_details": {"audio_tokens": audio, "image_tokens": image,
                                     "cached_tokens": cached,
                                     "cached_tokens_details": {"audio_tokens": cached_audio,
                                                               "image_tokens": cached_image}},
             "output_token_details": {"audio_tokens": out_audio}}
    cost = audio_cost(rates, usage, prompt, cached, completion)
    tokens = prompt + completion
    assert tokens * 0.4 / 1e6 - 1e-12 <= cost <= tokens * 64.0 / 1e6 + 1e-12
    # cached tokens are never priced above a cached rate: all of them cached, the input
    # costs at most the dearest cached rate
    if cached == prompt:
        assert cost <= (prompt * 0.5 + completion * 64.0) / 1e6 + 1e-12
