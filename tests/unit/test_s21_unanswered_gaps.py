"""Session 21: the estimate of a request sent and never answered (gateway/unanswered.py)
reads a form's fields bounded, and counts what Azure would bill."""

from __future__ import annotations

from azure_openai_proxy.gateway.answerusage import SpeechMeter
from azure_openai_proxy.gateway.formestimate import read_form
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.spool import SpooledBody
from azure_openai_proxy.gateway.unanswered import note_unanswered
from azure_openai_proxy.governance.estimate import unanswered_usage
from azure_openai_proxy.governance.mediatokens import ESTIMATED_TOKENS, picture_usage, refused_pictures
from azure_openai_proxy.observability.record import RequestRecord
from tests.unit.test_formestimate import _form


def _body(*parts: tuple[str, bytes]) -> RequestBody:
    raw = _form(*parts)
    return RequestBody(spool=SpooledBody(raw, None, len(raw)), boundary=b"b")


def test_a_forms_prompt_is_read_bounded_on_the_failure_path() -> None:
    # 4 MiB of prompt: on main read whole (a 4 MiB string, 1,048,576 tokens estimated)
    body = _body(("prompt", b"x" * (4 << 20)), ("model", b"gpt-4o-transcribe"),
                 ("response_format", b"json"))
    fields = read_form(body, "audio/transcriptions").fields
    assert fields is not None and fields["model"] == "gpt-4o-transcribe"
    assert len(fields["prompt"]) == 256 * 1024  # read up to 256 KiB


def test_a_transcriptions_prompt_is_counted_within_its_models_context() -> None:
    def prompt_tokens(prompt: str) -> int:
        usage = unanswered_usage({"prompt": prompt}, "audio/transcriptions", False,
                                 audio_seconds=60.0)
        assert usage is not None
        tokens = usage[ESTIMATED_TOKENS]
        return int(tokens["prompt_tokens"] - tokens["prompt_tokens_details"]["audio_tokens"])

    assert prompt_tokens("") == 0
    assert prompt_tokens("x" * 4000) == 1000  # on main: 0
    assert prompt_tokens("x" * 256 * 1024) == 16_000  # its 16,000-token context


def test_a_pictures_prompt_counts_at_most_the_longest_prompt() -> None:
    usage = picture_usage({"prompt": "x" * 100_000, "quality": "low", "size": "1024x1024"})
    assert usage["prompt_tokens"] == 8000  # 32,000 characters; on main 25,000


def test_dall_e_3_refuses_more_than_one_picture() -> None:
    assert refused_pictures("dall-e-3", {"images": 2})
    assert not refused_pictures("dall-e-3", {"images": 1})
    assert not refused_pictures("gpt-image-1", {"images": 2})


def test_a_speechs_tokens_are_estimated_from_its_audios_length() -> None:
    body = {"input": "x" * 600, "instructions": "y" * 40, "response_format": "pcm"}
    heard = SpeechMeter("x" * 600, body)
    # before its audio: 600 characters at 15 a second (40 s: 834 audio tokens), and the
    # text it reads, input and instructions (640 characters: 160 tokens)
    assert heard.usage["characters"] == 600
    assert (heard.usage[ESTIMATED_TOKENS]["prompt_tokens"],
            heard.usage[ESTIMATED_TOKENS]["completion_tokens"]) == (160, 834)
    for _ in range(10):
        heard.feed(bytes(48_000))  # ten seconds of 24 kHz 16-bit PCM
    heard.finish()
    assert heard.usage[ESTIMATED_TOKENS]["completion_tokens"] == 209  # 10 s: 208.3


def test_a_speech_whose_audio_says_no_length_keeps_its_characters_estimate() -> None:
    heard = SpeechMeter("x" * 600, {"input": "x" * 600, "response_format": "opus"})
    heard.feed(b"\x00" * 1000)
    heard.finish()
    assert heard.usage[ESTIMATED_TOKENS]["completion_tokens"] == 834


def test_a_responses_image_tool_without_its_deployment_is_not_billed() -> None:
    """Azure refuses the request (400: the tool names no deployment): nothing to bill.
    With the header, the tool's picture is counted beside the text."""
    body = {"model": "gpt-4o", "input": "draw a cat", "max_output_tokens": 16,
            "tools": [{"type": "image_generation", "quality": "low", "size": "1024x1024"}]}
    left = RequestRecord("r", "POST", route="responses", model="gpt-4o", status=499)
    left.sent = left.body_sent = 1
    note_unanswered(left, body, "responses", headers={})
    assert left.usage is None  # on main: its text, estimated
    note_unanswered(left, body, "responses",
                    headers={"x-ms-oai-image-generation-deployment": "pictures"})
    assert left.usage is not None
    assert left.usage["image_gen"]["output_tokens"] == 272
    assert left.usage["image_gen"]["deployment"] == "pictures"
