"""Pictures against a hard budget (review of session 16, pre-existing): a gpt-image-1
generation or edit was held at its prompt's few tokens (its pictures are its output
tokens, which no estimate counted: `max_output_tokens` is 0 for images), so any number
ran at once on a nearly spent budget; a dall-e-3 picture of a size or quality the table
has no price for (hd, 1792x1024) was held and recorded at $0, so a hard budget never
stopped it. Now an image request holds its pictures' output tokens (`picture_tokens`:
gpt-image-1's table, the dearest where not said), an edit's form included
(`RequestBody.held_fields`), and a hard budget refuses what it cannot price."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.gateway.budgethold import ModelNotPriced, reserve_budget
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.governance.budget import BudgetGuard, BudgetHold
from azure_openai_proxy.governance.estimate import picture_tokens
from azure_openai_proxy.governance.model import Limits, VirtualKey
from azure_openai_proxy.governance.prices import PriceTable
from tests.unit.test_spool import BOUNDARY, form, spool


def _caller(budget: float = 0.05, period: str = "daily") -> Caller:
    return Caller(None, VirtualKey("k1", "k", "hash", "sk-aop-abc",
                                   limits=Limits(budget_usd=budget, budget_period=period)))


def _guard() -> BudgetGuard:
    guard = BudgetGuard(lambda: 1000.0)
    guard.prices = PriceTable.shipped()
    return guard


def _holds(body: dict[str, Any], operation: str = "images/generations", times: int = 20
           ) -> list[float]:
    guard, caller, model = _guard(), _caller(), str(body["model"])
    held: list[float] = []
    for _ in range(times):
        try:
            hold = reserve_budget(guard, caller, body, (model, model, model), operation, 1024)
        except Exception:
            continue
        assert isinstance(hold, BudgetHold)
        held.append(hold.usd)
    return held


def test_gpt_image_pictures_are_held_at_their_output_tokens() -> None:
    body = {"model": "gpt-image-1", "prompt": "a cat", "n": 10, "size": "1024x1024",
            "quality": "high"}
    assert picture_tokens(body) == 41_600
    # 10 high pictures: ~$1.66, past the $0.05 budget: one at a time (the first is let
    # through, its hold the whole budget), never twenty together
    assert len(_holds(body)) == 1
    one_low = {"model": "gpt-image-1", "prompt": "a cat", "quality": "low",
               "size": "1024x1024"}
    held = _holds(one_low, times=10)
    # 272 output tokens at $40 / 1M a picture (and a prompt's few at $5): ~$0.011 each;
    # a hold is refused once what is held reaches the budget: the sixth
    assert len(held) == 5 and held[0] == pytest.approx(272 * 40 / 1e6, rel=0.01)


@pytest.mark.parametrize(("fields", "tokens"), [
    ({}, 6240),  # auto quality and size: the dearest
    ({"quality": "medium"}, 1584),
    ({"quality": "low", "size": "1536x1024"}, 400),
    ({"quality": "standard", "size": "1024x1024"}, 4160),  # not gpt-image-1's: high
    ({"n": 3, "quality": "low", "size": "1024x1024"}, 816),
    ({"n": 500, "quality": "low", "size": "1024x1024"}, 2720),  # Azure refuses past 10
    ({"n": "3", "quality": ["low"], "size": 7}, 62_400),  # not counts: the most
    ({"n": "+10", "quality": "low", "size": "1024x1024"}, 2720),
    ({"n": 2.0, "quality": "low", "size": "1024x1024"}, 2720),
])
def test_picture_tokens(fields: dict[str, Any], tokens: int) -> None:
    assert picture_tokens(fields) == tokens


def test_an_unpriced_picture_is_refused_to_a_hard_budget_not_to_a_soft_one() -> None:
    hd = {"model": "dall-e-3", "prompt": "a cat", "quality": "hd", "size": "1792x1024"}
    with pytest.raises(ModelNotPriced, match="size, quality"):
        reserve_budget(_guard(), _caller(), hd, ("dall-e-3",) * 3, "images/generations", 1024)
    soft = Caller(None, VirtualKey("k1", "k", "hash", "sk-aop-abc", limits=Limits(
        soft_budget_usd=1.0, budget_period="daily")))
    reserve_budget(_guard(), soft, hd, ("dall-e-3",) * 3, "images/generations", 1024)
    standard = {**hd, "quality": "standard", "size": "1024x1024"}
    held = reserve_budget(_guard(), _caller(), standard, ("dall-e-3",) * 3,
                          "images/generations", 1024)
    assert held is not None and held.usd == pytest.approx(0.04)
    # speech the table prices by tokens only: held by the tokens its characters make
    held = reserve_budget(_guard(), _caller(), {"model": "gpt-4o-mini-tts", "input": "hi"},
                          ("gpt-4o-mini-tts",) * 3, "audio/speech", 1024)
    assert held is not None and held.usd > 0
    with pytest.raises(ModelNotPriced):  # speech of a model the table does not know
        reserve_budget(_guard(), _caller(), {"model": "my-tts", "input": "hi"},
                       ("my-tts",) * 3, "audio/speech", 1024)


async def test_an_edit_forms_pictures_are_read_for_the_hold() -> None:
    data = form(("model", b"gpt-image-1", None), ("prompt", b"a hat", None),
                ("n", b"4", None), ("quality", b"medium", None),
                ("image", b"\x89PNG" + b"\0" * 100, "cat.png"))
    body = RequestBody(spool=await spool(data), boundary=BOUNDARY)
    fields = body.held_fields("images/edits")
    assert fields == {"model": "gpt-image-1", "prompt": "a hat", "n": 4, "quality": "medium"}
    assert picture_tokens(fields) == 4 * 1584
    assert body.held_fields("audio/transcriptions") == {  # its fields (a prompt is read)
        "model": "gpt-image-1", "prompt": "a hat"}
    assert body.held_fields("files") is None  # a form no budget reads
    body.close()


@pytest.mark.parametrize(("model", "asked", "served"), [
    ("whisper", "verbose_json", True), ("whisper", "json", False),
    ("whisper", None, False), ("whisper", "text", False),
    ("gpt-4o-transcribe", None, True), ("gpt-4o-transcribe", "json", True),
    ("gpt-4o-transcribe", "text", False), ("gpt-4o-transcribe", "verbose_json", False),
])
def test_a_transcription_is_served_to_a_hard_budget_in_the_format_that_prices_it(
        model: str, asked: str | None, served: bool) -> None:
    body = {"model": model} if asked is None else {"model": model, "response_format": asked}
    for operation in ("audio/transcriptions", "audio/translations"):
        if served:
            reserve_budget(_guard(), _caller(), body, (model,) * 3, operation, 1024)
        else:
            with pytest.raises(ModelNotPriced, match="response_format"):
                reserve_budget(_guard(), _caller(), body, (model,) * 3, operation, 1024)
    # a soft budget only warns: served whatever the format
    soft = Caller(None, VirtualKey("k1", "k", "hash", "sk-aop-abc", limits=Limits(
        soft_budget_usd=1.0, budget_period="daily")))
    reserve_budget(_guard(), soft, body, (model,) * 3, "audio/transcriptions", 1024)


# U+017F (a long s) upper-cases to S: .NET's OrdinalIgnoreCase binds it as `s`
@pytest.mark.parametrize("disposition", ['name="Response_Format"', 'name="re\u017fponse_format"'])
async def test_a_held_field_spelled_as_only_a_lenient_reader_reads_it_is_a_400(
        disposition: str) -> None:
    """Review of c8040ab/4859b06: Azure may bind a form's names case-insensitively,
    unquoted or `name*=` (ASP.NET); the budget read only `name="response_format"`, so a
    `text` transcription (recorded at $0) passed as `json`. Now such a spelling of a
    field the budget reads (in other letters), or the field twice, is a 400 before
    anything is held. (Unquoted or `name*=` it is read as the field: session 18,
    tests/unit/test_s18_form_parts.py.)"""
    from azure_openai_proxy.errors import MalformedBody

    data = (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
            b"gpt-4o-transcribe\r\n--" + BOUNDARY + b"\r\nContent-Disposition: form-data; "
            + disposition.encode() + b"\r\n\r\ntext\r\n--" + BOUNDARY + b"--\r\n")
    body = RequestBody(spool=await spool(data), boundary=BOUNDARY)
    try:
        with pytest.raises(MalformedBody):
            body.held_fields("audio/transcriptions")
    finally:
        body.close()
    twice = form(("n", b"1", None), ("n", b"10", None))
    body = RequestBody(spool=await spool(twice), boundary=BOUNDARY)
    try:
        with pytest.raises(MalformedBody):
            body.held_fields("images/edits")
    finally:
        body.close()


def test_a_streamed_transcription_is_refused_to_a_hard_budget() -> None:
    """Its events are not metered: its usage would be lost, its cost $0."""
    body = {"model": "gpt-4o-transcribe", "response_format": "json", "stream": "true"}
    with pytest.raises(ModelNotPriced, match="stream"):
        reserve_budget(_guard(), _caller(), body, ("gpt-4o-transcribe",) * 3,
                       "audio/transcriptions", 1024)
    reserve_budget(_guard(), _caller(), {**body, "stream": "false"},
                   ("gpt-4o-transcribe",) * 3, "audio/transcriptions", 1024)


def test_the_sdks_names_of_whisper_and_tts_are_priced() -> None:
    table = PriceTable.shipped()
    assert table.unit_cost(["whisper-1"], {"audio_seconds": 60}) == (0.006, True)
    assert table.unit_cost(["tts-1"], {"characters": 1_000_000}) == (15.0, True)
    assert table.unit_cost(["tts-1-hd"], {"characters": 1_000_000}) == (30.0, True)
