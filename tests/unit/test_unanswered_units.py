"""A unit-priced request (pictures, speech, a transcription) Azure received and never
answered is recorded with an estimate in the units its answer is priced by, flagged, for
every key: it was recorded with no usage ($0, unpriced) unless its key had a hard budget
(then at its hold). Plain data: the estimate (governance/mediatokens.py), the ledger's
pricing of it (gateway/ledgerrows.py `record_cost`, `usage_record`) and `note_unanswered`
(issue 13, "never zero, never missing")."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.gateway.ledgerrows import NO_TOKENS, record_cost, usage_record
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.spool import SpooledBody
from azure_openai_proxy.gateway.unanswered import note_unanswered
from azure_openai_proxy.governance.estimate import unanswered_usage
from azure_openai_proxy.governance.mediatokens import ESTIMATED_TOKENS, input_picture_tokens
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.observability.record import RequestRecord

PRICES = PriceTable.shipped()


def _left(route: str, model: str, usage: dict[str, Any] | None, status: int = 499
          ) -> RequestRecord:
    """A record of a request sent to `model`'s deployment whose client left."""
    record = RequestRecord("r1", "POST", route=route, model=model, deployment=model,
                           endpoint="e", status=status)
    record.sent = record.body_sent = 1
    record.usage = usage
    return record


def _cost(record: RequestRecord) -> tuple[float, bool]:
    return record_cost(record, PRICES, {}, NO_TOKENS)


def test_dall_e_pictures_are_estimated_as_their_answer_is_priced() -> None:
    body = {"model": "dall-e-3", "prompt": "a lighthouse", "n": 2, "size": "1024x1024"}
    usage = unanswered_usage(body, "images/generations", stream=False)
    assert usage is not None and usage["estimated"] is True
    assert (usage["images"], usage["size"], usage["quality"]) == (2, "1024x1024", None)
    # dall-e-3 makes one picture a request: Azure refuses `n` 2 (400), billing nothing
    assert _cost(_left("images/generations", "dall-e-3", usage)) == (0.0, True)
    usage = unanswered_usage({**body, "n": 1}, "images/generations", stream=False)
    usd, priced = _cost(_left("images/generations", "dall-e-3", usage))
    assert priced and usd == pytest.approx(0.04)  # $0.04 a standard picture


def test_an_hd_dall_e_picture_stays_unpriced_as_its_answer_would() -> None:
    body = {"prompt": "x", "quality": "hd"}
    usage = unanswered_usage(body, "images/generations", stream=False)
    assert _cost(_left("images/generations", "dall-e-3", usage)) == (0.0, False)


def test_gpt_image_pictures_are_estimated_by_their_tokens() -> None:
    body = {"prompt": "abcdefgh", "quality": "low", "size": "1024x1024"}
    usage = unanswered_usage(body, "images/generations", stream=False)
    assert usage is not None
    tokens = usage[ESTIMATED_TOKENS]
    assert (tokens["prompt_tokens"], tokens["completion_tokens"]) == (2, 272)
    usd, priced = _cost(_left("images/generations", "gpt-image-1", usage))
    # gpt-image-1: $5 text in, $40 out (its pictures) per 1M tokens
    assert priced and usd == pytest.approx((2 * 5.0 + 272 * 40.0) / 1e6)


def test_an_edit_s_input_pictures_are_priced_at_the_image_rate() -> None:
    body = {"prompt": "", "quality": "low", "size": "1024x1024"}
    usage = unanswered_usage(body, "images/edits", stream=False,
                             picture_sizes=[(1024, 1024), None])
    assert usage is not None
    pictures = input_picture_tokens((1024, 1024)) + input_picture_tokens(None)
    assert usage[ESTIMATED_TOKENS]["prompt_tokens_details"] == {"image_tokens": pictures}
    usd, priced = _cost(_left("images/edits", "gpt-image-1", usage))
    assert priced and usd == pytest.approx((pictures * 10.0 + 272 * 40.0) / 1e6)


def test_speech_is_estimated_by_its_characters() -> None:
    usage = unanswered_usage({"input": "x" * 1000, "voice": "alloy"}, "audio/speech", False)
    assert usage is not None and (usage["characters"], usage["estimated"]) == (1000, True)
    usd, priced = _cost(_left("audio/speech", "tts", usage))
    assert priced and usd == pytest.approx(1000 * 15.0 / 1e6)
    # a token-priced model's by its tokens: 250 text, 1,389 audio (1,000 characters at
    # 15 a second, 1,250 audio tokens a minute)
    usd, priced = _cost(_left("audio/speech", "gpt-4o-mini-tts", usage))
    assert priced and usd == pytest.approx((250 * 0.60 + 1389 * 12.00) / 1e6)
    assert unanswered_usage({"voice": "alloy"}, "audio/speech", False) is None


