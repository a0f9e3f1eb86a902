"""Session 21: the gaps session 20's reviews left in the estimate of a request sent and
never answered (issue 13, "never zero, never missing"). The official `openai` SDK
through the gateway to the emulator, whose answer is held back (its `hang` fault) until
the client has left."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from azure_openai_proxy.emulator import media
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.governance.model import UsageRecord
from tests.e2e.conftest import Emulator, emulator_with
from tests.e2e.test_ledger import _virtual_key, ledger_gateway  # noqa: F401
from tests.e2e.test_s19_image_tool import GPT_4O, HEADER, IMAGE_OUT, IMAGE_TEXT_IN, _gateway, picturing
from tests.e2e.test_s19_unanswered_units import _abandon, _client, _left
from tests.e2e.test_s20_unanswered_review import _deployments, _spent
from tests.support import ServerThread, silent_wav
from tests.waiting import until


@pytest.fixture
def image_emulator() -> Iterator[Emulator]:
    """With a gpt-image-1 deployment named `pictures`."""
    yield from picturing()


def test_an_abandoned_responses_request_counts_its_image_tools_picture(
    image_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    gateway = _gateway(image_emulator, ledger_gateway)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "pics", soft_budget_usd=5.0,
                                  budget_period="daily")
    image_emulator.fault("*", "hang", count=1, seconds=3)
    tool = [{"type": "image_generation", "quality": "low", "size": "1024x1024"}]
    _abandon(lambda: _client(gateway, secret).responses.create(
        model="gpt-4o", input="draw a cat", max_output_tokens=16, tools=tool,  # type: ignore[arg-type]
        extra_headers={HEADER: "pictures"}))
    [record] = _left(gateway, "responses")
    assert (record.status, record.usage_source, record.priced) == (499, "estimated", True)
    # its text: 18 prompt tokens (3 of "draw a cat", 15 of the tool's definition read as
    # JSON) and its 16 most; its tool (as the budget's hold counts it): a low 1024x1024
    # picture (272 output tokens) from the same prompt, at gpt-image-1's rates. On main:
    # the text alone, $0.000205
    text = (18 * GPT_4O[0] + 16 * GPT_4O[1]) / 1e6
    picture = (18 * IMAGE_TEXT_IN + 272 * IMAGE_OUT) / 1e6
    assert record.cost_usd == pytest.approx(text + picture)
    assert _spent(gateway, key_id) == pytest.approx(record.cost_usd)


@pytest.fixture
def transcribing() -> Iterator[Emulator]:
    """The emulator with a gpt-4o-transcribe deployment (`transcribe`) beside its own."""
    with emulator_with(EmulatedDeployment(
            "transcribe", "gpt-4o-transcribe-2025-03-20", "transcription")) as emulator:
        yield emulator


def _abandoned_transcription(emulator: Emulator, gateway: ServerThread, database: Path,
                             prompt: str) -> UsageRecord:
    """The record of a minute's gpt-4o-transcribe transcription its client left."""
    _, secret = _virtual_key(gateway, database, "free")
    emulator.fault("transcribe", "hang", count=1, seconds=3)
    _abandon(lambda: _client(gateway, secret).audio.transcriptions.create(
        model="gpt-4o-transcribe", prompt=prompt,
        file=("minute.wav", silent_wav(60), "audio/wav")))
    [heard] = _left(gateway, "audio/transcriptions")
    assert (heard.status, heard.usage_source, heard.priced) == (499, "estimated", True)
    return heard


# a minute of audio (1,000 audio tokens at $6 per 1M) and its transcript's most (360
# tokens at $10): gpt-4o-transcribe's rates
_MINUTE = (1000 * 6.00 + 360 * 10.00) / 1e6


