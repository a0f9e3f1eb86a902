"""Review of the streamed speech's metering (branch ssespeech): a streamed speech
whose Azure answer is scripted byte for byte by a small real upstream on loopback (the
emulator always ends its events with a blank line), through the gateway's ledger."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import openai
import pytest
from aiohttp import web

from tests.e2e.conftest import CLIENT_KEY
from tests.e2e.test_ledger import ledger_gateway, sdk  # noqa: F401
from tests.e2e.test_s19_unanswered_units import _left
from tests.e2e.test_s20_unanswered_review import _deployments
from tests.support import ServerThread, serve

_DELTA = b'data: {"type":"speech.audio.delta","audio":"AAAAAAAA"}\n\n'
_DONE = (b'data: {"type":"speech.audio.done","usage":'
         b'{"input_tokens":3,"output_tokens":40,"total_tokens":43}}')


class _ScriptedSpeech:
    """Answers every speech with `script`, as text/event-stream, then closes its body."""

    script = b""
    pieces: tuple[int, ...] = ()  # where to cut the script into separate writes

    def app(self) -> web.Application:
        async def speech(request: web.Request) -> web.StreamResponse:
            await request.read()
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            cuts = [0, *self.pieces, len(self.script)]
            for start, end in itertools.pairwise(cuts):
                await response.write(self.script[start:end])
                await asyncio.sleep(0.005)  # each its own read, most likely
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_post("/openai/deployments/{dep}/audio/speech", speech)
        return app


@pytest.fixture
def upstream() -> Iterator[tuple[_ScriptedSpeech, ServerThread]]:
    scripted = _ScriptedSpeech()
    with serve(scripted.app) as server:
        yield scripted, server


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n"])
def test_a_done_event_that_ends_the_body_without_a_blank_line_is_measured(
    upstream: tuple[_ScriptedSpeech, ServerThread],
    ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    ending: bytes,
) -> None:
    """The last event of a stream needs no blank line after it (the relay adds a newline
    for chatgpt-web for the same reason, relay.py `_relay_stream`): its usage is Azure's.
    On ssespeech: the meter's decoder is never flushed, so the done event is lost and
    the speech recorded at the characters' estimate, flagged."""
    scripted, server = upstream
    scripted.script = _DELTA + _DONE + ending
    gateway = ledger_gateway(SimpleNamespace(url=server.url), deployment_config=_deployments(
        server.url, **{"gpt-4o-mini-tts": "mini-tts"}))
    answer = sdk(gateway).audio.speech.create(
        model="gpt-4o-mini-tts", voice="alloy", input="Hello there.", stream_format="sse")
    assert b'"speech.audio.done"' in answer.content  # the client got it
    [speech] = _left(gateway, "audio/speech")
    assert (speech.usage_source, speech.prompt_tokens, speech.completion_tokens) == (
        "measured", 3, 40), speech


def test_native_path_speech_stream_is_measured(
    upstream: tuple[_ScriptedSpeech, ServerThread],
    ledger_gateway: Callable[..., ServerThread],  # noqa: F811
) -> None:
    """Azure's own path (/openai/deployments/{d}/audio/speech, AzureOpenAI clients) is
    metered as /v1's is (passes on ssespeech: a check, not a finding)."""
    scripted, server = upstream
    scripted.script = _DELTA + _DONE + b"\n\n"
    gateway = ledger_gateway(SimpleNamespace(url=server.url), deployment_config=_deployments(
        server.url, **{"gpt-4o-mini-tts": "mini-tts"}))
    client = openai.AzureOpenAI(azure_endpoint=gateway.url, api_key="unused",
                                api_version="2025-04-01-preview", max_retries=0, timeout=30,
                                default_headers={"Authorization": "Bearer " + CLIENT_KEY})
    answer = client.audio.speech.create(
        model="gpt-4o-mini-tts", voice="alloy", input="Hello there.", stream_format="sse")
    assert b'"speech.audio.done"' in answer.content
    [speech] = _left(gateway, "audio/speech")
    assert (speech.usage_source, speech.prompt_tokens, speech.completion_tokens) == (
        "measured", 3, 40), speech



@pytest.mark.parametrize("usage", [
    b'{"input_tokens":3,"output_tokens":40}',  # no total
    b'{"input_tokens":3,"output_tokens":40,"total_tokens":43,'
    b'"input_tokens_details":{"text_tokens":3,"audio_tokens":0}}',
    b'{"input_tokens":3,"output_tokens":40,"total_tokens":"43"}',
])
def test_a_done_usage_in_other_shapes_is_priced_as_text_in_and_audio_out(
    upstream: tuple[_ScriptedSpeech, ServerThread],
    ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    usage: bytes,
) -> None:
    """gpt-4o-mini-tts: text in at $0.60, audio out at $12 per 1M tokens, measured,
    whatever else the usage carries (passes on ssespeech: a check, not a finding)."""
    scripted, server = upstream
    scripted.script = (_DELTA * 2 + b'data: {"type":"speech.audio.done","usage":' + usage
                       + b"}\n\n" + _DELTA + _DONE + b"\n\n")  # a second done: ignored
    gateway = ledger_gateway(SimpleNamespace(url=server.url), deployment_config=_deployments(
        server.url, **{"gpt-4o-mini-tts": "mini-tts"}))
    sdk(gateway).audio.speech.create(
        model="gpt-4o-mini-tts", voice="alloy", input="Hello there.", stream_format="sse")
    [speech] = _left(gateway, "audio/speech")
    assert (speech.usage_source, speech.prompt_tokens, speech.completion_tokens) == (
        "measured", 3, 40), speech
    assert speech.cost_usd == pytest.approx((3 * 0.60 + 40 * 12.00) / 1e6)


def test_odd_bytes_from_upstream_reach_the_client_unchanged_and_the_done_is_measured(
    upstream: tuple[_ScriptedSpeech, ServerThread],
    ledger_gateway: Callable[..., ServerThread],  # noqa: F811
) -> None:
    """CRLF events, invalid base64, non-JSON, an event line, `[DONE]`, events after the
    done event, all cut mid-line: the client gets Azure's bytes as they were and the
    record is the done event's (passes on ssespeech: a check, not a finding)."""
    scripted, server = upstream
    scripted.script = (
        b'data: {"type":"speech.audio.delta","audio":"AAAA"}\r\n\r\n'
        b'data: {"type":"speech.audio.delta","audio":"not base64!"}\n\n'
        b"data: {not json\n\n: a comment\n\nevent: speech.audio.delta\n"
        b'data: {"type":"speech.audio.delta",\ndata: "audio":"AAAA"}\n\n'
        + _DONE.replace(b"\n", b"") + b"\r\n\r\n"
        + _DELTA + b'data: {"type":"speech.audio.done","usage":{"input_tokens":9,'
        b'"output_tokens":9}}\n\ndata: [DONE]\n\n')
    scripted.pieces = (3, 40, 41, 97, 150, 151, 200, 260, 300)
    gateway = ledger_gateway(SimpleNamespace(url=server.url), deployment_config=_deployments(
        server.url, **{"gpt-4o-mini-tts": "mini-tts"}))
    answer = sdk(gateway).audio.speech.create(
        model="gpt-4o-mini-tts", voice="alloy", input="Hello there.", stream_format="sse")
    assert answer.content == scripted.script
    [speech] = _left(gateway, "audio/speech")
    assert (speech.status, speech.usage_source, speech.prompt_tokens,
            speech.completion_tokens) == (200, "measured", 3, 40), speech
