"""Review 2 of 37efce8..9c1482d (session 21): each test here fails on main and names the
defect it proves. Real bytes and the shipped price table, no mocks."""

from __future__ import annotations

from azure_openai_proxy.emulator import media
from azure_openai_proxy.gateway.answerusage import SpeechMeter
from azure_openai_proxy.gateway.budgethold import reserve_budget
from azure_openai_proxy.gateway.ledgerrows import record_cost
from azure_openai_proxy.gateway.unanswered import note_unanswered
from azure_openai_proxy.governance.budget import BudgetGuard, BudgetHold
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.observability.record import RequestRecord
from tests.support import silent_wav
from tests.unit.test_s18_media_holds import _caller, _transcription

_IMAGE_HEADER = {"x-ms-oai-image-generation-deployment": "gpt-image-1"}
# gpt-image-1 takes a prompt of 32,000 characters at most (past it Azure's 400:
# governance/mediatokens.py `LONGEST_PICTURE_PROMPT`): 8,000 tokens at four characters a token.
_LONGEST_PICTURE_PROMPT_TOKENS = 32_000 // 4


def _left_responses(body: dict[str, object]) -> RequestRecord:
    left = RequestRecord("r", "POST", route="responses", model="gpt-4o", status=499)
    left.sent = left.body_sent = 1
    note_unanswered(left, body, "responses", headers=_IMAGE_HEADER)
    return left


def test_an_unanswered_image_tools_prompt_is_not_the_whole_conversation() -> None:
    """04846d9 records the tool's picture prompt as the whole Responses input (the hold's
    upper bound, toolhold.py `image_tool_usage`): a 100,000-token conversation asking
    for one low picture is recorded with 100,000 gpt-image-1 text tokens ($0.50), though
    the tool's prompt (written by the text model) can be 32,000 characters at most."""
    body = {"model": "gpt-4o", "input": "x" * 400_000, "max_output_tokens": 16,
            "tools": [{"type": "image_generation", "quality": "low", "size": "1024x1024"}]}
    left = _left_responses(body)
    assert left.usage is not None
    tool = left.usage["image_gen"]
    usd, _ = record_cost(left, PriceTable.shipped(), {}, (0, 0, 0, 0))
    text_usd = 100_000 * 2.50 / 1e6 + 16 * 10.00 / 1e6  # gpt-4o's part
    most_tool_usd = _LONGEST_PICTURE_PROMPT_TOKENS * 5.00 / 1e6 + 272 * 40.00 / 1e6
    assert tool["input_tokens"] <= _LONGEST_PICTURE_PROMPT_TOKENS, (tool, usd)
    assert usd <= text_usd + most_tool_usd + 1e-9, usd


def test_an_unanswered_image_tool_is_not_recorded_at_max_tool_calls_pictures() -> None:
    """`max_tool_calls` bounds every tool call of the response (a function's, a web
    search's), not the pictures: an agent's request allowing 10 tool calls, left
    unanswered, is recorded with 10 high 1536x1024 pictures and its prompt ten times
    ($2.66 for a 2,000-token prompt), the hold's upper bound taken as the estimate, where
    `unanswered_units` keeps a best estimate for what the request says (one picture a
    call, one call unless the model makes more)."""
    body = {"model": "gpt-4o", "input": "x" * 8_000, "max_output_tokens": 16,
            "max_tool_calls": 10,
            "tools": [{"type": "function", "name": "lookup", "parameters": {}},
                      {"type": "image_generation"}]}
    left = _left_responses(body)
    assert left.usage is not None
    tool = left.usage["image_gen"]
    usd, _ = record_cost(left, PriceTable.shipped(), {}, (0, 0, 0, 0))
    one_picture = 6_240  # high 1024x1536, the dearest (no quality or size said)
    assert tool["output_tokens"] <= one_picture, (tool, usd)


