"""A speech streamed as server-sent events (`stream_format: "sse"`, gpt-4o-mini-tts)
through the gateway to the emulator, with the official `openai` SDK and a virtual key:
what the ledger records and the budget spends (issue 13, "streams always yield usage")."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from azure_openai_proxy.emulator import media
from azure_openai_proxy.emulator.config import EmulatedDeployment
from tests.e2e.conftest import Emulator, emulator_with
from tests.e2e.test_ledger import _virtual_key, ledger_gateway  # noqa: F401
from tests.e2e.test_s19_unanswered_units import _left
from tests.e2e.test_s20_unanswered_review import _deployments, _spent
from tests.support import ServerThread

_MODEL = "gpt-4o-mini-tts-2025-03-20"
_TEXT = "hello world " * 50  # 100 words: 35 s of the emulator's speech, 730 audio tokens


@pytest.fixture
def speaking() -> Iterator[Emulator]:
    """gpt-4o-mini-tts as `mini-tts`, and as `slow-tts`, whose audio takes 4 ms a token
    to make (2,188 tokens: 8.8 s), so that a client that leaves after 45 s of it (3.8 s)
    is gone long before the end, however loaded the machine."""
    with emulator_with(EmulatedDeployment("mini-tts", _MODEL, "speech"),
                       EmulatedDeployment("slow-tts", _MODEL, "speech", token_ms=4)) as emulator:
        yield emulator


def _gateway(emulator: Emulator, start: Callable[..., ServerThread], deployment: str
             ) -> ServerThread:
    return start(emulator, deployment_config=_deployments(
        emulator.url, **{"gpt-4o-mini-tts": deployment}))


def _client(gateway: ServerThread, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0,
                         timeout=30)


def _events(body: bytes) -> list[dict[str, object]]:
    return [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: ")]


def test_a_streamed_speech_is_recorded_at_azures_usage(
    speaking: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """On main: recorded at the characters' estimate, flagged (the answer is not audio
    the gateway can size: 150 and 730 tokens estimated), never at the done event's."""
    gateway = _gateway(speaking, ledger_gateway, "mini-tts")
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "hard", budget_usd=5.0,
                                  budget_period="daily")
    answer = _client(gateway, secret).audio.speech.create(
        model="gpt-4o-mini-tts", voice="alloy", input=_TEXT, instructions="Speak slowly.",
        response_format="pcm", stream_format="sse")
    events = _events(answer.content)
    *deltas, done = events
    assert {event["type"] for event in deltas} == {"speech.audio.delta"} and len(deltas) > 1
    audio = b"".join(base64.b64decode(str(event["audio"])) for event in deltas)
    assert audio == media.speech("pcm", _TEXT)  # the audio the unstreamed answer carries
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert isinstance(usage, dict)
    # 100 words and 3 of instructions (the emulator counts words and marks: "Speak",
    # "slowly", "."), 35 s of audio
    assert usage == {"input_tokens": 103, "output_tokens": 730, "total_tokens": 833}
    [speech] = _left(gateway, "audio/speech")
    assert speech.stream and (speech.status, speech.usage_source, speech.priced) == (
        200, "measured", True)
    assert (speech.prompt_tokens, speech.completion_tokens) == (103, 730)
    # gpt-4o-mini-tts: text in at $0.60, audio out at $12 per 1M tokens
    assert speech.cost_usd == pytest.approx((103 * 0.60 + 730 * 12.00) / 1e6)
    assert _spent(gateway, key_id) == pytest.approx(speech.cost_usd)


def test_a_streamed_speech_the_client_leaves_is_estimated_from_its_audio(
    speaking: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Left after 45 s of its audio, before its done event: flagged estimated, at its
    text (600 characters: 150 tokens) and at least the audio relayed (45 s: 938 tokens),
    less than the whole (105 s: 2,188). Its characters alone say 40 s (15 a second:
    834 tokens), which is what main records it at: 300 one-letter words are read slower."""
    gateway = _gateway(speaking, ledger_gateway, "slow-tts")
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "soft", soft_budget_usd=5.0,
                                  budget_period="daily")
    heard = 0
    with _client(gateway, secret).audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice="alloy", input="a " * 300, response_format="pcm",
            stream_format="sse") as answer:
        for line in answer.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                assert event["type"] == "speech.audio.delta"
                heard += len(base64.b64decode(event["audio"]))
                if heard >= 45 * 48_000:
                    break
    [speech] = _left(gateway, "audio/speech")
    assert speech.stream and (speech.status, speech.usage_source, speech.priced) == (
        499, "estimated", True)
    audio_tokens = (speech.cost_usd * 1e6 - 150 * 0.60) / 12.00
    assert 938 - 0.01 <= audio_tokens < 2188, speech
    assert _spent(gateway, key_id) == pytest.approx(speech.cost_usd)


def test_tts_1_ignores_sse_and_answers_audio(
    speaking: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """tts-1 answers audio to `sse` (as measured against OpenAI: emulator/speech_stream.py),
    recorded by its characters; an unknown `stream_format` is Azure's 400."""
    gateway = _gateway(speaking, ledger_gateway, "mini-tts")
    _, secret = _virtual_key(gateway, tmp_path / "gw.db", "free")
    client = _client(gateway, secret)
    answer = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there.",
                                        stream_format="sse")
    assert answer.response.headers["content-type"] == "audio/mpeg"
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="Hello.",
                                   stream_format="chunks")  # type: ignore[arg-type]
    assert refused.value.body == {
        "message": "Invalid value: 'chunks'. Supported values are: 'sse' and 'audio'.",
        "type": "invalid_request_error", "param": "stream_format", "code": "invalid_value"}
    [speech] = _left(gateway, "audio/speech", 2)[:1]
    assert (speech.status, speech.usage_source, speech.cost_usd) == (
        200, "measured", pytest.approx(len("Hello there.") * 15.00 / 1e6))


def test_a_streamed_speech_azure_cuts_is_estimated(
    speaking: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Azure's connection closes after three deltas (48 KiB of pcm: 1 s), before its done
    event: the client's stream ends with an error event, and the record is the
    characters' estimate (600: 150 text tokens, 40 s: 834 audio tokens), flagged. On
    main: no usage, unpriced, $0."""
    gateway = _gateway(speaking, ledger_gateway, "mini-tts")
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "hard", budget_usd=5.0,
                                  budget_period="daily")
    speaking.fault("mini-tts", "cut", after_frames=3)
    answer = _client(gateway, secret).audio.speech.create(
        model="gpt-4o-mini-tts", voice="alloy", input=_TEXT, response_format="pcm",
        stream_format="sse")
    assert b'"speech.audio.done"' not in answer.content
    [speech] = _left(gateway, "audio/speech")
    assert speech.stream and (speech.usage_source, speech.priced) == ("estimated", True)
    assert speech.cost_usd == pytest.approx((150 * 0.60 + 834 * 12.00) / 1e6)
    assert _spent(gateway, key_id) == pytest.approx(speech.cost_usd)