def test_a_transcription_is_estimated_by_its_seconds_and_tokens() -> None:
    usage = unanswered_usage({"response_format": "json"}, "audio/transcriptions", False,
                             audio_seconds=60.0)
    assert usage is not None and usage["audio_seconds"] == 60.0 and usage["estimated"]
    usd, priced = _cost(_left("audio/transcriptions", "whisper", usage))
    assert priced and usd == pytest.approx(0.006)  # whisper: $0.006 a minute
    # gpt-4o-transcribe: 1,000 audio tokens a minute at $6, its transcript at $10 per 1M
    usd, priced = _cost(_left("audio/translations", "gpt-4o-transcribe", usage))
    assert priced and usd == pytest.approx((1000 * 6.0 + 360 * 10.0) / 1e6)
    # its seconds not read (no file): nothing to count
    assert unanswered_usage({}, "audio/transcriptions", False) is None


def test_the_ledger_row_is_flagged_estimated_and_priced() -> None:
    usage = unanswered_usage({"prompt": "x", "n": 1}, "images/generations", stream=False)
    line = usage_record(_left("images/generations", "dall-e-3", usage), 0.0, PRICES, {})
    assert line.usage_source == "estimated" and line.priced
    assert line.cost_usd == pytest.approx(0.04)


def test_an_answered_unit_request_that_failed_still_costs_nothing() -> None:
    # Azure's error answer (a 400) carries no units and no estimate: free, as before
    assert _cost(_left("images/generations", "dall-e-3", None, status=400)) == (0.0, True)
    failed = {"images": 1, "size": None, "quality": None}
    assert _cost(_left("images/generations", "dall-e-3", failed, status=400)) == (0.0, True)


def test_note_unanswered_records_a_unit_priced_request_that_was_sent() -> None:
    body = {"prompt": "x", "size": "1024x1024"}
    sent = _left("images/generations", "dall-e-3", None)
    note_unanswered(sent, body, "images/generations")
    assert sent.usage is not None and sent.usage["images"] == 1 and sent.usage["estimated"]
    queued = _left("images/generations", "dall-e-3", None)
    queued.sent = queued.body_sent = 0  # its client left while it waited for a connection
    note_unanswered(queued, body, "images/generations")
    assert queued.usage is None


def _form(*fields: tuple[str, str]) -> RequestBody:
    """A spooled multipart form of `fields`, boundary `b`."""
    raw = b"".join(b'--b\r\nContent-Disposition: form-data; name="' + name.encode()
                   + b'"\r\n\r\n' + value.encode() + b"\r\n" for name, value in fields)
    raw += b"--b--\r\n"
    return RequestBody(spool=SpooledBody(raw, None, len(raw)), boundary=b"b")


def test_note_unanswered_reads_a_form_only_when_it_has_no_json() -> None:
    record = _left("images/variations", "dall-e-2", None)
    note_unanswered(record, None, "images/variations", form=_form(("prompt", "x"), ("n", "2")))
    assert record.usage == {"images": 2, "size": None, "quality": None, "estimated": True}


def test_an_unreadable_edit_form_is_estimated_as_the_most_it_could_ask() -> None:
    """`n` given twice (Azure may bind either): 10 pictures, the dearest, 3 partial
    pictures each, and the input pictures its bytes could carry (it was one picture)."""
    form = _form(("prompt", "a hat"), ("n", "1"), ("n", "10"), ("image", "x" * 100))
    record = _left("images/edits", "gpt-image-1", None)
    note_unanswered(record, None, "images/edits", form=form)
    usage = record.usage
    assert usage is not None and usage["images"] == 10 and usage["estimated"]
    size = form.spool.size if form.spool is not None else 0
    assert size == 328  # a picture part takes 64 bytes at least: 5 could fit
    pictures = 5 * input_picture_tokens(None, "high")
    tokens = usage[ESTIMATED_TOKENS]
    assert tokens["prompt_tokens_details"] == {"image_tokens": pictures}
    assert tokens["completion_tokens"] == 10 * 6_240 + 10 * 3 * 100
    usd, priced = _cost(_left("images/edits", "gpt-image-1", usage))
    text = -(-size // 4)
    assert priced and usd == pytest.approx(
        (text * 5.0 + pictures * 10.0 + tokens["completion_tokens"] * 40.0) / 1e6)


def test_a_chat_s_unanswered_estimate_is_unchanged() -> None:
    body = {"messages": [{"role": "user", "content": "abcd" * 10}], "max_tokens": 7}
    assert unanswered_usage(body, "chat/completions", stream=False) == {
        "prompt_tokens": 14, "completion_tokens": 7, "total_tokens": 21, "estimated": True}