async def test_a_transcriptions_hold_prices_its_audio_once() -> None:
    """cc0d778 prices a token-billed transcription once, by its tokens (a per_minute
    price given to gpt-4o-transcribe is "an estimate of that same bill, not a second
    one"; README: "priced by its tokens alone ... once, never both"), and the speech
    hold was moved to `billed_cost` to price "as the ledger prices it"; the hold of a
    transcription's file (budgethold.py `_files_cost`) still adds both: a minute held
    at $0.0156 where the ledger records $0.0096, so a hard budget with $0.012 left is
    refused (429 insufficient_quota) a minute it can pay for."""
    prices = PriceTable.shipped({"gpt-4o-transcribe": {
        "input": 2.50, "output": 10.00, "audio_input": 6.00, "per_minute": 0.006}})
    guard = BudgetGuard(lambda: 1000.0)
    guard.prices = prices
    body = await _transcription("gpt-4o-transcribe", silent_wav(60), "json")
    fields = body.held_fields("audio/transcriptions")
    held = reserve_budget(guard, _caller(10.0), fields, ("gpt-4o-transcribe",) * 3,
                          "audio/transcriptions", 1024)
    assert isinstance(held, BudgetHold)
    # the ledger's price of the same minute: 1,000 audio tokens at $6 and 360 transcript
    # tokens at $10 per 1M (governance/mediatokens.py `transcription_tokens`)
    by_tokens = 1_000 * 6.00 / 1e6 + 360 * 10.00 / 1e6
    assert held.usd < by_tokens + 0.006 - 1e-9, held.usd  # not the per_minute on top


def _speech_answer_usd(text: str, body: dict[str, object], speed: float) -> float:
    """What the ledger records for the emulator's answer to `body` (its pcm audio read
    as it passes, relay.py's `SpeechMeter`)."""
    heard = SpeechMeter(text, body)
    audio = media.speech("pcm", text, speed)
    for at in range(0, len(audio), 65_536):
        heard.feed(audio[at:at + 65_536])
    heard.finish()
    answered = RequestRecord("s", "POST", route="audio/speech", model="gpt-4o-mini-tts",
                             status=200)
    answered.usage = heard.usage
    usd, priced = record_cost(answered, PriceTable.shipped(), {}, (0, 0, 0, 0))
    assert priced
    return usd


def test_a_speechs_hold_is_not_under_what_its_answer_is_recorded_at() -> None:
    """cafa30e holds a gpt-4o-mini-tts speech at its characters read at 15 a second,
    ignoring its `speed` (0.25 to 4: the emulator's audio, and OpenAI's, is 4x longer
    at 0.25): a hard budget admits it at $0.0084 and its answer is recorded at $0.035,
    four times over the hold (README: "A budget's hold is always the upper bound")."""
    text = "word " * 100
    body = {"model": "gpt-4o-mini-tts", "input": text, "voice": "alloy",
            "response_format": "pcm", "speed": 0.25}
    guard = BudgetGuard(lambda: 1000.0)
    guard.prices = PriceTable.shipped()
    held = reserve_budget(guard, _caller(10.0), body, ("gpt-4o-mini-tts",) * 3,
                          "audio/speech", 1024)
    assert isinstance(held, BudgetHold)
    answered = _speech_answer_usd(text, body, 0.25)
    assert held.usd >= answered, (held.usd, answered)


def test_an_unanswered_speech_is_estimated_at_its_speed() -> None:
    """The unanswered estimate (mediatokens.py `speech_usage`) reads 15 characters a
    second whatever the `speed`: a speech at 0.25 left unanswered is recorded at a
    quarter of what the same speech answered is recorded at."""
    text = "word " * 100
    body = {"model": "gpt-4o-mini-tts", "input": text, "voice": "alloy",
            "response_format": "pcm", "speed": 0.25}
    left = RequestRecord("s", "POST", route="audio/speech", model="gpt-4o-mini-tts",
                         status=499)
    left.sent = left.body_sent = 1
    note_unanswered(left, body, "audio/speech")
    assert left.usage is not None and left.usage.get("estimated")
    usd, _ = record_cost(left, PriceTable.shipped(), {}, (0, 0, 0, 0))
    answered = _speech_answer_usd(text, body, 0.25)
    assert usd >= answered / 2, (usd, answered)
