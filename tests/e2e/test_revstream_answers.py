"""Review of branch advstream's upstream fixes (branch revstream): answers a raw HTTP/1.1
upstream (`h1raw.py`) gives that a client's SDK could read on main and must still read."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import pytest

from azure_openai_proxy.gateway.app import create_app
from tests.e2e.conftest import gateway_settings
from tests.e2e.h1raw import Piece, raw_upstream
from tests.e2e.pools import sdk
from tests.support import ServerThread, serve

CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
         "model": "gpt-4o-2024-08-06",
         "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
STREAM = b"data: " + json.dumps(CHUNK).encode() + b"\n\ndata: [DONE]\n\n"
RESPONSE = {"id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
            "model": "gpt-4o-2024-08-06", "output": [], "parallel_tool_calls": True,
            "tool_choice": "auto", "tools": [],
            "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}}
EVENTS = (b"event: response.completed\ndata: " + json.dumps(
    {"type": "response.completed", "sequence_number": 0, "response": RESPONSE}).encode() + b"\n\n")


def script(body: bytes) -> Sequence[Piece]:
    # A stream whose head names no content-type (closed at its end: no length either).
    stream = EVENTS if "input" in json.loads(body) else STREAM
    return [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + stream, None]


@pytest.fixture
def gateway() -> Iterator[ServerThread]:
    with raw_upstream(script) as upstream, serve(
            lambda: create_app(gateway_settings(upstream.url))) as server:
        yield server


def test_a_stream_without_its_content_type_is_relayed_as_a_stream(gateway: ServerThread) -> None:
    """Since 6059522 a chat answer without content-type was read as JSON: a streamed chat
    whose head names none was a 502 upstream_invalid_answer, where e13a4ba relayed it."""
    stream = sdk(gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True)
    texts = [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
    assert texts == ["hi"]


def test_a_responses_stream_without_its_content_type_is_relayed_as_a_stream(
        gateway: ServerThread) -> None:
    events = list(sdk(gateway).responses.create(model="gpt-4o", input="x", stream=True))
    assert [event.type for event in events] == ["response.completed"]
    assert events[0].response.usage.total_tokens == 2