def test_an_abandoned_token_priced_transcription_counts_its_prompt(
    transcribing: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    gateway = ledger_gateway(transcribing, deployment_config=_deployments(
        transcribing.url, **{"gpt-4o-transcribe": "transcribe"}))
    heard = _abandoned_transcription(transcribing, gateway, tmp_path / "gw.db", "x" * 4000)
    # and its prompt's 1,000 text tokens at $2.50 (on main: not counted, $0.0096)
    assert heard.cost_usd == pytest.approx(_MINUTE + 1000 * 2.50 / 1e6)


def test_a_model_priced_by_the_minute_and_by_tokens_is_billed_once(
    transcribing: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Azure bills gpt-4o-transcribe by its tokens; a price a minute given to it too
    (OpenAI's "estimated cost", $0.006) estimates the same bill: not added to it."""
    prices = {"gpt-4o-transcribe": {"input": 2.50, "output": 10.00, "audio_input": 6.00,
                                    "per_minute": 0.006}}
    gateway = ledger_gateway(transcribing, prices=prices, deployment_config=_deployments(
        transcribing.url, **{"gpt-4o-transcribe": "transcribe"}))
    heard = _abandoned_transcription(transcribing, gateway, tmp_path / "gw.db", "")
    assert heard.cost_usd == pytest.approx(_MINUTE)  # on main: $0.0156, both summed


def test_an_abandoned_dall_e_3_request_of_two_pictures_costs_nothing(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Azure refuses dall-e-3 `n` past 1 (400), billing nothing: what it bills is $0."""
    gateway = ledger_gateway(emulator)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "soft", soft_budget_usd=5.0,
                                  budget_period="daily")
    emulator.fault("dall-e-3", "hang", count=1, seconds=3)
    _abandon(lambda: _client(gateway, secret).images.generate(
        model="dall-e-3", prompt="a lighthouse", n=2, size="1024x1024"))
    [picture] = _left(gateway, "images/generations")
    assert (picture.status, picture.usage_source, picture.priced) == (499, "estimated", True)
    assert picture.cost_usd == 0.0  # on main: $0.08, two pictures
    assert _spent(gateway, key_id) == 0.0


def test_an_abandoned_edits_prompt_counts_at_most_the_longest_prompt(
    image_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    gateway = _gateway(image_emulator, ledger_gateway)
    _, secret = _virtual_key(gateway, tmp_path / "gw.db", "free")
    image_emulator.fault("pictures", "hang", count=1, seconds=3)
    _abandon(lambda: _client(gateway, secret).images.edit(
        model="gpt-image-1", prompt="x" * 100_000, quality="low", size="1024x1024",
        image=("a.png", media.png(1024, 1024, (9, 9, 9)), "image/png")))
    [edit] = _left(gateway, "images/edits")
    assert (edit.status, edit.usage_source, edit.priced) == (499, "estimated", True)
    # its prompt at gpt-image-1's 32,000 characters at most (8,000 tokens; on main all
    # 100,000: 25,000), its input picture (194 image tokens) and a low 1024x1024 (272)
    assert edit.cost_usd == pytest.approx((8000 * IMAGE_TEXT_IN + 194 * 10.00
                                           + 272 * IMAGE_OUT) / 1e6)


@pytest.fixture
def speaking() -> Iterator[Emulator]:
    """The emulator with a gpt-4o-mini-tts deployment (`mini-tts`) beside its own."""
    with emulator_with(EmulatedDeployment(
            "mini-tts", "gpt-4o-mini-tts-2025-03-20", "speech")) as emulator:
        yield emulator


@pytest.mark.parametrize("audio_format", ["pcm", "wav", "mp3"])
def test_an_answered_token_priced_speech_is_recorded_at_an_estimate(
    speaking: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path, audio_format: str,
) -> None:
    """gpt-4o-mini-tts bills its input text and its audio out by tokens, and its answer
    is audio with no usage: recorded from its characters and its audio's length (1,250
    audio tokens a minute), flagged estimated; a hard budget's key is served it and
    spends it. On main: $0, unpriced, and a hard budget refused it (model_not_priced)."""
    gateway = ledger_gateway(speaking, deployment_config=_deployments(
        speaking.url, **{"gpt-4o-mini-tts": "mini-tts"}))
    free = _virtual_key(gateway, tmp_path / "gw.db", "free")
    hard = _virtual_key(gateway, tmp_path / "gw.db", "hard", budget_usd=5.0,
                        budget_period="daily")

    def speak(secret: str) -> None:
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
        audio = client.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy",
                                           input="hello world " * 50,
                                           response_format=audio_format)  # type: ignore[arg-type]
        assert len(audio.content) > 100_000

    speak(free[1])
    [speech] = _left(gateway, "audio/speech")
    assert (speech.status, speech.usage_source, speech.priced) == (200, "estimated", True)
    # 600 characters (150 text tokens at $0.60 per 1M); the emulator speaks 100 words in
    # 35 seconds: 730 audio tokens at $12
    assert speech.cost_usd == pytest.approx((150 * 0.60 + 730 * 12.00) / 1e6, rel=0.02)
    speak(hard[1])
    # The hold is settled as the handler ends, which may be just after the client has
    # read the last byte (a CI run under load read the hold, $0.0152, in between).
    until(lambda: _spent(gateway, hard[0]) == pytest.approx(speech.cost_usd), 10,
          f"the hard key's spend never settled at {speech.cost_usd}")
